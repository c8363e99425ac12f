"""The one entry point, ``smartpark``. Each command lives beside the code it runs; this package, above every
part, assembles them.

A command module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a callable
``(args, settings) -> int``. Exit codes (CONTRACT §6): 0 success, 2 bad usage or configuration with a
one-line reason on stderr, 1 other failure. ``python -m cli`` is the same command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, cast

import alerts.cli
import alerts.userscli
import collector.cli
import dashboards.cli
import demo
import devstack
import hj212.cli
import reports.cli
import rollups.cli
import simulators.cli
from smartpark import parkcli
from smartpark.config import Settings, add_common_args
from smartpark.errors import ConfigError, UsageError

# each part's register, in the order of `smartpark --help`; adding a command touches this one list.
# simulators.cli registers simulate, record and replay; alerts.cli alerts; alerts.userscli users.
REGISTERS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    parkcli.register,
    devstack.register,
    collector.cli.register,
    alerts.cli.register,
    simulators.cli.register,
    dashboards.cli.register,
    demo.register,
    alerts.userscli.register,
    hj212.cli.register,
    rollups.cli.register,
    reports.cli.register,
)


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line, as every other usage error does."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="smartpark", description="Monitoring service of a chemical industrial park.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    add_common_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for register in REGISTERS:
        # every parser it adds is a _Parser; the parts only use ArgumentParser's interface
        register(cast("argparse._SubParsersAction[argparse.ArgumentParser]", sub))
    # let every subcommand accept the common options after its name too
    for choice in sub.choices.values():
        _add_common_recursive(choice)
    return parser


def _add_common_recursive(parser: argparse.ArgumentParser) -> None:
    if not any(a.dest == "mqtt_url" for a in parser._actions):
        add_common_args(parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_common_recursive(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.resolve(args)
        return int(args.func(args, settings) or 0)
    except (ConfigError, UsageError) as exc:
        sys.stderr.write(f"smartpark: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


def run() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    run()
