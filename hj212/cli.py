"""``smartpark hj212 serve | simulate`` (CONTRACT §6, §7)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import signal
import sys
from collections.abc import Callable

from smartpark.config import Settings, parse_host_port
from smartpark.errors import UsageError
from smartpark.park import load_park

LOOPS = ("uvloop", "asyncio")


def default_loop() -> str:
    """uvloop when it can be imported, else asyncio's own loop."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory of ``--loop`` (None: asyncio's default); a missing uvloop is a usage error."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        raise UsageError(f"--loop uvloop: uvloop is not installed ({exc})") from None
    return uvloop.new_event_loop


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("hj212", help="HJ 212 data loggers (CEMS, outfall analysers) over TCP",
                              description=__doc__)
    sub = p.add_subparsers(dest="hj212_command", metavar="COMMAND", required=True)
    s = sub.add_parser("serve", help="take data-logger connections on --hj212-listen until SIGINT/SIGTERM",
                       description="Store real-time, minute, hour and day data of the park's loggers in "
                       "InfluxDB (spooled when it is away), feed real-time readings to the alarm engine over "
                       "MQTT, and acknowledge (9014) only what is durable.")
    s.add_argument("--idle-timeout", type=float, default=600.0, metavar="S",
                   help="close a connection silent for S seconds [600]")
    s.add_argument("--no-engine-feed", action="store_true",
                   help="do not publish real-time readings to MQTT for the alarm engine")
    s.add_argument("--metrics-port", type=int, default=0, metavar="P",
                   help="serve Prometheus /metrics on 127.0.0.1:P [default: 0 = off]")
    s.add_argument("--flush-interval", type=float, default=0.05, metavar="S",
                   help="longest a packet waits before its batch is written, seconds [0.05]: a logger waits "
                   "for its 9014")
    s.add_argument("--spool-max-mb", type=float, default=256, metavar="M", help="disk spool bound [256]")
    s.add_argument("--loop", choices=LOOPS, default=default_loop(),
                   help=f"event loop: uvloop (libuv; docs/benchmarks/hj212.md §2, §10) or "
                   f"asyncio's own [{default_loop()}: uvloop when it is installed]")
    s.set_defaults(func=_serve)

    m = sub.add_parser("simulate", help="drive the park's loggers from the simulators against a platform")
    m.add_argument("--target", metavar="HOST:PORT", help="the platform [default: --hj212-listen]")
    m.add_argument("--scenario", metavar="NAME|PATH", help="a shipped scenario or a YAML file")
    m.add_argument("--speed", type=float, default=1.0, help="1 real time, 60 a minute per second, 0 no pacing")
    m.add_argument("--duration", help="how long to simulate (90s, 15m, 2h); default: the scenario, or forever")
    m.add_argument("--seed", type=int, default=0, help="same seed, same readings")
    m.set_defaults(func=_simulate)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from .service import Hj212Collector

    if args.idle_timeout <= 0 or args.flush_interval <= 0 or args.spool_max_mb <= 0:
        raise UsageError("--idle-timeout, --flush-interval and --spool-max-mb must be positive")
    factory = loop_factory(args.loop)
    park = load_park(settings.park)  # configuration checked before any I/O
    service = Hj212Collector(settings, park, engine_feed=not args.no_engine_feed, idle_timeout=args.idle_timeout,
                             flush_interval=args.flush_interval, spool_max_mb=args.spool_max_mb,
                             metrics_port=args.metrics_port)
    # the park model and the service's tables live as long as the process: keep them out of the cyclic
    # collector's full passes, which otherwise stall every connection for as long as the model is large
    gc.collect()
    gc.freeze()
    # a burst of 5,000 packets allocates some million short-lived containers: at the default threshold (700)
    # the young generation is collected thousands of times, promoting the packets in flight each time, and
    # that was a tenth of the burst's CPU (bench/bench_hj212.py; docs/benchmarks/hj212.md §5)
    gc.set_threshold(100_000, 20, 10)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    except (OSError, BaseExceptionGroup) as exc:  # the address is taken, or not ours (raised in a task group)
        found = exc.subgroup(OSError) if isinstance(exc, BaseExceptionGroup) else exc
        if found is None:
            raise
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        sys.stderr.write(f"smartpark: hj212 serve: cannot listen on {settings.hj212_listen}: {found}\n")
        return 1
    return 0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from simulators.cli import _run, parse_duration
    from simulators.scenario import load_scenario
    from simulators.simulator import Simulator

    from .simulate import drive, logger_messages

    host, port = parse_host_port(args.target, "target") if args.target else settings.hj212_address()
    if args.speed < 0:
        raise UsageError("--speed must be >= 0")
    park = load_park(settings.park)
    scn = load_scenario(args.scenario, park) if args.scenario else None
    duration = parse_duration(args.duration) if args.duration else None
    sim = Simulator(park, scn, seed=args.seed, sites=[s.id for s in park.sites])
    stop = asyncio.Event()
    result = _run(drive(logger_messages(park, sim, duration), host, port, speed=args.speed, stop=stop), stop)
    if result is not None:
        print(f"sent {result.sent} packets, {result.acked} acknowledged (9014)", file=sys.stderr)
    return 0
