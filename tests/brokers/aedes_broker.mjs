// An aedes MQTT broker (MQTT 3.1.1, in-memory persistence) on 127.0.0.1:<port>, for the interoperability
// tests: `node aedes_broker.mjs PORT`. Prints "listening PORT" once it accepts connections; stops on SIGTERM.
import { createServer } from 'node:net'
import { Aedes } from 'aedes'

const port = Number(process.argv[2])
const broker = await Aedes.createBroker()
const server = createServer(broker.handle)
server.listen(port, '127.0.0.1', () => console.log(`listening ${port}`))
process.on('SIGTERM', () => { server.close(); broker.close(() => process.exit(0)) })
