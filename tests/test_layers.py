"""The core imports nothing above it: no module under ``smartpark/`` names a part built on the core.

The parts (collector, alerts, dashboards, simulators, HJ 212, rollups, reports), the demo, the local dev
stack and the CLI that assembles them all import ``smartpark``; if the core imported any of them back, every
service would load the others and a change in one part could break the core. The imports are read from the
source with ``ast``: ``import x``, ``from x import y``, relative imports that climb out of the package, and the
string argument of ``importlib.import_module`` / ``__import__``. A dynamic import whose name the source does
not spell out is refused too, since nobody could check it. A second check imports every core module in a
fresh interpreter and looks at what got loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "smartpark"
ABOVE_THE_CORE = frozenset({"collector", "alerts", "dashboards", "simulators", "hj212", "rollups", "reports",
                            "demo", "devstack", "cli"})
DYNAMIC_IMPORTS = frozenset({"import_module", "__import__"})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every import in ``source`` (the module ``module``); a dynamic import whose
    name is not a string literal gives the name ``<dynamic>``."""
    names: list[tuple[int, str]] = []
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.append((node.lineno, node.module or ""))
                continue
            climbed = len(package) - (node.level - 1)
            base = package[:climbed] if climbed > 0 else ["<above the top level>"]
            target = ".".join([*base, *([node.module] if node.module else [])])
            names.append((node.lineno, target))
            if not node.module:  # from . import a, b: each is a module of the package
                names.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called not in DYNAMIC_IMPORTS:
                continue
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.append((node.lineno, first.value))
            else:
                names.append((node.lineno, "<dynamic>"))
    return names


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    bad = []
    for line, name in imported_names(source, module, is_package):
        top = name.split(".")[0]
        if top in ABOVE_THE_CORE or top.startswith("<"):
            bad.append(f"{module}:{line} imports {name}")
    return bad


def core_modules() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_core_module_imports_a_layer_above_it() -> None:
    modules = core_modules()
    assert CORE / "park.py" in modules and CORE / "__init__.py" in modules  # the walk found the core
    bad = []
    for path in modules:
        bad += violations(path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py")
    assert not bad, "the core imports layers above it:\n" + "\n".join(bad)


@pytest.mark.parametrize("source", [
    "import collector",
    "import alerts.engine as engine",
    "from simulators import Simulator",
    "from dashboards.build import build_all",
    "def f():\n    from hj212 import packets\n",
    "import importlib\nimportlib.import_module('rollups.cli')",
    "from importlib import import_module\nimport_module('reports')",
    "__import__('demo')",
    "from devstack import free_port",
    "from cli import main",
    "from ... import collector",
    "import importlib\nname = 'alerts'\nimportlib.import_module(name)",
])
def test_every_form_of_import_is_seen(source: str) -> None:
    """The reader sees each way a module can be named, so the walk above cannot pass by missing one."""
    assert violations(source, "smartpark.mqtt.codec")


@pytest.mark.parametrize("source", [
    "import json\nfrom collections.abc import Mapping",
    "from .park import load_park\nfrom . import errors",
    "from importlib import resources",
    "import smartpark.influx",
    "from .. import config",  # smartpark.mqtt.codec -> smartpark.config
])
def test_imports_inside_the_core_pass(source: str) -> None:
    assert violations(source, "smartpark.mqtt.codec") == []


def test_importing_the_whole_core_loads_nothing_above_it() -> None:
    """Every core module imported in a fresh interpreter: none of the parts above ends up loaded."""
    names = [_module_name(p) for p in core_modules()]
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert "smartpark" in loaded
    assert not loaded & ABOVE_THE_CORE, f"importing the core loaded {sorted(loaded & ABOVE_THE_CORE)}"


def test_no_test_or_benchmark_imports_conftest() -> None:
    """pytest loads conftest.py itself; a second import under the name ``conftest`` would make its classes
    two distinct types. What tests share lives in modules of their own (``services.py``)."""
    bad = []
    for path in sorted([*(REPO / "tests").glob("*.py"), *(REPO / "bench").glob("*.py")]):
        names = imported_names(path.read_text(encoding="utf-8"), path.stem)
        bad += [f"{path.relative_to(REPO)}:{line}" for line, name in names if name.split(".")[0] == "conftest"]
    assert not bad, "imports conftest: " + ", ".join(bad)


class TestOneDurationGrammar:
    """Every command reads durations with smartpark.timing.parse_duration: the same text means the same time."""

    @pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200),
                                                   ("1d", 86400), ("1h30m", 5400), ("250ms", 0.25),
                                                   ("8 h", 28800), ("30min", 1800), ("1sec", 1)])
    def test_durations(self, text: str, seconds: float) -> None:
        from smartpark.timing import parse_duration
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["", "abc", "5x", "1h 30", "-5m", "1e3s"])
    def test_bad_durations_are_usage_errors(self, text: str) -> None:
        from smartpark.errors import UsageError
        from smartpark.timing import parse_duration
        with pytest.raises(UsageError, match="bad duration"):
            parse_duration(text)

    def test_no_part_has_a_parser_of_its_own(self) -> None:
        """No module outside smartpark/timing.py defines a duration parser."""
        own = [p for p in REPO.glob("*/**/*.py") if ".venv" not in p.parts and "node_modules" not in p.parts
               and p.as_posix().split("/")[-2:] != ["smartpark", "timing.py"]
               and any(isinstance(n, ast.FunctionDef) and "parse_duration" in n.name
                       for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
        assert own == []
