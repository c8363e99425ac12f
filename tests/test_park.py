"""The park model: the bundled park is complete, and each kind of mistake in a park file is one clear line."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from cli import main
from devstack import SMARTPARK
from smartpark.errors import ConfigError
from smartpark.park import load_park, parse_park

GOOD = """\
park: {id: mini, name: Mini park, timezone: Asia/Shanghai}
sites:
  - id: wwtp
    name: WWTP
    assets:
      - id: effluent
        name: Effluent
        sensors:
          - id: cod
            name: COD
            unit: mg/L
            range: [0, 500]
            normal: [15, 40]
            interval_s: 300
            limits: {hh: 50, h: 40}
            deadband: 2
            regulatory:
              - {limit: 50, averaging: 24h, source: "GB 18918-2002 class 1A"}
          - id: ph
            name: pH
            unit: pH
            range: [0, 14]
            normal: [6.5, 8.5]
            interval_s: 60
"""


class TestBundledPark:
    def test_counts(self) -> None:
        """The bundled park has the catalog's three sites, 24 assets and 89 sensors."""
        park = load_park()
        assert [s.id for s in park.sites] == ["wwtp", "energy_hub", "hw_center"]
        assert sum(len(s.assets) for s in park.sites) == 24
        assert len(park) == 89

    def test_short_unique_ids_and_lookup(self) -> None:
        """Sensors are addressed by short ids within their asset, as the contract's example shows."""
        park = load_park()
        ref = park.get("wwtp/effluent/cod")
        assert ref.topic == "park/wwtp/effluent/cod"
        assert ref.sensor.unit == "mg/L"
        assert park.lookup("hw_center", "scc", "temp") is not None
        assert len({r.key for r in park}) == len(park)
        assert sorted(r.index for r in park) == list(range(len(park)))

    def test_regulatory_and_sim_hints(self) -> None:
        """Regulatory limits keep their averaging and source; every sensor carries simulator hints."""
        park = load_park()
        scc = park.get("hw_center/scc/temp").sensor
        assert [(r.rule, r.comparator, r.limit) for r in scc.regulatory] == [("reg_5min", "min", 1100)]
        assert "GB 18484" in scc.regulatory[0].source
        assert all(r.sensor.sim.get("noise") is not None for r in park)
        assert all(r.sensor.limits.items() for r in park), "every catalog sensor has at least one limit"


# (mistake, replacement of GOOD text or a function, expected key fragment, expected line, message fragment)
MISTAKES = [
    ("unknown key", ("            deadband: 2\n", "            deadband: 2\n            colour: red\n"),
     "colour", 17, "unknown key 'colour'"),
    ("duplicate sensor id", ("          - id: ph\n", "          - id: cod\n"), "sites[wwtp].assets[effluent].sensors",
     8, "duplicate sensor id 'cod'"),
    ("inverted limits", ("limits: {hh: 50, h: 40}", "limits: {hh: 30, h: 40}"), "limits", 15, "inverted"),
    ("normal outside range", ("normal: [15, 40]", "normal: [15, 600]"), "sensors[cod]", 9,
     "outside the instrument range"),
    ("missing unit", ("            unit: mg/L\n", ""), "sensors[cod]", 9, "missing required key 'unit'"),
    ("unknown averaging", ("averaging: 24h", "averaging: 7d"), "averaging", 18, "'7d'"),
    ("bad id", ("          - id: ph\n", "          - id: Ph-2\n"), "sensors[Ph-2].id", 19, "pattern"),
    ("range not increasing", ("range: [0, 14]", "range: [14, 0]"), "range", 22, "low < high"),
    ("duplicate yaml key", ("            interval_s: 60\n", "            interval_s: 60\n            interval_s: 30\n"),
     "interval_s", 25, "duplicate key"),
    ("negative interval", ("interval_s: 300", "interval_s: -5"), "interval_s", 14, "greater than 0"),
    ("reserved site id", ("  - id: wwtp\n", "  - id: alarms\n"), "sites", 2, "reserved"),
    ("bad yaml", ("    name: WWTP\n", "    name: [WWTP\n"), "", None, "not valid YAML"),
]


class TestMistakes:
    @pytest.mark.parametrize("case", MISTAKES, ids=[m[0] for m in MISTAKES])
    def test_one_line_with_file_line_key(self, case: tuple[Any, ...], tmp_path: Path) -> None:
        """Each mistake is reported as one line naming the file, the line and the key."""
        _, (old, new), key, line, fragment = case
        assert old in GOOD
        path = tmp_path / "park.yaml"
        path.write_text(GOOD.replace(old, new, 1))
        with pytest.raises(ConfigError) as info:
            load_park(path)
        err = info.value
        text = str(err)
        assert "\n" not in text
        assert text.startswith(str(path))
        assert fragment in text, text
        if line is not None:
            assert err.line == line, text
            assert f"{path}:{line}:" in text
        assert key in (err.key or ""), text

    def test_good_file_loads(self) -> None:
        """The small example park of the contract is valid: optional keys are optional."""
        park = parse_park(GOOD, "mini.yaml")
        assert [r.key for r in park] == ["wwtp/effluent/cod", "wwtp/effluent/ph"]

    def test_cli_check_exit_codes(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """``smartpark park check`` exits 0 for a good file and 2 with the one line for a bad one."""
        good = tmp_path / "good.yaml"
        good.write_text(GOOD)
        assert main(["park", "check", str(good)]) == 0
        assert "2 sensors" in capsys.readouterr().out
        bad = tmp_path / "bad.yaml"
        bad.write_text(GOOD.replace("limits: {hh: 50, h: 40}", "limits: {hh: 30, h: 40}"))
        assert main(["park", "check", str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{bad}:15:" in err

    def test_park_flag_and_env_select_the_model(self, tmp_path: Path) -> None:
        """``--park FILE`` and ``SMARTPARK_PARK`` select the model for every command (here: park show)."""
        good = tmp_path / "good.yaml"
        good.write_text(GOOD)
        env = {"SMARTPARK_PARK": str(good), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
        out = subprocess.run([*SMARTPARK, "park", "show"], env=env,
                             capture_output=True, text=True, check=True).stdout
        assert "wwtp/effluent/ph" in out and "Mini park" in out
        out2 = subprocess.run([*SMARTPARK, "--park", str(good), "park", "show"],
                              capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"}).stdout
        assert "Mini park" in out2
        bad = subprocess.run([*SMARTPARK, "park", "show"], capture_output=True, text=True,
                             env={"SMARTPARK_PARK": str(tmp_path / "missing.yaml"), "PATH": "/usr/bin:/bin"})
        assert bad.returncode == 2 and "missing.yaml" in bad.stderr
