"""Every name of the contract is spelled once in code: topics in ``smartpark/topics.py``, the InfluxDB schema
and the fixed vocabularies in ``smartpark/schema.py``; everything else imports them.

The package folders and ``bench/`` are read with ``ast``: no string constant outside those two modules is a
topic under ``park/``, the measurement name ``reading`` or ``dead_letter``, or an ISA-18.2 state name, and no
InfluxQL text names a measurement itself (queries are f-strings over the constants). Docstrings are prose and
are not looked at. The tests under ``tests/`` are left out on purpose: they write the contract's literal values
(``"park/wwtp/effluent/cod"``, ``"UNACK"``) so that they check the code's constants against the contract
independently, and a changed constant fails them instead of changing with them. The operator console's
JavaScript holds no state name either: it takes them from the vocabulary the engine serves with the park model.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from smartpark import schema, topics

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("smartpark", "collector", "alerts", "hj212", "rollups", "reports", "dashboards", "simulators", "demo",
           "devstack", "cli", "bench")
HOMES = {REPO / "smartpark" / "topics.py", REPO / "smartpark" / "schema.py"}
STATE_NAMES = frozenset({"NORM", "UNACK", "ACKED", "RTNUN", "SHLVD", "OOSRV"})
MEASUREMENT_NAMES = ("reading", "reading_5m", "reading_1h", "reading_1d", "hj212", "alarm", "dead_letter",
                     "collector")  # not notification: the outbox's SQLite table has that name too

TOPIC = re.compile(r"(?<![\w$.-])park/")
QUOTED_STATE = re.compile(r"""["'`](?:NORM|UNACK|ACKED|RTNUN|SHLVD|OOSRV)["'`]""")
QUOTED_MEASUREMENT = re.compile(r""""(?:reading|dead_letter)"|'(?:reading|dead_letter)'""")
QUERY_MEASUREMENT = re.compile(r'\b(?:FROM|INTO)\s+(?:"?\w+"?\.)?"?(?:' + "|".join(MEASUREMENT_NAMES) + r")\b")


def _prose_and_exports(tree: ast.AST) -> set[int]:
    """The docstrings, and the names an ``__all__`` lists (identifiers, not values)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            found.update(id(n) for n in ast.walk(node.value))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def literal_problem(text: str) -> str | None:
    """Why a string constant spells a name of the contract itself, or None."""
    if text in STATE_NAMES:
        return "an alarm state"
    if text in ("reading", "dead_letter"):
        return "a measurement"
    if TOPIC.search(text):
        return "a topic under park/"
    if QUOTED_STATE.search(text):
        return "an alarm state in query text"
    if QUOTED_MEASUREMENT.search(text) or QUERY_MEASUREMENT.search(text):
        return "a measurement in query text"
    return None


def problems(source: str, name: str) -> list[str]:
    """``name:line: why: constant`` for every offending string constant of ``source`` (f-string parts too)."""
    tree = ast.parse(source)
    skip = _prose_and_exports(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            why = literal_problem(node.value)
            if why:
                out.append(f"{name}:{node.lineno}: {why}: {node.value[:80]!r}")
    return out


def modules() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py")
                  if "__pycache__" not in p.parts and p not in HOMES)


def test_no_module_spells_a_name_of_the_contract() -> None:
    paths = modules()
    assert REPO / "collector" / "service.py" in paths and REPO / "bench" / "bench_collector.py" in paths
    bad = [hit for p in paths for hit in problems(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert not bad, "names of the contract spelled outside smartpark/topics.py and schema.py:\n" + "\n".join(bad)


@pytest.mark.parametrize("source", [
    'x = "UNACK"',
    'ACTIVE = ("UNACK", "ACKED", "RTNUN")',
    'm = "reading"',
    'encode_line("dead_letter", tags, fields, ts)',
    't = "park/#"',
    't = f"park/{site}/{asset}"',
    'h = "subscribe through $share/G/park/# to share"',
    'q = \'SELECT count("value") FROM "reading" WHERE $timeFilter\'',
    'q = "SELECT * FROM alarm WHERE site = x"',
    'q = f"SELECT last(value) FROM reading GROUP BY {tag}"',
    'q = \'SELECT mean("mean") FROM "rollup"."reading_1h" WHERE x\'',
    "q = f\"SELECT * FROM x WHERE \\\"state\\\" = 'SHLVD' GROUP BY {t}\"",
    'def f():\n    """Docstrings are prose."""\n    return "OOSRV"',
    '__all__ = ["UNACK"]\nx = "UNACK"',
])
def test_every_spelling_is_seen(source: str) -> None:
    """The reader sees each way a name has been spelled in this code base, so the walk above cannot miss one."""
    assert problems(source, "m")


@pytest.mark.parametrize("source", [
    'def f():\n    """Writes a reading of park/wwtp/effluent/cod; UNACK until acknowledged."""',
    '"""The module docstring names the \'reading\' measurement and park/#."""',
    'from smartpark.schema import READING, UNACK\nq = f"SELECT * FROM {READING}"',
    'p = "the other tree (a checkout with smartpark/)"',
    'h = "read readings from the spool"',
    'sql = "DELETE FROM notification WHERE status = ?"',
    'q = f"SELECT * FROM {ALARM} WHERE \\"state\\" = \'{SHLVD}\'"',
    '__all__ = ["NORM", "UNACK"]',
])
def test_prose_and_imports_pass(source: str) -> None:
    assert problems(source, "m") == []


def test_console_script_holds_no_state_name() -> None:
    """The console's JavaScript compares states by meaning (``ST.unacked``), as the engine serves them."""
    script = (REPO / "alerts" / "console" / "static" / "app.js").read_text(encoding="utf-8")
    assert QUOTED_STATE.findall(script) == []


class TestTheModulesHoldTheContract:
    """The constants are the contract's values (CONTRACT §2, §3, §5)."""

    def test_topics(self) -> None:
        assert topics.reading_topic("wwtp", "effluent", "cod") == "park/wwtp/effluent/cod"
        assert topics.sensor_topic("wwtp/effluent/cod") == "park/wwtp/effluent/cod"
        assert topics.snapshot_topic("wwtp", "effluent") == "park/wwtp/effluent"
        assert topics.alarm_topic("wwtp", "effluent", "cod", "hh") == "park/alarms/wwtp/effluent/cod/hh"
        assert topics.status_topic("collector", "a") == "park/_sys/collector/a"
        assert topics.share_subscription("g") == "$share/g/park/#"
        assert topics.SUBSCRIPTION == "park/#" and topics.SYS_SUBSCRIPTION == "park/_sys/#"
        assert topics.hj212_topic("81733553216103") == "hj212/81733553216103" and topics.hj212_topic(None) == "hj212/-"

    def test_recognising_topics(self) -> None:
        assert topics.reading_parts("park/wwtp/effluent/cod") == ("wwtp", "effluent", "cod")
        assert topics.reading_parts("park/wwtp/effluent") is None
        assert topics.reading_parts("plant/wwtp/effluent/cod") is None
        assert topics.is_service_topic("park/alarms/wwtp/effluent/cod/hh")
        assert topics.is_service_topic("park/_sys/collector/a")
        assert not topics.is_service_topic("park/wwtp/effluent/cod")
        assert topics.sensor_path("park/wwtp/effluent") == "wwtp/effluent"
        assert topics.is_shared("$share/g/park/#") and not topics.is_shared("park/#")

    def test_schema(self) -> None:
        assert schema.MEASUREMENTS == ("reading", "hj212", "notification", "alarm", "dead_letter", "collector",
                                       "reading_5m", "reading_1h", "reading_1d")
        assert schema.STATES == ("NORM", "UNACK", "ACKED", "RTNUN", "SHLVD", "OOSRV")
        assert schema.PRIORITIES == ("high", "medium", "low")
        assert schema.EVENTS == ("raised", "cleared", "acked", "shelved", "unshelved", "out_of_service",
                                 "in_service")
        assert schema.REASONS == ("bad_json", "bad_value", "bad_ts", "unknown_sensor", "out_of_range", "too_large")
        assert schema.HJ212_REASONS == ("hj212_frame", "hj212_crc", "hj212_auth", "hj212_decrypt", "unknown_mn")
        assert schema.MAX_PAYLOAD == 65536 and schema.DEAD_LETTER_PAYLOAD_BYTES == 1024
        assert schema.FLAG_QUALITY == {"N": "good", "S": "uncertain", "F": "bad", "M": "bad", "D": "bad",
                                       "C": "bad", "T": "bad", "B": "bad"}
        assert schema.TAGS["alarm"] == ("site", "asset", "sensor", "rule", "priority")
        assert schema.FIELDS["collector"] == ("received", "written", "invalid", "spooled", "retries")
        assert (schema.RAW_RP, schema.ROLLUP_RP) == ("raw", "rollup")

    def test_vocabulary_is_json_of_the_same(self) -> None:
        v = schema.vocabulary()
        assert v["states"] == list(schema.STATES) and set(v["state"].values()) == set(schema.STATES)
        assert v["state"]["unacked"] == "UNACK" and v["state"]["normal"] == "NORM"
