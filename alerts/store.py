"""Durable alarm state under ``<state_dir>/alerts/``: a JSON snapshot plus an append-only journal.

Every event is appended to ``journal.jsonl`` and fsynced *before* it is published, written or notified,
so an alarm that anyone heard of survives ``kill -9``. The snapshot (engine state with its windows and
averaging buckets, and the InfluxDB lines not yet confirmed) is replaced atomically (write, fsync,
rename) every second and at shutdown; the journal then starts afresh.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .engine import Engine
from .events import AlarmEvent


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.snapshot_path = self.dir / "state.json"
        self.journal_path = self.dir / "journal.jsonl"
        self._journal = None

    def load(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        snap = None
        if self.snapshot_path.exists():
            snap = json.loads(self.snapshot_path.read_text(encoding="utf-8"))
        records: list[dict[str, Any]] = []
        if self.journal_path.exists():
            with self.journal_path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        break  # a torn last line after a crash: everything before it is intact
        return snap, records

    def append(self, engine: Engine, events: list[AlarmEvent]) -> None:
        if not events:
            return
        if self._journal is None:
            self._journal = self.journal_path.open("a", encoding="utf-8")
        for ev in events:
            a = engine.alarms.get(ev.id)
            rec = {"ev": ev.to_dict(), "seq": ev.seq, "a": a.dump() if a else None}
            self._journal.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def snapshot(self, state: dict[str, Any]) -> None:
        tmp = self.snapshot_path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(state, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snapshot_path)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        with self.journal_path.open("w", encoding="utf-8") as f:
            os.fsync(f.fileno())
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def restore(engine: Engine, snap: dict[str, Any] | None, records: list[dict[str, Any]]) -> list[AlarmEvent]:
    """Snapshot, then the journal's alarm flags on top; returns the journaled events (to re-write them)."""
    if snap:
        engine.load(snap["engine"])
    events = []
    for rec in records:
        if rec.get("a") is not None:
            engine.apply(rec["ev"]["id"], rec["a"])
        events.append(AlarmEvent.from_dict(rec["ev"], int(rec.get("seq", 0))))
    if events:
        engine._seq = max(engine._seq, max(e.seq for e in events))
        engine.clock.observe(max(e.ts for e in events))
    return events
