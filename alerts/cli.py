"""``smartpark alerts run | list | ack | shelve | unshelve | out-of-service | in-service | report``.

``run`` is the engine (until SIGINT/SIGTERM, then exit 0); the operator commands call its HTTP API at
``--api-url`` with the bearer token (``--api-token`` or ``<state dir>/api-token``); a refused command
(unknown alarm, shelving without a reason) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from smartpark.config import Settings
from smartpark.errors import ConfigError, UsageError
from smartpark.park import load_park
from smartpark.schema import ALARM
from smartpark.timing import parse_duration


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("alerts", help="ISA-18.2 alarm engine and operator commands")
    s = p.add_subparsers(dest="alerts_cmd", metavar="ACTION")
    s.required = True
    run = s.add_parser("run", help="evaluate and notify until SIGINT/SIGTERM")
    run.add_argument("--webhook", action="append", default=[], help="POST each alarm event (JSON) here")
    run.add_argument("--notify", action="append", default=[], help="apprise URL (dingtalk://, wecombot://, ...)")
    run.add_argument("--rules", help="rules file: custom rules, plant states, routes")
    run.add_argument("--clock", choices=("wall", "event"), default="wall",
                     help="event: time follows the readings' timestamps (replays, accelerated simulations)")
    run.add_argument("--instance", default="main", help="MQTT client id suffix and status topic instance")
    run.add_argument("--notify-expire", default="24h", metavar="DURATION",
                     help="a notification not accepted by then is given up and recorded as expired [24h]")
    run.add_argument("--metrics-port", type=int, default=0, metavar="P",
                     help="serve Prometheus /metrics on 127.0.0.1:P [default: 0 = off]")
    run.set_defaults(func=cmd_run)
    ls = s.add_parser("list", help="active alarms")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    for name, helptext in (("ack", "acknowledge"), ("shelve", "shelve for a while, with a reason"),
                           ("unshelve", "unshelve"), ("out-of-service", "take out of service, with a reason"),
                           ("in-service", "return to service")):
        a = s.add_parser(name, help=helptext)
        a.add_argument("id", help="site/asset/sensor/rule")
        a.add_argument("--operator", default=None,
                       help="ignored by the engine: the audit names the token's user (the service token: service; "
                            "a personal token from `smartpark users token NAME`: NAME)")
        a.add_argument("--comment", default=None, help="why (required to shelve or take out of service)")
        if name == "shelve":
            a.add_argument("--for", dest="duration", required=True, help="e.g. 30m, 8h (at most the rules' max)")
        a.set_defaults(func=cmd_action, action=name)
    rep = s.add_parser("report", help="alarm-system KPIs from the alarm measurement")
    rep.add_argument("--since", default="24h", help="period, e.g. 24h, 7d")
    rep.add_argument("--until", default="now",
                     help="end of the period: now, last (the newest alarm point: for replayed or simulated time), "
                          "or epoch milliseconds")
    rep.add_argument("--json", action="store_true")
    rep.set_defaults(func=cmd_report)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from .rules import load_rules
    from .service import AlertService

    park = load_park(settings.park)
    rules = load_rules(args.rules, park)  # checked before any I/O
    expire_s = parse_duration(args.notify_expire)
    if expire_s <= 0 or not 0 <= args.metrics_port < 65536:
        raise UsageError("--notify-expire must be positive and --metrics-port a port number (0: off)")
    service = AlertService(settings, park, rules=rules, webhooks=args.webhook, notify=args.notify,
                           clock=args.clock, instance=args.instance, notify_expire_s=expire_s,
                           metrics_port=args.metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if hasattr(signal, "SIGUSR1"):  # a stack dump of every thread on demand, for a hang in the field
            import faulthandler

            faulthandler.register(signal.SIGUSR1, all_threads=True)
        await service.run(stop)

    asyncio.run(main())
    return 0


def _call(settings: Settings, method: str, path: str, body: dict[str, object] | None = None) -> object:
    from .service import api_token

    token = api_token(settings)
    if not token:
        raise ConfigError("no API token: give --api-token or run the engine once to create <state dir>/api-token",
                          key="api_token")
    url = settings.api_url.rstrip("/") + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # the operator's own API URL
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            msg = exc.reason
        if exc.code in (400, 401, 404):
            raise UsageError(str(msg)) from None
        raise RuntimeError(f"alarm API answered {exc.code}: {msg}") from None
    except urllib.error.URLError as exc:
        sys.stderr.write(f"smartpark: alarm engine API not reachable at {settings.api_url}: {exc.reason}\n")
        raise SystemExit(1) from None


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = _call(settings, "GET", "/alarms")
    assert isinstance(rows, list)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(rows)} active alarms")
    for col in ("id", "priority", "state", "value", "limit", "since"):
        t.add_column(col)
    for r in rows:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["since"] / 1000)) if r.get("since") else ""
        t.add_row(r["id"], r["priority"], r["state"], str(r.get("value")), str(r.get("limit")), since)
    Console().print(t)
    return 0


def cmd_action(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    body: dict[str, object] = {"operator": args.operator or getpass.getuser(), "comment": args.comment}
    if args.action == "shelve":
        if not args.comment:
            raise UsageError("shelving needs a reason: --comment TEXT")
        body["duration_s"] = parse_duration(args.duration)
    ev = _call(settings, "POST", f"/alarms/{quote(args.id, safe='/')}/{args.action}", body)
    assert isinstance(ev, dict)
    print(f"{ev['id']}: {ev['event']} -> {ev['state']}")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from smartpark.influx import InfluxClient

    from .report import alarm_query, kpis, render

    since_s = parse_duration(args.since)
    if args.until not in ("now", "last") and not args.until.isdigit():
        raise UsageError(f"--until is now, last or epoch milliseconds, got {args.until!r}")

    async def fetch() -> tuple[list[dict[str, Any]], int]:
        async with InfluxClient(settings.influx()) as db:
            if args.until == "now":
                end = int(time.time() * 1000)
            elif args.until == "last":
                last = await db.rows(f"SELECT last(state) FROM {ALARM}")
                end = int(last[0]["time"]) + 1 if last else int(time.time() * 1000)
            else:
                end = int(args.until)
            start = end - int(since_s * 1000)
            return await db.rows(alarm_query(start, end)), end

    rows, end = asyncio.run(fetch())
    k = kpis(rows, end - int(since_s * 1000), end)
    if args.json:
        print(json.dumps(k, ensure_ascii=False))
    else:
        render(k)
    return 0
