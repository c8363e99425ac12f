"""Routing: which destinations an alarm event goes to, and why (the reason to notify is explicit, after
Alertmanager): ``event`` (level 0), ``repeat`` while unacknowledged, ``escalation`` (level 1) to a second route
after N minutes, and the flood summaries ``flood``/``flood_over`` (EEMUA 191: more than 10 alarms in 10 minutes at
a site, for people only). Synchronous and non-blocking: every notification decided goes to the durable outbox
in one transaction, with its stable id; the senders deliver from there.

Repeats and escalations are derived from the alarm state (the unacknowledged alarms and the time), not stored:
after a restart the same notifications come out with the same ids, and the outbox records each once, so an
escalation that fell due during the restart is sent when the engine is back, and none is sent twice.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from smartpark.kpis import FLOOD_MORE_THAN, FLOOD_WINDOW_MS
from smartpark.schema import HIGH, NOTIFICATION_REASONS

from .. import texts
from ..events import ACKED_EV, CLEARED, IN_SERVICE, OUT_OF_SERVICE, RAISED, SHELVED, AlarmEvent
from .notifiers import Notification, Notifier, make_notifier
from .outbox import Outbox

# the flood of smartpark.kpis, watched as alarms arrive: over the last 10 minutes (sliding) rather than by clock
# periods, since the gate acts at the moment the 11th alarm comes
FLOOD_ON = FLOOD_MORE_THAN  # more than 10 alarms in 10 minutes at one site: flood
FLOOD_OFF = 5    # until fewer than 5 in 10 minutes
REASONS = (*NOTIFICATION_REASONS, "flood", "flood_over")  # flood summaries go to people only


def notification_id(dest: str, reason: str, level: int, ev: AlarmEvent | None, site: str = "", ts: int = 0,
                    k: int = 0) -> str:
    """Stable and unique for (alarm event, destination, reason, level); ``k`` numbers the repeats of one event."""
    what = f"{ev.id}\x1f{ev.event}\x1f{ev.ts}" if ev is not None else f"{site}\x1f{ts}"
    return hashlib.sha256(f"{dest}\x1f{what}\x1f{reason}\x1f{level}\x1f{k}".encode()).hexdigest()[:32]


@dataclass
class Route:
    """Which events go to a destination: sites and priorities (empty = all), repeat and escalation."""

    dest: Notifier
    sites: frozenset[str] = frozenset()
    priorities: frozenset[str] = frozenset()
    repeat_ms: int | None = None
    escalate_ms: int | None = None
    escalate_to: Notifier | None = None

    def matches(self, site: str, priority: str) -> bool:
        return (not self.sites or site in self.sites) and (not self.priorities or priority in self.priorities)


@dataclass
class _Unacked:
    event: AlarmEvent
    raised_ts: int
    repeats: dict[int, int] = field(default_factory=dict)  # route index -> number of the last repeat
    escalated: set[int] = field(default_factory=set)


class Dispatcher:
    """Routes events to destinations with flood handling, repeats and escalation, into the outbox."""

    def __init__(self, routes: Iterable[Route], outbox: Outbox, tz: str = "Asia/Shanghai", *,
                 public_url: str | None = None, now_ms: Callable[[], int] | None = None) -> None:
        self.routes = list(routes)
        self.outbox = outbox
        self.tz = ZoneInfo(tz)
        self.public_url = public_url.rstrip("/") if public_url else None
        self._now = now_ms
        self._raised: dict[str, deque[int]] = {}
        self.flooding: dict[str, int] = {}   # site -> alarms suppressed during this flood
        self._unacked: dict[str, _Unacked] = {}
        self._out: list[tuple[str, Notification]] = []
        #: False: what ``dispatch``/``tick`` decide waits for :meth:`commit` (one transaction per batch of
        #: messages; the caller commits before acknowledging them, and their events are in its journal)
        self.autocommit = True

    @property
    def destinations(self) -> list[Notifier]:
        seen: dict[str, Notifier] = {}
        for r in self.routes:
            seen.setdefault(r.dest.name, r.dest)
            if r.escalate_to is not None:
                seen.setdefault(r.escalate_to.name, r.escalate_to)
        return list(seen.values())

    def text(self, ev: AlarmEvent, reason: str = "event") -> tuple[str, str]:
        return texts.notification(ev, reason, self.tz, self.public_url)

    def _offer(self, dest: Notifier, reason: str, ev: AlarmEvent | None, *, level: int = 0, k: int = 0,
               site: str = "", title: str = "", body: str = "", ts: int = 0) -> None:
        if ev is not None:
            title, body = self.text(ev, reason if reason in ("event", "repeat", "escalation") else "event")
            site = ev.site
        nid = notification_id(dest.name, reason, level, ev, site, ts, k)
        body += f"\nnotification_id: {nid}"  # the last line, so that people can quote it
        self._out.append((dest.name, Notification(reason, site, ev.priority if ev else HIGH, title, body, ev,
                                                  nid, level)))

    def commit(self) -> None:
        """Record what was decided since the last commit in the outbox, in one transaction."""
        self._commit(None, force=True)

    def _commit(self, now: int | None, force: bool = False) -> None:
        if self._out and (self.autocommit or force):
            when = self._now() if self._now is not None else (now or 0)  # real time: expiry is about delivery
            self.outbox.add(self._out, when)
            self._out = []

    def _count(self, site: str, ts: int) -> int:
        dq = self._raised.setdefault(site, deque())
        while dq and dq[0] <= ts - FLOOD_WINDOW_MS:
            dq.popleft()
        return len(dq)

    def dispatch(self, events: Iterable[AlarmEvent]) -> None:
        """Every notification the events call for, recorded in the outbox (one transaction)."""
        for ev in events:
            self._track(ev)
            flood_n = 0
            if ev.event == RAISED:
                self._raised.setdefault(ev.site, deque()).append(ev.ts)
                n = self._count(ev.site, ev.ts)
                if ev.site not in self.flooding and n > FLOOD_ON:
                    self.flooding[ev.site] = 0
                    flood_n = n
            for r in self.routes:
                if not r.matches(ev.site, ev.priority):
                    continue
                if r.dest.structured:
                    self._offer(r.dest, "event", ev)
                    continue
                if flood_n:
                    title, body = texts.flood(ev.site, flood_n, FLOOD_OFF)
                    self._offer(r.dest, "flood", None, site=ev.site, ts=ev.ts, title=title, body=body)
                if ev.site in self.flooding:
                    continue
                if ev.event in (RAISED, CLEARED, SHELVED, OUT_OF_SERVICE, IN_SERVICE) or ev.priority == HIGH:
                    self._offer(r.dest, "event", ev)
            if ev.site in self.flooding and ev.event == RAISED:
                self.flooding[ev.site] += 1
        self._commit(None)

    def _track(self, ev: AlarmEvent) -> None:
        if ev.event == RAISED:
            self._unacked[ev.id] = _Unacked(ev, ev.ts)
        elif ev.event in (ACKED_EV, CLEARED, SHELVED, OUT_OF_SERVICE):
            self._unacked.pop(ev.id, None)

    def resume(self, unacked: Iterable[AlarmEvent]) -> None:
        """After a restart: alarms still unacknowledged keep being repeated and escalated (from their raise);
        what was already sent before the restart has the same id and is not recorded again."""
        for ev in unacked:
            self._unacked[ev.id] = _Unacked(ev, ev.ts)

    def tick(self, now: int) -> None:
        """Repeats while unacknowledged, escalation after N minutes, end of a flood."""
        for site in list(self.flooding):
            if self._count(site, now) < FLOOD_OFF:
                held = self.flooding.pop(site)
                for r in self.routes:
                    if not r.dest.structured and r.matches(site, HIGH):
                        title, body = texts.flood_over(site, held)
                        self._offer(r.dest, "flood_over", None, site=site, ts=now, title=title, body=body)
        for u in self._unacked.values():
            ev = u.event
            for i, r in enumerate(self.routes):
                if not r.matches(ev.site, ev.priority) or ev.site in self.flooding:
                    continue
                if r.repeat_ms:
                    k = (now - u.raised_ts) // r.repeat_ms  # the repeat due now (missed ones are not made up)
                    if k >= 1 and k > u.repeats.get(i, 0):
                        u.repeats[i] = k
                        self._offer(r.dest, "repeat", ev, k=k)
                if r.escalate_ms and r.escalate_to is not None and i not in u.escalated \
                        and now - u.raised_ts >= r.escalate_ms:
                    u.escalated.add(i)
                    self._offer(r.escalate_to, "escalation", ev, level=1)
        self._commit(now)


def build_routes(webhooks: Iterable[str], notify: Iterable[str], specs: Iterable[Any] = ()) -> list[Route]:
    """Routes from the command line (every event) and from the rules file (filtered, repeat, escalation).
    One URL named twice is one destination (one line of delivery, one sender)."""
    made: dict[str, Notifier] = {}

    def dest(kind: str, url: str) -> Notifier:
        if url not in made:
            made[url] = make_notifier(kind, url)
        return made[url]

    routes = [Route(dest("webhook", u)) for u in webhooks]
    routes += [Route(dest("apprise", u)) for u in notify]
    for s in specs:
        kind, url = ("webhook", s.webhook) if s.webhook else ("apprise", s.notify)
        esc = dest("webhook" if s.escalate_to.startswith("http") else "apprise", s.escalate_to) \
            if s.escalate_to else None
        routes.append(Route(dest(kind, url), frozenset(s.sites), frozenset(s.priorities),
                            int(s.repeat_min * 60_000) if s.repeat_min else None,
                            int(s.escalate_after_min * 60_000) if s.escalate_after_min else None, esc))
    return routes
