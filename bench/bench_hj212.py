"""Benchmarks of the HJ 212 input (docs/benchmarks/hj212.md).

    .venv/bin/python bench/bench_hj212.py [--loggers 5000] [--cycles 2] [--period 30] [--skip-load] [--skip-cpu]
                                          [--server-tree DIR ...] [--client protocol|streams ...]
                                          [--py-spy FILE] [--py-spy-rate HZ] [--perf FILE] [--stack-core 1]
                                          [--bursts N] [--burst-gap SECONDS] [--floor] [--callsums]

(1) CPU, one core: real-time packets (2011, the bundled CEMS logger's nine codes) through frame -> parse ->
validate -> points, per packet and per reading, against the MQTT path for the same readings in the same run
(``smartpark.decode.Decoder.lines`` of one snapshot message per packet, and of nine single-reading messages).

(2) Load: ``smartpark hj212 serve`` as a process pinned to one core (``taskset -c 0``, RLIMIT_NOFILE raised)
with a real Mosquitto and InfluxDB; ``--loggers`` connections from this process (the other core), each
sending a 2011 packet every ``--period`` seconds at its own phase for ``--cycles`` periods, then a burst
where all send at once (``--bursts N``: N of them, each ``--burst-gap`` s after the one before was acked, so
that one run shows how often a burst meets the target). Reported: the ack latency (send -> 9014 received)
p50/p99/max per phase, the server's CPU per burst, and that every packet is stored (points in InfluxDB =
packets x codes). ``--floor`` first measures the same load against a server that only answers (the sockets'
cost on this machine, to compare machines and runs by).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]  # this tree before an installed one (bench/ itself is the script's own path)

from collector_ceilings import count_points  # noqa: E402

from devstack import Stack, free_port  # noqa: E402
from hj212.decode import LoggerMap, PacketDecoder  # noqa: E402
from hj212.frame import SPEEDUPS, CommonPacket, FrameReader, common_packet, common_packet_py, frame  # noqa: E402
from hj212.packet import parse  # noqa: E402
from hj212.simulate import realtime_packet  # noqa: E402
from smartpark.decode import Decoder  # noqa: E402
from smartpark.park import load_park, parse_park  # noqa: E402
from smartpark.topics import reading_topic, snapshot_topic  # noqa: E402

TZ = ZoneInfo("Asia/Shanghai")
CODES = {"a21026": "so2", "a21002": "nox", "a19001": "o2"}


def best(fn: Callable[[], None], n: int, repeat: int = 5) -> float:
    """Best CPU seconds per item over ``repeat`` runs (process time: the other core's load does not count)."""
    out = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        out.append((time.process_time() - t) / n)
    return min(out)


def cpu(n: int) -> None:
    park = load_park()
    loggers = LoggerMap(park)
    logger = loggers.get("32058300HW01CEMS00000001")
    assert logger is not None
    dec = PacketDecoder(park)
    mqtt = Decoder(park)
    rnd = random.Random(1)
    t0 = 1_764_201_600_000
    packets, snaps, singles = [], [], []
    for i in range(n):
        values = {code: round(rnd.uniform(*ref.sensor.normal), 3) for code, (ref, _) in logger.codes.items()}
        ts = t0 + i * 1000
        packets.append(realtime_packet(logger, ts, values, TZ))
        by_sensor = {logger.codes[c][0].sensor.id: v for c, v in values.items()}
        snaps.append((snapshot_topic("hw_center", "stack_cems"), b'{"ts": %d, "values": {%s}}' % (
            ts, ", ".join(f'"{k}": {v!r}' for k, v in by_sensor.items()).encode())))
        singles += [(reading_topic("hw_center", "stack_cems", k), b'{"value": %r, "ts": %d}' % (v, ts))
                    for k, v in by_sensor.items()]
    per_packet = len(logger.codes)
    stream = b"".join(packets)

    def hj212_path() -> None:
        reader = FrameReader()
        lines = 0
        for f in reader.feed(stream):
            p = parse(f.segment, cp_plain=False)  # type: ignore[union-attr]  # the stream holds only good frames
            lg = loggers.get(p.mn)
            assert lg is not None
            lines += len(dec.decode(p, lg, f.raw).lines)
        assert lines == n * per_packet, lines

    def hj212_fast(first: Callable[[bytes], CommonPacket | None]) -> Callable[[], None]:
        """What the listener does with a read holding one packet (hj212.service._Connection.data_received):
        ``first`` (hj212.frame.common_packet: the C extension, or its Python reference), then the fast path of
        real-time data (Listener._realtime), which every packet of this stream takes."""
        def run() -> None:
            lines = 0
            for data in packets:
                head = first(data)
                assert head is not None
                lg = loggers.get(head[4])
                assert lg is not None
                fast = dec.realtime_fast(lg, head[6], t0)
                assert fast is not None
                lines += len(fast[0])
            assert lines == n * per_packet, lines
        return run

    def mqtt_snapshot() -> None:
        assert sum(len(mqtt.lines(t, p, 0)[0]) for t, p in snaps) == n * per_packet

    def mqtt_singles() -> None:
        assert sum(len(mqtt.lines(t, p, 0)[0]) for t, p in singles) == n * per_packet

    a = best(hj212_path, n)
    f = best(hj212_fast(common_packet), n) if SPEEDUPS else float("nan")
    fp = best(hj212_fast(common_packet_py), n)
    b = best(mqtt_snapshot, n)
    c = best(mqtt_singles, n)
    print(f"CPU, one core, {n:,} packets of {per_packet} readings (best of 5, process time):")
    print(f"  hj212 frame->parse->validate->points: {1 / a:10,.0f} packets/s  {per_packet / a:10,.0f} readings/s"
          f"  ({a * 1e6:.1f} us/packet; the general path)")
    print(f"  hj212 the listener's fast path, C   : {1 / f:10,.0f} packets/s  {per_packet / f:10,.0f} readings/s"
          f"  ({f * 1e6:.1f} us/packet) -> {a / f:.2f} x the general path, {b / f:.2f} x an MQTT snapshot, "
          f"{fp / f:.2f} x the fast path in Python" if SPEEDUPS else
          "  hj212 the listener's fast path, C   : hj212._speedups is not built")
    print(f"  hj212 the fast path, Python first step: {1 / fp:8,.0f} packets/s  {per_packet / fp:10,.0f} readings/s"
          f"  ({fp * 1e6:.1f} us/packet) -> {a / fp:.2f} x the general path, {b / fp:.2f} x an MQTT snapshot")
    print(f"  MQTT snapshot (Decoder.lines)       : {1 / b:10,.0f} messages/s {per_packet / b:10,.0f} readings/s"
          f"  -> hj212 = {b / a:.2f} x")
    print(f"  MQTT single readings (Decoder.lines): {per_packet / c:10,.0f} readings/s"
          f"                         -> hj212 = {c / a:.2f} x")


def load_park_yaml(n: int) -> str:
    lines = ["park: {id: bench, name: HJ 212 bench park, timezone: Asia/Shanghai}", "sites:", "  - id: plant",
             "    name: Plant", "    assets:"]
    for i in range(n):
        lines += [f"      - id: s{i:05d}", f"        name: Stack {i}",
                  f'        hj212: [{{mn: "BENCH{i:019d}", pw: "123456", '
                  f'codes: {{a21026: so2, a21002: nox, a19001: o2}}}}]',
                  "        sensors:"]
        for sid in ("so2", "nox", "o2"):
            lines.append(f"          - {{id: {sid}, name: {sid}, unit: mg/m3, range: [0, 1000], normal: [1, 100], "
                         "interval_s: 30}")
    return "\n".join(lines) + "\n"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the client when it is installed (the server's default too), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def py_spy_exe() -> str:
    """py-spy beside this Python (``pip install py-spy`` in the venv), else on PATH; exits when neither."""
    exe = Path(sys.executable).with_name("py-spy")
    found = str(exe) if exe.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--py-spy: py-spy is not installed (pip install py-spy)")
    return found


def py_spy(pid: int, out: Path, seconds: float, rate: int = 250) -> subprocess.Popen[bytes]:
    """Sample the server's Python stacks for ``seconds`` (py-spy, collapsed-stack text with native frames
    of extensions left out): where the burst's time goes, without cProfile's per-call overhead."""
    return subprocess.Popen([py_spy_exe(), "record", "-p", str(pid),
                             "-d", str(max(1, round(seconds))),
                             "-r", str(rate), "--format", "raw", "-o", str(out),
                             "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_record(pid: int, out: Path, seconds: float, rate: int = 250) -> subprocess.Popen[bytes]:
    """Sample the server for ``seconds`` with Linux perf (``perf record -g``, cpu-clock): where the burst's time
    goes by shared object (the interpreter, uvloop, libc, the kernel's TCP), which py-spy does not see.
    ``perf report -i FILE --sort dso`` reads it."""
    exe = shutil.which("perf")
    if exe is None:
        raise SystemExit("--perf: perf is not installed (Debian linux-perf)")
    return subprocess.Popen([exe, "record", "-g", "-F", str(rate), "-p", str(pid), "-o", str(out), "--",
                             "sleep", f"{seconds:g}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class _Logger(asyncio.Protocol):
    """One logger of the protocol client: its send time, and the moment its 9014 is read, taken first thing in
    ``data_received`` (before any parsing: the client's own work is not the server's latency)."""

    def __init__(self, lat: dict[str, list[float]], done: Callable[[str], None]) -> None:
        self.lat, self.done = lat, done
        self.transport: asyncio.Transport | None = None
        self.kind: str | None = None  # the phase of the packet waiting for its 9014
        self.sent = 0.0
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def send(self, kind: str, data: bytes) -> None:
        assert self.transport is not None
        if self.kind is not None:  # the previous packet got no 9014 yet: counted missing at the end
            return
        self.kind, self.sent = kind, time.monotonic()
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buf = (self.buf + data)[-4096:]
        if self.kind is not None and b"CN=9014" in self.buf:  # a whole 9014 ends with CRLF; its CN is enough
            kind = self.kind
            self.lat[kind].append(now - self.sent)
            self.kind, self.buf = None, b""
            self.done(kind)


async def drive(port: int, n: int, cycles: int, period: float, park_yaml: str,
                on_burst: Callable[[], object] | None = None,
                mark: Callable[[str], object] | None = None, bursts: int = 1,
                gap: float = 10.0) -> dict[str, list[float]]:
    """The protocol client: packets built before they are due, a protocol per logger, each packet timed from
    its write to the read that holds its 9014. A burst is one callback writing all loggers' packets in a
    loop (about 5 us each), which is as close to "all at once" as one process gets; with ``bursts`` > 1 each
    next burst comes ``gap`` seconds after the last 9014 of the one before (phases "burst 1", "burst 2" ...)."""
    park = parse_park(park_yaml)
    loggers = list(LoggerMap(park).by_mn.values())
    kinds = ["burst"] if bursts == 1 else [f"burst {j + 1}" for j in range(bursts)]
    lat: dict[str, list[float]] = {"steady": [], **{k: [] for k in kinds}}
    loop = asyncio.get_running_loop()
    t0_ms = (int(time.time()) - 3600) * 1000
    packets = [[realtime_packet(lg, t0_ms + k * 30_000, {c: 10.0 + k for c in CODES}, TZ)
                for k in range(cycles + bursts)] for lg in loggers[:n]]
    finished = loop.create_future()
    acked = {k: 0 for k in lat}
    cpu: list[float] = []

    def done(kind: str) -> None:
        acked[kind] += 1
        if kind == "steady" or acked[kind] != n:
            return
        if mark is not None:
            mark(f"{kind} acked")
        j = kinds.index(kind) + 1
        if j < len(kinds):
            loop.call_later(gap, burst, j)
        elif not finished.done():
            finished.set_result(None)

    conns: list[_Logger] = []
    for i in range(0, n, 500):  # open in waves (the listen backlog)
        made = await asyncio.gather(*(loop.create_connection(lambda: _Logger(lat, done), "127.0.0.1", port)
                                      for _ in range(min(500, n - i))))
        conns += [proto for _t, proto in made]
    print(f"  {len(conns):,} connections open (protocol client, {type(loop).__module__} loop)")
    start = loop.time()
    for i, conn in enumerate(conns):
        phase = random.Random(i).uniform(0, period)
        for k in range(cycles):
            loop.call_at(start + phase + k * period, conn.send, "steady", packets[i][k])
    burst_at = start + cycles * period + 2.0

    def burst(j: int) -> None:
        kind = kinds[j]
        if mark is not None:
            mark(kind)
        t = time.process_time()
        for conn, pk in zip(conns, packets, strict=True):
            conn.send(kind, pk[cycles + j])
        cpu.append(time.process_time() - t)

    if on_burst is not None:
        loop.call_at(burst_at - 0.2, on_burst)
    loop.call_at(burst_at, burst, 0)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished, burst_at + 60 * bursts + gap * (bursts - 1) - loop.time())
    missing = n * (cycles + bursts) - sum(acked.values())
    if cpu:
        print(f"  each burst written in {max(cpu) * 1000:.0f} ms of client CPU or less")
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    print(f"  packets without a 9014 within 60 s: {missing}")
    return lat


async def drive_streams(port: int, n: int, cycles: int, period: float, park_yaml: str,
                        on_burst: Callable[[], object] | None = None) -> dict[str, list[float]]:
    """The first client (``--client streams``), kept to compare with: a coroutine per logger on asyncio
    streams, each building its packet when due and parsing what it reads. In the burst all 5,000 build and
    write before any reads an answer, so its latencies include the client's own queue (docs/benchmarks/hj212.md
    §5)."""
    park = parse_park(park_yaml)
    loggers = list(LoggerMap(park).by_mn.values())
    lat: dict[str, list[float]] = {"steady": [], "burst": []}
    missing: list[str] = []
    conns = []
    for i in range(0, n, 500):  # open in waves (the listen backlog)
        conns += await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(min(500, n - i))))
    print(f"  {len(conns):,} connections open")
    t0_ms = (int(time.time()) - 3600) * 1000

    async def logger(i: int) -> None:
        reader, writer = conns[i]
        lg = loggers[i]
        frames = FrameReader()
        phase = random.Random(i).uniform(0, period)
        start = time.monotonic()
        plan = [("steady", start + phase + k * period) for k in range(cycles)]
        plan.append(("burst", start + cycles * period + 2.0))
        for k, (kind, at) in enumerate(plan):
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            ts = t0_ms + k * 30_000
            data = realtime_packet(lg, ts, {c: 10.0 + k for c in CODES}, TZ)
            sent = time.monotonic()
            writer.write(data)
            got = False
            try:
                async with asyncio.timeout(60):
                    while not got:
                        chunk = await reader.read(4096)
                        if not chunk:
                            raise ConnectionError("server closed")
                        got = any(not isinstance(f, Exception) and b"CN=9014" in f.segment
                                  for f in frames.feed(chunk))
            except (TimeoutError, ConnectionError):
                missing.append(lg.mn)
                continue
            lat[kind].append(time.monotonic() - sent)
        writer.close()

    async def burst_starts() -> None:
        await asyncio.sleep(max(0.0, cycles * period + 2.0 - 0.2))
        if on_burst is not None:
            on_burst()

    await asyncio.gather(burst_starts(), *(logger(i) for i in range(len(conns))))
    print(f"  packets without a 9014 within 60 s: {len(missing)}")
    return lat


# The server of a tree given by --server-tree: the command line is cli/ since the core imports nothing above it,
# smartpark/cli.py before. Trees from before the alias bound grew with the file's size (smartpark.park) took the
# generated park (5,000 assets, ~350,000 YAML nodes) for an alias bomb: the bound is raised for them.
SERVE = ("import sys, smartpark.park as p; p.MAX_NODES = 10**7; sys.argv[0] = 'smartpark'\n"
         "try:\n    from cli import run\nexcept ImportError:\n    from smartpark.cli import run\nrun()")


# The floor (--floor): the same client against a server that only reads each packet and writes a fixed 9014
# (uvloop, one core, no parsing, storing or feed), measured in the same run: what the machine's sockets alone
# cost, so that runs on machines of different speed can be compared as ratios to it.
FLOOR = """
import asyncio, sys, uvloop
ACK = bytes.fromhex(sys.argv[2])
class Answer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(ACK)
async def main():
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await server.serve_forever()
with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    runner.run(main())
"""
CALLSUMS = Path(__file__).resolve().parent / "callsums"  # --callsums: its sitecustomize on the server's path
FLOOR_ACK = frame(b"QN=20260101000000000;ST=91;CN=9014;PW=123456;MN=FLOOR;Flag=4;CP=&&&&")


def load(n: int, cycles: int, period: float, tree: Path | None = ROOT, profile: Path | None = None,
         client: str = "protocol", spy_rate: int = 250, sampler: Callable[..., subprocess.Popen[bytes]] = py_spy,
         stack_core: int | None = None, bursts: int = 1, gap: float = 10.0, callsums: bool = False) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < n + 200:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {n + 200}")
    with tempfile.TemporaryDirectory(prefix="bench-hj212-") as tmp:
        stack = Stack(Path(tmp) / "stack", mqtt_port=free_port(), influx_port=free_port())
        stack.up()
        if stack_core is not None:  # every thread of Mosquitto and InfluxDB, off the server's core
            for pid in stack.pids():
                subprocess.run(["taskset", "-a", "-p", "-c", str(stack_core), str(pid)], check=True,
                               stdout=subprocess.DEVNULL)
            print(f"stack (Mosquitto, InfluxDB) pinned to core {stack_core}")
        try:
            park_file = Path(tmp) / "park.yaml"
            park_file.write_text(load_park_yaml(n))
            port = free_port()
            env = {**os.environ, "SMARTPARK_MQTT_URL": stack.mqtt_url, "SMARTPARK_INFLUX_URL": stack.influx_url,
                   "SMARTPARK_INFLUX_DB": "bench_hj212", "SMARTPARK_STATE_DIR": str(Path(tmp) / "state"),
                   "SMARTPARK_PARK": str(park_file), "SMARTPARK_HJ212_LISTEN": f"127.0.0.1:{port}",
                   "PYTHONPATH": os.pathsep.join([*([str(CALLSUMS)] if callsums and tree else []),
                                                  str(tree or ROOT)])}
            print(f"server: {tree or 'the floor (read, write a fixed 9014)'}; client: {client}")
            command = ["hj212", "serve"] if tree is not None else [str(port), FLOOR_ACK.hex()]
            serve = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", SERVE if tree is not None else FLOOR,
                                      *command], env=env, cwd=tree or ROOT,
                                     preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
            try:
                run_load(serve, stack, port, n, cycles, period, profile, client, spy_rate, sampler, bursts, gap,
                         stores=tree is not None)
            finally:
                if serve.poll() is None:
                    serve.kill()
                    serve.wait(30)
        finally:
            stack.down()


def run_load(serve: subprocess.Popen[bytes], stack: Stack, port: int, n: int, cycles: int, period: float,
             profile: Path | None = None, client: str = "protocol", spy_rate: int = 250,
             sampler: Callable[..., subprocess.Popen[bytes]] = py_spy, bursts: int = 1,
             gap: float = 10.0, stores: bool = True) -> None:
    """Wait for the server, drive the loggers, then report latencies, CPU and what was stored."""
    os.sched_setaffinity(0, {1})
    deadline = time.monotonic() + 300  # loading a park of 5,000 assets is slow on a busy machine
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit("hj212 serve did not come up") from None
            time.sleep(0.2)
    print(f"load: {n:,} loggers, a packet every {period:g} s for {cycles} periods, then a burst; "
          "server on core 0, loggers on core 1")
    started = time.monotonic()
    cpu0 = cpu_seconds(serve.pid)
    spy: list[subprocess.Popen[bytes]] = []
    # seconds recorded: perf's files grow fast, and a longer window takes in the connections' close after the
    # burst (a fifth of the samples of a 1 s window)
    window = 0.6 if sampler is perf_record else 4
    burst = (lambda: spy.append(sampler(serve.pid, profile, window, spy_rate))) if profile is not None else None
    marks: dict[str, float] = {}

    def mark(what: str) -> None:  # the server's CPU at the burst's first write and at its last 9014
        marks[what] = cpu_seconds(serve.pid)

    if client == "streams":
        lat = asyncio.run(drive_streams(port, n, cycles, period, load_park_yaml(n), burst))
    else:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            lat = runner.run(drive(port, n, cycles, period, load_park_yaml(n), burst, mark, bursts, gap))
    for p in spy:
        p.wait(60)
        print(f"  {'py-spy' if sampler is py_spy else 'perf'} of the burst: {profile}")
    took = time.monotonic() - started
    cpu1 = cpu_seconds(serve.pid)
    serve.terminate()
    serve.wait(60)
    stored = count_points(stack.influx_url, "bench_hj212") if stores else 0  # every reading point has a value
    packets = sum(len(v) for v in lat.values())
    for kind, xs in lat.items():
        print(f"  {kind:6s}: {len(xs):6,} packets acked  p50 {statistics.median(xs) * 1000:7.1f} ms  "
              f"p99 {pct(xs, 0.99) * 1000:7.1f} ms  max {max(xs) * 1000:7.1f} ms")
    every = [x for xs in lat.values() for x in xs]
    print(f"  all    : p99 {pct(every, 0.99) * 1000:.1f} ms over {took:.0f} s")
    print(f"  server CPU: {cpu1 - cpu0:.1f} s for {packets:,} packets = {(cpu1 - cpu0) / packets * 1e6:.0f} us "
          f"per packet (connections, parse, validate, write, feed, 9014); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for kind in lat:
        if f"{kind} acked" in marks:
            burst_cpu = marks[f"{kind} acked"] - marks[kind]
            print(f"  server CPU in {kind} (first write to last 9014): {burst_cpu:.2f} s = "
                  f"{burst_cpu / max(1, len(lat[kind])) * 1e6:.0f} us per packet")
    p99s = [pct(xs, 0.99) for kind, xs in lat.items() if kind.startswith("burst ") and xs]
    if p99s:
        print(f"  bursts : p99 of each {' '.join(f'{x * 1000:.0f}' for x in p99s)} ms; median "
              f"{statistics.median(p99s) * 1000:.1f}, worst {max(p99s) * 1000:.1f} ms; "
              f"{sum(x <= 0.2 for x in p99s)} of {len(p99s)} within 200 ms")
    if stores:
        print(f"  stored : {stored:,} reading points for {packets:,} packets x {len(CODES)} codes = "
              f"{packets * len(CODES):,}  -> "
              f"{'every packet stored' if stored == packets * len(CODES) else 'MISSING'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loggers", type=int, default=5000)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--period", type=float, default=30.0)
    ap.add_argument("--packets", type=int, default=20_000, help="packets for the CPU benchmark")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--server-tree", type=Path, action="append", default=[], metavar="DIR",
                    help="run the load part's server from this checkout (repeatable: one load run each, in order, "
                    "to compare commits in one run) [default: this one]")
    ap.add_argument("--client", choices=("protocol", "streams"), action="append", default=[],
                    help="the load client: protocol (default) or streams (the first one, whose own queue in the burst "
                    "is part of what it measures); repeatable: one load run per client and tree")
    ap.add_argument("--py-spy-rate", type=int, default=250, metavar="HZ",
                    help="py-spy's (or perf's) samples per second")
    ap.add_argument("--py-spy", type=Path, metavar="FILE",
                    help="sample the server during the burst with py-spy (collapsed stacks; FILE.N per tree)")
    ap.add_argument("--stack-core", type=int, metavar="CORE",
                    help="pin Mosquitto and InfluxDB (all their threads) to this core [default: not pinned, the "
                    "scheduler may put them on the server's]")
    ap.add_argument("--perf", type=Path, metavar="FILE",
                    help="instead of py-spy, record the server during the burst with perf record -g (FILE.N per tree;"
                    " perf report -i FILE.N --sort dso)")
    ap.add_argument("--bursts", type=int, default=1, metavar="N",
                    help="bursts after the steady periods, each --burst-gap seconds after the last 9014 of the one "
                    "before, each reported on its own (protocol client only)")
    ap.add_argument("--burst-gap", type=float, default=10.0, metavar="SECONDS")
    ap.add_argument("--floor", action="store_true",
                    help="one more load run first, against a server that only reads and writes a fixed 9014 "
                    "(the machine's sockets alone: compare trees and machines as ratios to it)")
    ap.add_argument("--callsums", action="store_true",
                    help="the server prints, every second, the CPU and calls of the functions a packet goes through "
                    "(bench/callsums/sitecustomize.py; about 1 us a call more)")
    args = ap.parse_args()
    if args.bursts < 1 or (args.bursts > 1 and "streams" in args.client):
        ap.error("--bursts: 1 or more, and more than 1 only with the protocol client")
    profile_file = args.perf or args.py_spy  # perf's record or py-spy's stacks, FILE.N per tree
    if args.perf is None and args.py_spy is not None:
        py_spy_exe()  # before any service starts
    if not args.skip_cpu:
        os.sched_setaffinity(0, {1})
        cpu(args.packets)
    if not args.skip_load:
        trees: list[Path | None] = [*([None] if args.floor else []), *(args.server_tree or [ROOT])]
        runs = [(tree, client) for tree in trees for client in args.client or ["protocol"]]
        for i, (tree, client) in enumerate(runs):
            profile = profile_file.with_name(f"{profile_file.name}.{i}") if profile_file else None
            load(args.loggers, args.cycles, args.period, tree.resolve() if tree else None, profile, client,
                 args.py_spy_rate, perf_record if args.perf is not None else py_spy, args.stack_core, args.bursts,
                 args.burst_gap, args.callsums)


if __name__ == "__main__":
    main()
