"""The local development stack: Mosquitto and InfluxDB 1.x from the system binaries on 127.0.0.1
(``smartpark stack``), and the helpers the tests, benchmarks and the demo start their services with.

Imported on demand, since they load the parts they drive: ``devstack.load`` (load for the collector: a park
of many sensors, a QoS 1 publisher, the collector in a thread), ``devstack.brokers`` (MQTT brokers other than
Mosquitto) and ``devstack.epochs`` (reading timestamps inside the raw retention)."""

from .stack import (
    DEFAULT_INFLUX_PORT,
    DEFAULT_MQTT_PORT,
    HOST,
    INFLUXDB_CONF,
    MOSQUITTO_CONF,
    PERSISTENCE,
    SMARTPARK,
    Persistence,
    Service,
    Stack,
    StackError,
    find_binary,
    free_port,
    influx_answers,
    mqtt_answers,
    pid_alive,
    port_in_use,
    register,
)

__all__ = [
    "DEFAULT_INFLUX_PORT",
    "DEFAULT_MQTT_PORT",
    "HOST",
    "INFLUXDB_CONF",
    "MOSQUITTO_CONF",
    "PERSISTENCE",
    "SMARTPARK",
    "Persistence",
    "Service",
    "Stack",
    "StackError",
    "find_binary",
    "free_port",
    "influx_answers",
    "mqtt_answers",
    "pid_alive",
    "port_in_use",
    "register",
]
