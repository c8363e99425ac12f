"""Hostile or broken park files (CONTRACT §4, §6): ``smartpark park check`` exits 2 with one line naming the
file, the line and the key, never a traceback, an endless expansion or a crash of a service later on."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from devstack import SMARTPARK
from devstack.parks import asset, park_yaml, site

# a park file of one sensor, x, whose keys are lines 9 to 14 (the expected lines below count in this text)
HEAD = park_yaml(site("s", "S", asset("a", "A", "id: x\nname: X\nunit: mg/L\nrange: [0, 100]\nnormal: [0, 50]\n"
                                                "interval_s: 60")), park="{id: p, name: P, timezone: UTC}")
# nine levels of nine aliases: 680 bytes that stand for 9^9 (387 million) strings
LAUGHS = "[&a [lol,lol,lol,lol,lol,lol,lol,lol,lol], " + ", ".join(
    f"&{b} [" + ",".join([f"*{a}"] * 9) + "]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)) + "]"

# name, file bytes, expected line, expected key (a prefix of it), words of the reason
CASES: list[tuple[str, bytes, int, str, str]] = [
    ("alias bomb in averaging",
     (HEAD + f"            regulatory:\n              - limit: 5\n                source: x\n"
             f"                averaging: {LAUGHS}\n").encode(),
     18, "sites[0].assets[0].sensors[0].regulatory[0].averaging", "alias"),
    ("not UTF-8", HEAD.replace("name: X", "name: X\xff").encode("latin-1"), 10, "name", "not UTF-8"),
    ("unhashable key", (HEAD + "            sim: {? [a, b] : 1}\n").encode(), 15, "sites[0].assets[0].sensors[0].sim",
     "plain value"),
    ("mapping as a key", (HEAD + "            sim:\n              ? {a: 1}\n              : 2\n").encode(), 16,
     "sites[0].assets[0].sensors[0].sim", "plain value"),
    ("deep nesting", (HEAD + "            sim: {a: " + "[" * 5000 + "]" * 5000 + "}\n").encode(), 15,
     "sites[0].assets[0].sensors[0].sim.a", "nested"),
    ("unknown time zone", HEAD.replace("timezone: UTC", "timezone: Mars/Olympus").encode(), 1, "park.timezone",
     "unknown time zone"),
    ("recursive alias", (HEAD + "            sim: &r {a: *r}\n").encode(), 15, "sites[0].assets[0].sensors[0].sim",
     "alias"),
]


def smartpark(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it; ``timeout`` only stops a run that would otherwise never end."""
    return subprocess.run([*SMARTPARK, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "SMARTPARK_MQTT_URL": "mqtt://127.0.0.1:1"})


def assert_refused(r: subprocess.CompletedProcess[str], path: Path, line: int, key: str, words: str) -> None:
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    [message] = r.stderr.strip().splitlines()
    m = re.match(rf"smartpark: {re.escape(str(path))}:(\d+):([^:]+): (.*)$", message)
    assert m, message
    assert int(m[1]) == line
    assert m[2].startswith(key), message
    assert words in m[3], message


class TestParkCheck:
    """Each broken file is refused by ``park check`` with exit 2 and ``file:line:key: reason`` on one line."""

    @pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
    def test_refused(self, case: tuple[str, bytes, int, str, str], tmp_path: Path) -> None:
        """The file is refused with its line and key, and the reason in words."""
        _, data, line, key, words = case
        path = tmp_path / "park.yaml"
        path.write_bytes(data)
        assert_refused(smartpark("park", "check", str(path)), path, line, key, words)

    def test_aliases_that_stay_small_are_kept(self, tmp_path: Path) -> None:
        """An anchor reused a few times (a shared ``sim`` block) is still a valid park file."""
        path = tmp_path / "park.yaml"
        path.write_text(HEAD.replace("interval_s: 60", "interval_s: 60\n            sim: &sim {noise: 1.5}")
                        + "          - {id: y, name: Y, unit: mg/L, range: [0, 1], normal: [0, 1], interval_s: 60, "
                          "sim: *sim}\n")
        r = smartpark("park", "check", str(path))
        assert r.returncode == 0, r.stderr
        assert "2 sensors" in r.stdout


def test_alerts_run_refuses_unknown_zone(tmp_path: Path) -> None:
    """``alerts run`` with a park whose time zone does not exist exits 2 before any I/O, no traceback."""
    path = tmp_path / "park.yaml"
    path.write_text(HEAD.replace("timezone: UTC", "timezone: Mars/Olympus"))
    r = smartpark("--park", str(path), "--state-dir", str(tmp_path / "state"), "alerts", "run")
    assert_refused(r, path, 1, "park.timezone", "unknown time zone")


def test_a_large_park_without_aliases_is_not_taken_for_a_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    """The alias bound grows with the file: a document of many nodes and no alias loads (a park of thousands of
    assets), while aliases that expand far beyond the text are still refused (here with the bound scaled down)."""
    from smartpark import park as park_mod
    from smartpark.errors import ConfigError

    monkeypatch.setattr(park_mod, "MAX_NODES", 100)
    big = "items:\n" + "".join(f"  - {{id: a{i}, v: {i}}}\n" for i in range(2000))  # ~6,000 nodes, no alias
    assert len(park_mod.load_yaml_with_lines(big, "big.yaml")["items"]) == 2000
    bomb = ("a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        park_mod.load_yaml_with_lines(bomb, "bomb.yaml")
