"""The durable outbox: every notification is a row of ``<state_dir>/alerts/outbox.sqlite`` before it is first
attempted, until its final outcome (delivered or expired) has been written to the ``notification`` measurement.

SQLite in WAL mode. A commit reaches the operating system before the first attempt, so ``kill -9`` loses none;
against a power cut, :meth:`Outbox.sync` (a WAL checkpoint, which fsyncs) runs before every snapshot of the
engine, that is, before the journal that holds the fsync'd alarm events is emptied: until then, a
notification a power cut took from the outbox is made again from its journaled event, with the same id.
``synchronous=FULL`` (an fsync per batch of events) would double the engine's fsyncs per message: measured in
docs/benchmarks/alerts.md. SQLite was chosen over an append-only journal because a notification changes state
several times (attempts, next try, outcome, reported) and the senders ask for "the oldest pending of this
destination", which an index answers without reading the rest of a grown outbox.

``INSERT OR IGNORE`` on the stable ``id`` makes recording idempotent: what the engine dispatches again after a
crash (the journaled events, repeats and escalations derived from the alarm state) is not recorded twice, and a
notification delivered before the crash is not sent again unless the crash fell between its delivery and the
row's update (then it goes out a second time with the same id: at least once).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartpark.lineproto import encode_line
from smartpark.schema import EXPIRED, NOTIFICATION

from ..events import AlarmEvent
from .notifiers import Notification

PENDING = "pending"  # the outbox's own: a notification not yet final

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notification (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    dest TEXT NOT NULL,
    reason TEXT NOT NULL,
    level INTEGER NOT NULL,
    alarm TEXT NOT NULL,
    payload TEXT NOT NULL,
    created INTEGER NOT NULL,
    next_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    detail TEXT NOT NULL DEFAULT '',
    done_at INTEGER,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS head ON notification (dest, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS expiring ON notification (dest, created) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outcome ON notification (seq) WHERE status != 'pending' AND reported = 0;
CREATE INDEX IF NOT EXISTS done ON notification (done_at) WHERE status != 'pending';
"""


@dataclass(slots=True)
class Row:
    """One pending notification as the sender needs it."""

    seq: int
    n: Notification
    created: int
    next_at: int
    attempts: int


class Outbox:
    """``with Outbox(path) as ob``: the outbox of one engine; refuses a second ``with``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._entered = False
        self.pending: Counter[str] = Counter()  # destination -> pending rows (kept, never counted on the fly)
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (destination, status) since start
        self._listeners: list[Callable[[str], None]] = []

    def __enter__(self) -> Outbox:
        if self._entered:
            raise RuntimeError("an Outbox is entered once")
        self._entered = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        self.pending = Counter(dict(db.execute(
            "SELECT dest, count(*) FROM notification WHERE status = 'pending' GROUP BY dest").fetchall()))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the outbox is not open")
        return self._db

    def sync(self) -> None:
        """Make every commit so far durable against a power cut (a checkpoint fsyncs the WAL and the file)."""
        self.db.execute("PRAGMA wal_checkpoint(FULL)")

    def on_add(self, listener: Callable[[str], None]) -> None:
        """``listener(dest)`` is called after notifications for ``dest`` were recorded (wakes its sender)."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ recording
    def add(self, items: Iterable[tuple[str, Notification]], now: int) -> int:
        """Record (destination, notification) pairs in one durable transaction; returns how many were new."""
        rows = [(n.id, dest, n.reason, n.level, n.event.id if n.event else "", _dump(n), now, now)
                for dest, n in items]
        if not rows:
            return 0
        db = self.db
        new: Counter[str] = Counter()
        db.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                cur = db.execute("INSERT OR IGNORE INTO notification (id, dest, reason, level, alarm, payload, "
                                 "created, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
                if cur.rowcount:
                    new[row[1]] += 1
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.pending.update(new)
        for dest in new:
            for listener in self._listeners:
                listener(dest)
        return sum(new.values())

    # ------------------------------------------------------------------ what the senders do
    def head(self, dest: str) -> Row | None:
        """The oldest pending notification of ``dest``: a destination delivers in order, one at a time."""
        r = self.db.execute("SELECT seq, payload, created, next_at, attempts FROM notification "
                            "WHERE dest = ? AND status = 'pending' ORDER BY seq LIMIT 1", (dest,)).fetchone()
        if r is None:
            return None
        return Row(r[0], _load(r[1]), r[2], r[3], r[4])

    def retry(self, seq: int, attempts: int, next_at: int, detail: str) -> None:
        self.db.execute("UPDATE notification SET attempts = ?, next_at = ?, detail = ? WHERE seq = ?",
                        (attempts, next_at, detail[:1000], seq))

    def finish(self, seq: int, dest: str, status: str, attempts: int, detail: str, now: int) -> None:
        """The final outcome; the row stays until that outcome is in InfluxDB (and a day after, to dedupe)."""
        cur = self.db.execute("UPDATE notification SET status = ?, attempts = ?, detail = ?, done_at = ? "
                              "WHERE seq = ? AND status = 'pending'", (status, attempts, detail[:1000], now, seq))
        if cur.rowcount:
            self.pending[dest] -= 1
            self.outcomes[(dest, status)] += 1

    def expire(self, dest: str, created_before: int, now: int, detail: str) -> int:
        """Every pending notification of ``dest`` recorded before ``created_before`` expires, in one statement."""
        cur = self.db.execute("UPDATE notification SET status = 'expired', detail = ?, done_at = ? "
                              "WHERE dest = ? AND status = 'pending' AND created < ?",
                              (detail, now, dest, created_before))
        n = cur.rowcount
        if n:
            self.pending[dest] -= n
            self.outcomes[(dest, EXPIRED)] += n
        return n

    # ------------------------------------------------------------------ outcomes to InfluxDB, pruning
    def unreported(self, limit: int = 5000) -> tuple[list[int], list[str]]:
        """Final outcomes not yet in InfluxDB: their row numbers and their ``notification`` points (ns)."""
        rows = self.db.execute("SELECT seq, id, dest, reason, alarm, status, detail, attempts, done_at "
                               "FROM notification WHERE status != 'pending' AND reported = 0 ORDER BY seq "
                               "LIMIT ?", (limit,)).fetchall()
        lines = [encode_line(NOTIFICATION, {"route": dest, "reason": reason},
                             {"id": nid, "alarm": alarm, "status": status, "detail": detail, "attempts": attempts},
                             done_at * 1_000_000 + seq % 1_000_000)  # unique per point, the same on a re-write
                 for seq, nid, dest, reason, alarm, status, detail, attempts, done_at in rows]
        return [r[0] for r in rows], lines

    def reported(self, seqs: list[int]) -> None:
        if seqs:
            self.db.executemany("UPDATE notification SET reported = 1 WHERE seq = ?", [(s,) for s in seqs])

    def prune(self, done_before: int) -> int:
        """Forget outcomes already reported and older than ``done_before`` (kept until then to dedupe)."""
        return self.db.execute("DELETE FROM notification WHERE status != 'pending' AND reported = 1 "
                               "AND done_at < ?", (done_before,)).rowcount

    def depth(self) -> int:
        return sum(v for v in self.pending.values() if v > 0)


def _dump(n: Notification) -> str:
    return json.dumps({"reason": n.reason, "site": n.site, "priority": n.priority, "title": n.title,
                       "body": n.body, "id": n.id, "level": n.level,
                       "event": n.event.to_dict() if n.event else None, "seq": n.event.seq if n.event else 0},
                      ensure_ascii=False)


def _load(text: str) -> Notification:
    d: dict[str, Any] = json.loads(text)
    ev = AlarmEvent.from_dict(d["event"], int(d.get("seq", 0))) if d.get("event") else None
    return Notification(d["reason"], d["site"], d["priority"], d["title"], d["body"], ev, d["id"], int(d["level"]))
