"""``smartpark collect``: run the collector until SIGINT or SIGTERM, then flush and exit 0 (CONTRACT §6)."""

from __future__ import annotations

import argparse
import asyncio
import signal

from smartpark.config import Settings
from smartpark.errors import ConfigError, UsageError
from smartpark.park import load_park
from smartpark.schema import DEAD_LETTER
from smartpark.topics import SUBSCRIPTION, share_subscription

from .service import Collector


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("collect", help="MQTT readings -> InfluxDB, durable (spool) and acked after writing",
                              description=f"Subscribe to {SUBSCRIPTION} (QoS 1, persistent session) and write every "
                              f"reading to InfluxDB; invalid messages go to {DEAD_LETTER}.")
    p.add_argument("--share-group", metavar="G", help=f"subscribe through {share_subscription('G')} to split the load "
                   "with other collectors (give each a distinct --instance)")
    p.add_argument("--instance", default="default", help="name of this collector: MQTT client id "
                   "smartpark-collector-NAME (persistent session), status topic and spool directory "
                   "[default: default]")
    p.add_argument("--metrics-port", type=int, default=0, metavar="P",
                   help="serve Prometheus /metrics on 127.0.0.1:P [default: 0 = off]")
    p.add_argument("--batch-size", type=int, default=5000, metavar="N", help="readings per write [5000]")
    p.add_argument("--flush-interval", type=float, default=1.0, metavar="S",
                   help="longest a reading waits before it is written, seconds [1.0]")
    p.add_argument("--spool-max-mb", type=float, default=256, metavar="M",
                   help="disk spool bound; when full the collector stops acking and the broker holds the "
                   "rest [256]")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch_size < 1 or args.flush_interval <= 0 or args.spool_max_mb <= 0:
        raise UsageError("--batch-size, --flush-interval and --spool-max-mb must be positive")
    park = load_park(settings.park)  # configuration checked before any I/O
    collector = Collector(settings, park, instance=args.instance, share_group=args.share_group,
                          batch_size=args.batch_size, flush_interval=args.flush_interval,
                          spool_max_mb=args.spool_max_mb, metrics_port=args.metrics_port)
    try:
        asyncio.run(_main(collector))
    except BaseExceptionGroup as group:  # a task refused to go on: a broker that cannot serve this setting
        config = group.subgroup(ConfigError)
        if config is None:
            raise
        raise _first(config) from None
    return 0


def _first(group: BaseExceptionGroup[ConfigError]) -> ConfigError:
    exc = group.exceptions[0]
    return _first(exc) if isinstance(exc, BaseExceptionGroup) else exc


async def _main(collector: Collector) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await collector.run(stop)
