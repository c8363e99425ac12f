# smartpark/_speedups.c (the reference: smartpark.decode._simple_snapshot_py)
from typing import Any

def simple_snapshot(sensors: dict[str, Any], values: dict[str, Any], ts: int, quality: str | None,
                    /) -> list[str] | None: ...
