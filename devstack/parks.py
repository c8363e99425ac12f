"""Park files built from their parts, for the tests and benchmarks.

A small park differs from another in a sensor or a limit, not in its frame: the ``park:`` line, the sites, the
assets and their ``sensors:`` keys are written here once, in the layout of the park file format (CONTRACT §4),
and a park names only what is its own::

    park_yaml(site("plant", "Plant", asset("tank", "Tank", "{id: level, ...}")))

A sensor (or a regulatory entry) is its own YAML text: a flow mapping on one line, or a block of ``key: value``
lines, which is indented under its ``- `` here. ``extra`` adds keys of a site or an asset (``name_zh: 出水``).
"""

from __future__ import annotations

TEST_PARK = "{id: t, name: Test park, timezone: Asia/Shanghai}"


def one_tank_level(park: str = TEST_PARK) -> str:
    """A park of one sensor: the tank level with HH 90 and H 80 (``plant/tank/level``), nothing else to raise
    an alarm or to go stale beside it."""
    return park_yaml(site("plant", "Plant", asset(
        "tank", "Tank", '{id: level, name: Level, unit: "%", range: [0, 100], normal: [20, 60], interval_s: 10, '
                        'limits: {hh: 90, h: 80}, deadband: 2}')), park=park)


def park_yaml(*sites: str, park: str = TEST_PARK) -> str:
    """The text of a park file: the ``park`` mapping and the sites (each from :func:`site`)."""
    return f"park: {park}\nsites:\n" + "".join(sites)


def site(id: str, name: str, *assets: str, extra: str = "") -> str:
    """One entry of ``sites``, with its assets (each from :func:`asset`)."""
    return f"  - id: {id}\n    name: {name}\n{_keys(extra, 4)}    assets:\n" + "".join(assets)


def asset(id: str, name: str, *sensors: str, extra: str = "") -> str:
    """One entry of a site's ``assets``, with its sensors (each the YAML text of one sensor)."""
    return (f"      - id: {id}\n        name: {name}\n{_keys(extra, 8)}        sensors:\n"
            + "".join(_item(s, 10) for s in sensors))


def _keys(text: str, indent: int) -> str:
    return "".join(" " * indent + line + "\n" for line in text.splitlines())


def _item(text: str, indent: int) -> str:
    """``text`` as one item of a block sequence at ``indent``: ``- `` before its first line, the rest under it."""
    first, *rest = text.strip("\n").splitlines()
    return " " * indent + "- " + first + "\n" + "".join(" " * (indent + 2) + line + "\n" for line in rest)
