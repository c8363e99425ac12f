"""Notifications: a chain of small stages (after Alertmanager), assembled in :class:`Dispatcher`.

    events -> route (site, priority) -> flood gate (EEMUA 191, human routes) -> per-notifier bounded queue
           -> worker: timeout, retries with full-jitter backoff -> Notifier.notify

Every notifier has its own queue and task, so one that hangs or fails never delays evaluation or the
others; a full queue drops with a count and a log line, never silently. Repeats while unacknowledged and
escalation to a second route are driven by :meth:`Dispatcher.tick` with the injected time.

Notifiers are registered by name in :data:`NOTIFIERS` (``webhook``: the CONTRACT §5 event as a JSON
POST; ``apprise``: dingtalk://, wecombot://, feishu://, mailto://, json://, ... with a bilingual text).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import aiohttp

from smartpark.errors import ConfigError, NotifyError

from .events import ACKED_EV, CLEARED, IN_SERVICE, OUT_OF_SERVICE, RAISED, SHELVED, AlarmEvent

log = logging.getLogger(__name__)

FLOOD_WINDOW_MS = 600_000
FLOOD_ON = 10    # more than 10 alarms in 10 minutes at one site: flood
FLOOD_OFF = 5    # until fewer than 5 in 10 minutes
REASONS = ("event", "repeat", "escalation", "flood", "flood_over")


@dataclass(slots=True)
class Notification:
    """What a notifier sends: an alarm event (reason ``event``/``repeat``/``escalation``) or a flood summary."""

    reason: str
    site: str
    priority: str
    title: str
    body: str
    event: AlarmEvent | None = None


class Notifier(Protocol):
    """One destination. ``notify`` raises :class:`NotifyError` with ``recoverable`` to ask for a retry."""

    name: str
    structured: bool  # True: machines (every event, no flood summaries); False: people

    async def notify(self, n: Notification) -> None: ...

    async def close(self) -> None: ...


class WebhookNotifier:
    """POSTs the CONTRACT §5 event JSON (flood summaries and repeats are for people, not sent here)."""

    structured = True

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"a webhook is an http(s) URL, got {url!r}", key="webhook")
        self.name = f"webhook:{url}"
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def notify(self, n: Notification) -> None:
        if n.event is None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(self.url, data=n.event.to_json().encode(),
                                          headers={"Content-Type": "application/json"}) as resp:
                if resp.status >= 300:
                    raise NotifyError(f"{self.url} answered {resp.status}",
                                      recoverable=resp.status >= 500 or resp.status in (408, 429))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise NotifyError(f"{self.url}: {exc!r}", recoverable=True) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AppriseNotifier:
    """Any apprise URL: DingTalk, WeCom bot, Feishu, e-mail, ... The message is in Chinese and English."""

    structured = False

    def __init__(self, url: str) -> None:
        import apprise

        self._ap = apprise.Apprise()
        if not self._ap.add(url):
            raise ConfigError(f"not an apprise URL apprise understands: {url.split('://')[0]}://...", key="notify")
        self.name = f"apprise:{url.split('://')[0]}"

    async def notify(self, n: Notification) -> None:
        ok = await self._ap.async_notify(body=n.body, title=n.title)
        if not ok:
            raise NotifyError(f"{self.name} did not deliver", recoverable=True)

    async def close(self) -> None:
        pass


NOTIFIERS: dict[str, Callable[[str], Notifier]] = {"webhook": WebhookNotifier, "apprise": AppriseNotifier}


def make_notifier(kind: str, url: str) -> Notifier:
    try:
        return NOTIFIERS[kind](url)
    except KeyError:
        raise ConfigError(f"unknown notifier {kind!r}; known: {', '.join(NOTIFIERS)}") from None


class Worker:
    """One notifier behind its own bounded queue: retries with backoff, counts every outcome."""

    def __init__(self, notifier: Notifier, *, maxsize: int = 1000, attempts: int = 5, timeout: float = 10.0,
                 backoff: float = 0.5, backoff_max: float = 30.0) -> None:
        self.notifier = notifier
        self.queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize)
        self.attempts, self.timeout, self.backoff, self.backoff_max = attempts, timeout, backoff, backoff_max
        self.counts: Counter[str] = Counter()

    def offer(self, n: Notification) -> bool:
        try:
            self.queue.put_nowait(n)
        except asyncio.QueueFull:
            self.counts["dropped"] += 1
            log.error("notifier %s is %d behind: dropped a %s notification", self.notifier.name,
                      self.queue.qsize(), n.reason)
            return False
        self.counts["queued"] += 1
        return True

    async def run(self) -> None:
        try:
            while True:
                n = await self.queue.get()
                try:
                    await self._deliver(n)
                finally:
                    self.queue.task_done()
        finally:
            with contextlib.suppress(Exception):
                await self.notifier.close()

    async def _deliver(self, n: Notification) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                async with asyncio.timeout(self.timeout):
                    await self.notifier.notify(n)
                self.counts["sent"] += 1
                return
            except (NotifyError, TimeoutError) as exc:
                recoverable = getattr(exc, "recoverable", True)
                if not recoverable or attempt == self.attempts:
                    self.counts["failed"] += 1
                    log.warning("notifier %s gave up on a %s notification: %s", self.notifier.name, n.reason,
                                exc or "timeout")
                    return
                self.counts["retries"] += 1
                await asyncio.sleep(random.uniform(0, min(self.backoff_max, self.backoff * 2 ** attempt)))
            except Exception as exc:  # a notifier bug must not kill the pipeline; it is counted and logged
                self.counts["failed"] += 1
                log.exception("notifier %s failed: %r", self.notifier.name, exc)
                return


@dataclass
class Route:
    """Which events go to a worker: sites and priorities (empty = all), repeat and escalation."""

    worker: Worker
    sites: frozenset[str] = frozenset()
    priorities: frozenset[str] = frozenset()
    repeat_ms: int | None = None
    escalate_ms: int | None = None
    escalate_to: Worker | None = None

    def matches(self, site: str, priority: str) -> bool:
        return (not self.sites or site in self.sites) and (not self.priorities or priority in self.priorities)


@dataclass
class _Unacked:
    event: AlarmEvent
    raised_ts: int
    last_sent: dict[int, int] = field(default_factory=dict)  # route index -> ts of last notification
    escalated: set[int] = field(default_factory=set)


class Dispatcher:
    """Routes events to workers with flood handling, repeats and escalation. Synchronous and non-blocking."""

    def __init__(self, routes: Iterable[Route], tz: str = "Asia/Shanghai") -> None:
        self.routes = list(routes)
        self.tz = ZoneInfo(tz)
        self._raised: dict[str, deque[int]] = {}
        self.flooding: dict[str, int] = {}   # site -> alarms suppressed during this flood
        self._unacked: dict[str, _Unacked] = {}

    @property
    def workers(self) -> list[Worker]:
        seen: dict[int, Worker] = {}
        for r in self.routes:
            seen.setdefault(id(r.worker), r.worker)
            if r.escalate_to is not None:
                seen.setdefault(id(r.escalate_to), r.escalate_to)
        return list(seen.values())

    def text(self, ev: AlarmEvent, reason: str = "event") -> tuple[str, str]:
        when = datetime.fromtimestamp(ev.ts / 1000, self.tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        tag = {"event": "", "repeat": "[未确认 unacknowledged] ", "escalation": "[升级 escalated] "}[reason]
        title = f"{tag}[{ev.priority.upper()}] {ev.event} {ev.id}"
        body = f"{ev.message}\n{ev.state} · {when}" + (f" · {ev.operator}" if ev.operator else "")
        return title, body

    def _count(self, site: str, ts: int) -> int:
        dq = self._raised.setdefault(site, deque())
        while dq and dq[0] <= ts - FLOOD_WINDOW_MS:
            dq.popleft()
        return len(dq)

    def dispatch(self, events: Iterable[AlarmEvent]) -> None:
        for ev in events:
            self._track(ev)
            flood_note: Notification | None = None
            if ev.event == RAISED:
                self._raised.setdefault(ev.site, deque()).append(ev.ts)
                n = self._count(ev.site, ev.ts)
                if ev.site not in self.flooding and n > FLOOD_ON:
                    self.flooding[ev.site] = 0
                    flood_note = Notification(
                        "flood", ev.site, "high", f"[FLOOD] 报警泛滥 alarm flood at {ev.site}",
                        f"站点 {ev.site} 10分钟内 {n} 条报警, 暂停逐条通知 | {n} alarms in 10 minutes at {ev.site}: "
                        f"individual notifications are held until fewer than {FLOOD_OFF} in 10 minutes.")
            title, body = self.text(ev)
            note = Notification("event", ev.site, ev.priority, title, body, ev)
            for r in self.routes:
                if not r.matches(ev.site, ev.priority):
                    continue
                if r.worker.notifier.structured:
                    r.worker.offer(note)
                    continue
                if flood_note is not None:
                    r.worker.offer(flood_note)
                if ev.site in self.flooding:
                    continue
                if ev.event in (RAISED, CLEARED, SHELVED, OUT_OF_SERVICE, IN_SERVICE) or ev.priority == "high":
                    r.worker.offer(note)
            if ev.site in self.flooding and ev.event == RAISED:
                self.flooding[ev.site] += 1

    def _track(self, ev: AlarmEvent) -> None:
        if ev.event == RAISED:
            self._unacked[ev.id] = _Unacked(ev, ev.ts, {i: ev.ts for i in range(len(self.routes))})
        elif ev.event in (ACKED_EV, CLEARED, SHELVED, OUT_OF_SERVICE):
            self._unacked.pop(ev.id, None)

    def resume(self, unacked: Iterable[AlarmEvent]) -> None:
        """After a restart: alarms still unacknowledged keep being repeated and escalated (from their raise)."""
        for ev in unacked:
            self._unacked[ev.id] = _Unacked(ev, ev.ts, {i: ev.ts for i in range(len(self.routes))})

    def tick(self, now: int) -> None:
        """Repeats while unacknowledged, escalation after N minutes, end of a flood."""
        for site in list(self.flooding):
            if self._count(site, now) < FLOOD_OFF:
                held = self.flooding.pop(site)
                note = Notification("flood_over", site, "high", f"[FLOOD OVER] 报警泛滥结束 {site}",
                                    f"站点 {site} 报警泛滥结束, 期间暂停通知 {held} 条 | "
                                    f"alarm flood at {site} is over; "
                                    f"{held} notifications were held, see the alarm list.")
                for r in self.routes:
                    if not r.worker.notifier.structured and r.matches(site, "high"):
                        r.worker.offer(note)
        for u in self._unacked.values():
            ev = u.event
            for i, r in enumerate(self.routes):
                if not r.matches(ev.site, ev.priority) or ev.site in self.flooding:
                    continue
                if r.repeat_ms and now - u.last_sent.get(i, u.raised_ts) >= r.repeat_ms:
                    u.last_sent[i] = now
                    title, body = self.text(ev, "repeat")
                    r.worker.offer(Notification("repeat", ev.site, ev.priority, title, body, ev))
                if r.escalate_ms and r.escalate_to is not None and i not in u.escalated \
                        and now - u.raised_ts >= r.escalate_ms:
                    u.escalated.add(i)
                    title, body = self.text(ev, "escalation")
                    r.escalate_to.offer(Notification("escalation", ev.site, ev.priority, title, body, ev))

    def counts(self) -> dict[str, dict[str, int]]:
        return {w.notifier.name: dict(w.counts) for w in self.workers}


def build_routes(webhooks: Iterable[str], notify: Iterable[str], specs: Iterable[Any] = ()) -> list[Route]:
    """Routes from the command line (every event) and from the rules file (filtered, repeat, escalation)."""
    routes = [Route(Worker(make_notifier("webhook", u))) for u in webhooks]
    routes += [Route(Worker(make_notifier("apprise", u))) for u in notify]
    for s in specs:
        kind, url = ("webhook", s.webhook) if s.webhook else ("apprise", s.notify)
        esc = Worker(make_notifier("webhook" if s.escalate_to.startswith("http") else "apprise", s.escalate_to)) \
            if s.escalate_to else None
        routes.append(Route(Worker(make_notifier(kind, url)), frozenset(s.sites), frozenset(s.priorities),
                            int(s.repeat_min * 60_000) if s.repeat_min else None,
                            int(s.escalate_after_min * 60_000) if s.escalate_after_min else None, esc))
    return routes


def dumps(n: Notification) -> str:
    return json.dumps({"reason": n.reason, "title": n.title, "body": n.body}, ensure_ascii=False)
