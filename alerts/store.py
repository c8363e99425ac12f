"""Durable alarm state under ``<state_dir>/alerts/``: a JSON snapshot plus an append-only journal.

The journal records, in processing order, every reading evaluated, every tick and every event (with the
alarm's flags after it). A message is acknowledged to the broker only once its journal line is written,
and events are fsynced before anyone hears of them, so ``kill -9`` loses nothing: on restart the
snapshot is loaded and the journal replayed through the (deterministic) engine; the events the replay
produces again are not emitted twice. The snapshot (engine state with windows and averaging buckets,
and the InfluxDB lines not yet confirmed) is replaced atomically every second and at shutdown; the
journal then starts afresh.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import IO, Any

from smartpark.decode import Reading
from smartpark.park import Park

from .engine import Engine
from .events import AlarmEvent

log = logging.getLogger(__name__)


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.snapshot_path = self.dir / "state.json"
        self.journal_path = self.dir / "journal.jsonl"
        self._journal: IO[str] | None = None
        self._snapshot_at = time.monotonic()

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

    @property
    def journal(self) -> IO[str]:
        if self._journal is None:
            self._journal = self.journal_path.open("a", encoding="utf-8")
        return self._journal

    def readings(self, readings: list[Reading]) -> None:
        w = self.journal.write
        for r in readings:
            w(f'{{"r":["{r.ref.key}",{r.value!r},{r.ts_ms},"{r.quality}"]}}\n')

    def tick(self, now: int) -> None:
        self.journal.write(f'{{"tick":{now}}}\n')

    def events(self, engine: Engine, events: list[AlarmEvent]) -> None:
        """Journal events and fsync: nobody hears of an event that a crash could forget."""
        j = self.journal
        for ev in events:
            a = engine.alarms.get(ev.id)
            j.write(json.dumps({"ev": ev.to_dict(), "seq": ev.seq, "a": a.dump() if a else None},
                               ensure_ascii=False) + "\n")
        j.flush()
        os.fsync(j.fileno())

    def flush(self) -> None:
        """To the OS: enough to survive the process being killed (before the broker is acknowledged)."""
        if self._journal is not None:
            self._journal.flush()

    def snapshot(self, state: dict[str, Any]) -> None:
        tmp = self.snapshot_path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(state, f, ensure_ascii=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.snapshot_path)
        self._snapshot_at = time.monotonic()
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

    def journal_bytes(self) -> int:
        """What a crash now would replay: the journal written since the last snapshot."""
        return self._journal.tell() if self._journal is not None else 0

    def snapshot_age(self) -> float:
        """Seconds since the last snapshot (or since start)."""
        return time.monotonic() - self._snapshot_at

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def restore(engine: Engine, park: Park, snap: dict[str, Any] | None,
            records: list[dict[str, Any]]) -> list[AlarmEvent]:
    """Snapshot, then the journal replayed in order; returns the journaled events (to re-publish them).

    A record the engine cannot take (an unexpected error, as when it was first evaluated) is logged and
    skipped: a journal must never stop the engine at every start."""
    if snap:
        engine.load(snap["engine"])
    events: list[AlarmEvent] = []
    for rec in records:
        try:
            if "r" in rec:
                key, value, ts, quality = rec["r"]
                try:
                    ref = park.get(key)
                except KeyError:
                    continue
                engine.process(Reading(ref, float(value), int(ts), quality))  # its events are journaled below
            elif "tick" in rec:
                engine.tick(int(rec["tick"]))
            elif "ev" in rec:
                if rec.get("a") is not None:
                    engine.apply(rec["ev"]["id"], rec["a"])  # operator actions exist only here
                events.append(AlarmEvent.from_dict(rec["ev"], int(rec.get("seq", 0))))
        except Exception:
            log.exception("alerts: skipped a journal record the engine could not replay: %.200r", rec)
    engine.resync(max((e.seq for e in events), default=0))
    return events
