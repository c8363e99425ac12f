"""The instants tests stamp their readings with: devstack/epochs.py, which the benchmarks share."""

from devstack.epochs import DAY_MS, RECENT_LOCAL_MIDNIGHT_MS, RECENT_MIDNIGHT_MS

__all__ = ["DAY_MS", "RECENT_LOCAL_MIDNIGHT_MS", "RECENT_MIDNIGHT_MS"]
