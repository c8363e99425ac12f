#!/usr/bin/env python3
"""Generate the bundled park model ``smartpark/data/park.yaml`` from the shared sensor catalog.

The catalog (``park_catalog.yaml``) is the research artefact: global sensor ids, sources, provenance and free
text. The park model (CONTRACT §4) is what the services load: short ids addressed as ``site/asset/sensor``,
plain limits, regulatory entries the alert engine can evaluate, and simulator hints. This script is the only
place where one becomes the other, so a catalog update is a re-run, never a hand edit.

It also writes ``smartpark/data/sensor_ids.yaml`` (catalog global id -> ``site/asset/sensor``), which the
scenario converters use.

Usage::

    .venv/bin/python tools/gen_park.py [--catalog /work/shared/park_catalog.yaml] [--out-dir smartpark/data]
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = Path("/work/shared/park_catalog.yaml")
DEFAULT_OUT_DIR = REPO / "smartpark" / "data"

PARK = {"id": "demo_park", "name": "Demo chemical park", "name_zh": "示范化工园区",
        "timezone": "Asia/Shanghai"}
EXPECTED = {"sites": 3, "assets": 24, "sensors": 89}

ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
LIMIT_ORDER = ("ll", "l", "h", "hh")
AVERAGING = {"instant", "5min", "1h", "24h", "monthly"}
COMPARATORS = {"max", "min", "range"}

# --------------------------------------------------------------------------------------------------
# Short ids
# --------------------------------------------------------------------------------------------------

SITE_PREFIX = {"wwtp": "wwtp_", "energy_hub": "eh_", "hw_center": "hw_"}

# After the site prefix, the catalog id repeats the asset under an abbreviation. The first prefix that
# matches is dropped (longest first where one is a prefix of another, e.g. ``mp_header_`` before ``mp_``).
ASSET_PREFIXES: dict[str, tuple[str, ...]] = {
    "influent": ("inf_",),
    "bio_a2o": ("bio_",),
    "blowers": ("blower_",),
    "clarifier": ("clar_",),
    "effluent": ("eff_",),
    "reuse": ("reuse_",),
    "accident_pool": ("accident_pool_",),
    "gt1": ("gt1_",),
    "hrsg1": ("hrsg1_",),
    "aux_boiler1": ("blr1_",),
    "mp_header": ("mp_header_", "mp_"),
    "lp_header": ("lp_header_", "lp_"),
    "condensate": ("cond_",),
    "grid_pcc": ("grid_", "pcc_"),
    "gas_station": ("ng_",),
    "rotary_kiln": ("kiln_",),
    "scc": ("scc_",),
    "waste_heat_boiler": ("whb_",),
    "quench_tower": ("quench_",),
    "bag_filter": ("bf_",),
    "stack_cems": ("cems_",),
    "storage_warehouse": ("wh_",),
    "tank_farm": ("tank1_",),
}

# Abbreviated words, expanded token by token (tokens are the ``_``-separated parts of the remainder).
TOKEN_WORDS = {
    "t": "temp",
    "p": "pressure",
    "turb": "turbidity",
    "freq": "frequency",
    "pf": "power_factor",
    "dp": "diff_pressure",
    "residence": "residence_time",
    "blanket": "sludge_blanket",
}

# Whole-id exceptions where the mechanical rule gives something unreadable (``110_voltage``) or ambiguous.
SHORT_ID_OVERRIDES = {
    "eh_bus10_voltage": "voltage_10kv",
    "eh_pcc110_voltage": "voltage_110kv",
}


def short_id(global_id: str, site_id: str, asset_id: str) -> str:
    """The sensor id within its asset, e.g. ``hw_scc_t`` in ``hw_center/scc`` -> ``temp``."""
    if global_id in SHORT_ID_OVERRIDES:
        return SHORT_ID_OVERRIDES[global_id]
    rest = global_id
    site_prefix = SITE_PREFIX[site_id]
    if not rest.startswith(site_prefix):
        raise SystemExit(f"{global_id}: expected site prefix {site_prefix!r}")
    rest = rest[len(site_prefix):]
    for prefix in ASSET_PREFIXES.get(asset_id, ()):
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            break
    return "_".join(TOKEN_WORDS.get(tok, tok) for tok in rest.split("_"))


# --------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------


def clean(x: float) -> float | int:
    """Drop float noise (0.30000000000000004) and write whole numbers as ints."""
    x = float(f"{x:.10g}")
    return int(x) if x.is_integer() else x


def round_1sig(x: float, cap: float) -> float | int:
    """Round to one significant digit; round down instead when rounding to nearest would exceed ``cap``."""
    if x <= 0:
        return 0
    exp = math.floor(math.log10(x))
    unit = 10.0**exp
    nearest = round(x / unit) * unit
    if nearest > cap:
        nearest = math.floor(x / unit) * unit
    return clean(nearest)


def typical_value(sensor: dict[str, Any]) -> float:
    pattern = sensor.get("pattern") or {}
    for key in ("mean", "setpoint"):
        if isinstance(pattern.get(key), (int, float)):
            return float(pattern[key])
    lo, hi = sensor["normal"]
    return (lo + hi) / 2


def deadband(sensor: dict[str, Any], limits: dict[str, float]) -> float | int:
    """~1 % of the span, or 1.5 sigma of the noise if larger, but never wider than the normal-to-limit gap.

    A deadband wider than the gap between the normal band and a limit would keep an alarm standing while the
    value is back in its normal band. Gaps of zero (a limit on the edge of the normal band) do not constrain.
    """
    lo, hi = sensor["range"]
    span = hi - lo
    noise = sensor["noise"]
    sigma = noise["std"] if noise["basis"] == "absolute" else noise["std"] / 100 * abs(typical_value(sensor))
    raw = max(0.01 * span, 1.5 * sigma)
    n_lo, n_hi = sensor["normal"]
    gaps = [n_lo - v for k, v in limits.items() if k in ("l", "ll")]
    gaps += [v - n_hi for k, v in limits.items() if k in ("h", "hh")]
    positive = [g for g in gaps if g > 0]
    cap = min(positive) if positive else raw
    return round_1sig(min(raw, cap), cap)


# --------------------------------------------------------------------------------------------------
# Regulatory entries
# --------------------------------------------------------------------------------------------------

AVERAGING_MAP = {
    "instant": "instant",
    "5min": "5min",
    "1h": "1h",
    "24h": "24h",
    "monthly_billing": "monthly",
    # The catalog marks GB 18484 stack O2 "unspecified"; its clause says to evaluate on 1-h means.
    "unspecified": "1h",
}


def _balance(text: str) -> str:
    return text + ")" * (text.count("(") - text.count(")"))


def source_text(entry: dict[str, Any]) -> str:
    """A short human citation (< 80 characters) from the catalog's ``standard`` and ``clause``.

    When the full text is too long, the most informative candidate that fits wins: without parenthetical
    remarks, or only the first ``;``-separated part of the clause; as a last resort it is cut at a word.
    """
    standard = entry["standard"].strip()
    clause = (entry.get("clause") or "").strip()
    no_parens = re.compile(r"\s*\([^)]*\)")
    candidates = [
        f"{standard} {clause}",
        f"{standard} {no_parens.sub('', clause)}",
        f"{standard} {_balance(clause.split(';')[0].strip())}",
        f"{no_parens.sub('', standard)} {no_parens.sub('', clause)}",
    ]
    fitting = [c.strip() for c in candidates if len(c.strip()) < 80]
    if fitting:
        return max(fitting, key=len)
    text = candidates[-1].strip()
    return text[:78].rsplit(" ", 1)[0].rstrip(" ,;/") + "…"


def strictness(entry: dict[str, Any]) -> float:
    """Smaller is stricter."""
    comparator, limit = entry["comparator"], entry["limit"]
    if comparator == "max":
        return float(limit)
    if comparator == "min":
        return -float(limit)
    return float(limit[1]) - float(limit[0])  # range: narrower is stricter


def regulatory(sensor: dict[str, Any], limits: dict[str, float], comments: dict[str, list[str]],
               notes: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for entry in sensor.get("regulatory") or []:
        comparator = entry["comparator"]
        if comparator not in COMPARATORS:
            msg = (f"skipped {entry['standard']} '{entry.get('clause', '')}' "
                   f"(comparator {comparator}, limit {entry['limit']}): "
                   "the park model has no comparator for it")
            if comparator == "sum_abs_deviation_max":
                msg += ("; it bounds |+deviation| + |-deviation| <= 10 % of nominal, a statistic over "
                        "time, not one limit on an average. The operational l/h limits carry the split "
                        "(-3 %/+7 %).")
            comments["regulatory"].append(msg)
            notes.append(f"{sensor['id']}: {msg}")
            continue
        averaging = AVERAGING_MAP.get(entry["averaging"])
        if averaging is None:
            raise SystemExit(f"{sensor['id']}: unknown averaging {entry['averaging']!r}")
        if entry["averaging"] == "unspecified":
            comments["regulatory"].append(
                "catalog averaging 'unspecified' -> 1h: the standard states none; the catalog clause says to "
                "evaluate on 1-h means")
        limit = entry["limit"]
        if comparator == "range":
            if not (isinstance(limit, list) and len(limit) == 2 and limit[0] <= limit[1]):
                raise SystemExit(f"{sensor['id']}: range limit must be [lo, hi], got {limit!r}")
            limit = [clean(limit[0]), clean(limit[1])]
        else:
            limit = clean(limit)
        out.append({"limit": limit, "averaging": averaging, "comparator": comparator,
                    "source": source_text(entry)})

    # The model holds one entry per averaging period: keep the strictest, say what was dropped.
    by_avg: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in out:
        by_avg[e["averaging"]].append(e)
    kept: list[dict[str, Any]] = []
    for e in out:
        group = by_avg[e["averaging"]]
        if len(group) == 1:
            kept.append(e)
            continue
        if e is not group[0]:
            continue  # handled with the first of its group, at its position
        if len({g["comparator"] for g in group}) > 1:
            raise SystemExit(f"{sensor['id']}: mixed comparators for averaging {e['averaging']}")
        best = min(group, key=strictness)
        kept.append(best)
        dropped = "; ".join(f"{g['limit']} ({g['source']})" for g in group if g is not best)
        msg = f"{e['averaging']}: kept the strictest of {len(group)} catalog entries; dropped {dropped}"
        carried = [k for k, v in limits.items() for g in group if g is not best and g["limit"] == v]
        if carried:
            msg += f" (still an operational limit: {', '.join(carried)})"
        comments["regulatory"].append(msg)
    return kept


# --------------------------------------------------------------------------------------------------
# Simulator hints
# --------------------------------------------------------------------------------------------------

NOISE_BASIS = {"absolute": "absolute", "percent_of_reading": "percent"}
TOKEN_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def sim_hints(sensor: dict[str, Any], address: dict[str, str]) -> dict[str, Any]:
    """noise, noise_basis, pattern (type) and every structured ``pattern.*`` field; free text is left out.

    Strings are kept only when they are identifiers (``profile: double_peak``); a reference to another
    catalog sensor (``upstream``) is rewritten to its new ``site/asset/sensor`` address.
    """
    noise = sensor["noise"]
    sim: dict[str, Any] = {"noise": clean(noise["std"]), "noise_basis": NOISE_BASIS[noise["basis"]]}
    pattern = dict(sensor.get("pattern") or {})
    sim["pattern"] = pattern.pop("type")
    for key, value in pattern.items():
        if key == "note":
            continue
        if isinstance(value, str):
            if value in address:
                value = address[value]
            elif not TOKEN_RE.match(value):
                continue  # free text: controller descriptions, schedules, event narratives
        elif isinstance(value, float):
            value = clean(value)
        sim[key] = value
    return sim


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------


def check_and_fix(sensor: dict[str, Any], limits: dict[str, Any], comments: dict[str, list[str]],
                  issues: list[str]) -> list[float]:
    """Catalog consistency: normal within range, ll <= l <= h <= hh. Fix minimally and say so."""
    sid = sensor["id"]
    r_lo, r_hi = sensor["range"]
    if r_lo >= r_hi:
        raise SystemExit(f"{sid}: empty range {sensor['range']}")
    n_lo, n_hi = sensor["normal"]
    normal = [n_lo, n_hi]
    if n_lo > n_hi:
        normal = [n_hi, n_lo]
        msg = f"normal {sensor['normal']} was reversed; swapped"
        comments["normal"].append(msg)
        issues.append(f"{sid}: {msg}")
    clamped = [min(max(v, r_lo), r_hi) for v in normal]
    if clamped != normal:
        msg = f"normal {normal} reached outside range {sensor['range']}; clamped to {clamped}"
        comments["normal"].append(msg)
        issues.append(f"{sid}: {msg}")
        normal = clamped
    present = [k for k in LIMIT_ORDER if k in limits]
    for outer, inner in itertools.pairwise(present):
        if limits[outer] > limits[inner]:
            # Keep the limit nearer the normal band (the first to act) and move the other onto it.
            if inner in ("l", "h") and outer == "ll":
                msg = f"ll {limits['ll']} above l {limits['l']}; ll set to l"
                limits["ll"] = limits["l"]
            elif outer == "h" and inner == "hh":
                msg = f"hh {limits['hh']} below h {limits['h']}; hh set to h"
                limits["hh"] = limits["h"]
            else:
                msg = f"{outer} {limits[outer]} above {inner} {limits[inner]}; values swapped"
                limits[outer], limits[inner] = limits[inner], limits[outer]
            comments["limits"].append(msg)
            issues.append(f"{sid}: {msg}")
    for k in present:
        if not r_lo <= limits[k] <= r_hi:
            msg = f"limit {k}={limits[k]} outside range {sensor['range']} (kept: it can never trip)"
            comments["limits"].append(msg)
            issues.append(f"{sid}: {msg}")
    return [clean(v) for v in normal]


def convert(catalog: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], dict[str, dict[str, list[str]]],
                                              list[str], list[str]]:
    """Return (model, id map, comments per global id and key, inconsistencies, other notes)."""
    address: dict[str, str] = {}
    for site in catalog["sites"]:
        for asset in site["assets"]:
            for sensor in asset["sensors"]:
                sid = short_id(sensor["id"], site["id"], asset["id"])
                address[sensor["id"]] = f"{site['id']}/{asset['id']}/{sid}"

    comments_all: dict[str, dict[str, list[str]]] = {}
    issues: list[str] = []
    notes: list[str] = []
    sites_out = []
    for site in catalog["sites"]:
        assets_out = []
        for asset in site["assets"]:
            sensors_out = []
            for sensor in asset["sensors"]:
                gid = sensor["id"]
                comments: dict[str, list[str]] = defaultdict(list)
                catalog_limits = sensor.get("limits") or {}
                limits = {k: catalog_limits[k]["value"] for k in LIMIT_ORDER if k in catalog_limits}
                normal = check_and_fix(sensor, limits, comments, issues)
                out: dict[str, Any] = {
                    "id": address[gid].rsplit("/", 1)[1],
                    "name": sensor["name"],
                    "name_zh": sensor["name_zh"],
                    "unit": sensor["unit"],
                    "range": [clean(v) for v in sensor["range"]],
                    "normal": normal,
                    "interval_s": sensor["interval_s"],
                }
                if sensor.get("sample_cycle_s"):
                    out["sample_cycle_s"] = sensor["sample_cycle_s"]
                if limits:
                    out["limits"] = {k: clean(limits[k]) for k in reversed(LIMIT_ORDER) if k in limits}
                out["deadband"] = deadband({**sensor, "normal": normal}, limits)
                # Gas detectors and wet-chemistry analyzers alarm on the first reading over the limit: a gas
                # leak must not wait, and each analyzer value is already a considered, cycle-long result.
                if sensor["unit"] in ("%LEL", "ppm") or sensor.get("sample_cycle_s"):
                    out["on_delay_s"] = 0
                reg = regulatory(sensor, limits, comments, notes)
                if reg:
                    out["regulatory"] = reg
                out["sim"] = sim_hints(sensor, address)
                sensors_out.append(out)
                if comments:
                    comments_all[gid] = dict(comments)
            asset_out: dict[str, Any] = {"id": asset["id"], "name": asset["name"], "name_zh": asset["name_zh"]}
            if (site["id"], asset["id"]) in HJ212_LOGGERS:
                asset_out["hj212"] = HJ212_LOGGERS[(site["id"], asset["id"])]
            asset_out["sensors"] = sensors_out
            assets_out.append(asset_out)
        sites_out.append({"id": site["id"], "name": site["name"], "name_zh": site["name_zh"],
                          "assets": assets_out})
    return {"park": dict(PARK), "sites": sites_out}, address, comments_all, issues, notes


# --------------------------------------------------------------------------------------------------
# HJ 212 data loggers (CONTRACT §4, §7)
# --------------------------------------------------------------------------------------------------

# The online monitoring systems that report to the ministry's platform through a data logger: the
# incinerator's and the auxiliary boiler's stack CEMS and the wastewater outfall analysers. MNs follow the
# 2017 edition's 24-character form for the CEMS and the older 14-digit form for the outfall station, as
# fielded loggers of both generations do; the auxiliary boiler's logger speaks HJ 212-2025 with an SM4 key.
# Emission limits apply to converted (折算) concentrations, so those codes map to the ZsRtd/ZsAvg values.
HJ212_LOGGERS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("hw_center", "stack_cems"): [{
        "mn": "32058300HW01CEMS00000001", "pw": "123456",
        "codes": {"a34013": {"sensor": "pm", "value": "converted"},
                  "a21005": {"sensor": "co", "value": "converted"},
                  "a21026": {"sensor": "so2", "value": "converted"},
                  "a21002": {"sensor": "nox", "value": "converted"},
                  "a21024": {"sensor": "hcl", "value": "converted"},
                  "a21022": {"sensor": "hf", "value": "converted"},
                  "a19001": "o2", "a00000": "flow", "a01012": "temp"},
    }],
    ("energy_hub", "aux_boiler1"): [{
        "mn": "32058300EH01CEMS00000002", "pw": "123456", "sm4_key": "5a3c9e21f07b46d88c1e02a4b6f3d975",
        "codes": {"a21002": {"sensor": "nox", "value": "converted"}, "a19001": "o2", "a01012": "flue_temp"},
    }],
    ("wwtp", "effluent"): [{
        "mn": "32058300000103", "pw": "123456",
        "codes": {"w00000": "flow", "w01018": "cod", "w21003": "nh3n", "w21001": "tn", "w21011": "tp",
                  "w01001": "ph", "w01012": "ss", "w01010": "temp"},
    }],
}


# --------------------------------------------------------------------------------------------------
# Emitting
# --------------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Indented block sequences; flow style for short lists and small mappings."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _is_scalar(v: Any) -> bool:
    return not isinstance(v, (list, dict))


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(_is_scalar(v) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


class _Flow(dict[str, Any]):  # marker: emit this mapping in flow style
    pass


def _represent_flow(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(_Flow, _represent_flow)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=4096,
                     default_flow_style=False)


def _indent(text: str, prefix: str, first: str | None = None) -> list[str]:
    lines = text.rstrip("\n").split("\n")
    first = prefix if first is None else first
    return [first + lines[0]] + [prefix + ln for ln in lines[1:]]


COMMENT_WIDTH = 96  # comment text per line; the file stays readable at 110 columns
SIM_FLOW_MAX = 100  # longer simulator hints are written as a block mapping, one hint per line


def _sensor_block(sensor: dict[str, Any], comments: dict[str, list[str]]) -> list[str]:
    """One sensor as a list item at indentation 10, comments placed above the key they explain."""
    body = dict(sensor)
    if "limits" in body:
        body["limits"] = _Flow(body["limits"])
    if "regulatory" in body:
        body["regulatory"] = [_Flow(e) for e in body["regulatory"]]
    sim = {k: _Flow(v) if isinstance(v, dict) else v for k, v in body["sim"].items()}
    body["sim"] = _Flow(sim) if len(_dump(_Flow(sim))) <= SIM_FLOW_MAX else sim
    lines = _dump(body).rstrip("\n").split("\n")
    assert lines[0].startswith("id:"), lines[0]
    anchors = {"regulatory": ("regulatory", "sim"), "limits": ("limits", "deadband"), "normal": ("normal",)}
    inserts: dict[int, list[str]] = defaultdict(list)
    for key, msgs in comments.items():
        for anchor in anchors.get(key, (key,)):
            idx = next((i for i, ln in enumerate(lines) if ln.startswith(anchor + ":")), None)
            if idx is not None:
                for m in msgs:
                    wrapped = textwrap.wrap(m, COMMENT_WIDTH, break_on_hyphens=False)
                    inserts[idx] += ["# " + ln for ln in wrapped]
                break
        else:
            raise SystemExit(f"{sensor['id']}: nowhere to put comment on {key}")
    out = ["          - " + lines[0]]
    for i, ln in enumerate(lines[1:], start=1):
        out += ["            " + c for c in inserts.get(i, [])]
        out.append("            " + ln)
    return out


HEADER = "# Generated by tools/gen_park.py from park_catalog.yaml — edit the generator, not this file.\n"


def render_park(model: dict[str, Any], comments: dict[str, dict[str, list[str]]],
                gids: list[list[list[str]]]) -> str:
    lines = [HEADER.rstrip("\n")]
    lines.append("park: " + _dump(_Flow(model["park"])).strip())
    lines.append("sites:")
    for s_i, site in enumerate(model["sites"]):
        head = {k: v for k, v in site.items() if k != "assets"}
        lines += _indent(_dump(head), "    ", "  - ")
        lines.append("    assets:")
        for a_i, asset in enumerate(site["assets"]):
            head = {k: v for k, v in asset.items() if k != "sensors"}
            lines += _indent(_dump(head), "        ", "      - ")
            lines.append("        sensors:")
            for x_i, sensor in enumerate(asset["sensors"]):
                lines += _sensor_block(sensor, comments.get(gids[s_i][a_i][x_i], {}))
    return "\n".join(lines) + "\n"


def render_ids(address: dict[str, str]) -> str:
    head = (HEADER + "# Catalog global sensor id -> park model address site/asset/sensor (CONTRACT §4).\n"
            "# Use it to convert the catalog's scenarios and anything else keyed by catalog id.\n")
    return head + _dump(address)


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def sanity_check(model: dict[str, Any], address: dict[str, str]) -> None:
    counts = {"sites": 0, "assets": 0, "sensors": 0}
    site_ids: set[str] = set()
    for site in model["sites"]:
        counts["sites"] += 1
        assert ID_RE.match(site["id"]) and site["id"] not in site_ids, site["id"]
        site_ids.add(site["id"])
        asset_ids: set[str] = set()
        for asset in site["assets"]:
            counts["assets"] += 1
            assert ID_RE.match(asset["id"]) and asset["id"] not in asset_ids, f"{site['id']}/{asset['id']}"
            asset_ids.add(asset["id"])
            sensor_ids: set[str] = set()
            for sensor in asset["sensors"]:
                counts["sensors"] += 1
                where = f"{site['id']}/{asset['id']}/{sensor['id']}"
                assert ID_RE.match(sensor["id"]), f"{where}: id does not match {ID_RE.pattern}"
                assert sensor["id"] not in sensor_ids, f"{where}: duplicate id"
                sensor_ids.add(sensor["id"])
                lo, hi = sensor["range"]
                n_lo, n_hi = sensor["normal"]
                assert lo <= n_lo <= n_hi <= hi, f"{where}: normal outside range"
                vals = [sensor.get("limits", {})[k] for k in LIMIT_ORDER if k in sensor.get("limits", {})]
                assert vals == sorted(vals), f"{where}: limits out of order"
                assert sensor["deadband"] > 0, f"{where}: deadband"
                for r in sensor.get("regulatory", []):
                    assert r["averaging"] in AVERAGING and r["comparator"] in COMPARATORS, where
                    assert len(r["source"]) < 80, f"{where}: source too long"
                avgs = [r["averaging"] for r in sensor.get("regulatory", [])]
                assert len(avgs) == len(set(avgs)), f"{where}: two regulatory entries with one averaging"
    assert counts == EXPECTED, f"counts {counts} != {EXPECTED}"
    assert len(set(address.values())) == len(address) == EXPECTED["sensors"], "addresses not unique"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    ap.add_argument("--quiet", action="store_true", help="do not print the id mapping")
    args = ap.parse_args(argv)

    catalog = yaml.safe_load(args.catalog.read_text(encoding="utf-8"))
    model, address, comments, issues, notes = convert(catalog)
    sanity_check(model, address)
    gids = [[[x["id"] for x in a["sensors"]] for a in s["assets"]] for s in catalog["sites"]]

    park_text = render_park(model, comments, gids)
    ids_text = render_ids(address)
    # The hand-assembled text must read back as exactly the model (comments and layout aside).
    assert yaml.safe_load(park_text) == model, "rendered park.yaml does not round-trip"
    assert yaml.safe_load(ids_text) == address, "rendered sensor_ids.yaml does not round-trip"

    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "park.yaml").write_text(park_text, encoding="utf-8")
    (args.out_dir / "sensor_ids.yaml").write_text(ids_text, encoding="utf-8")

    if not args.quiet:
        width = max(map(len, address))
        for gid, addr in address.items():
            print(f"{gid:<{width}}  ->  {addr}")
    print(f"catalog inconsistencies fixed: {len(issues)}")
    for msg in issues:
        print(f"  {msg}")
    for msg in notes:
        print(f"note: {msg}")
    for gid, per_key in comments.items():
        for key, msgs in per_key.items():
            for m in msgs:
                if not any(m in n for n in notes):
                    print(f"comment {gid} [{key}]: {m}")
    n_lines = park_text.count("\n")
    print(f"wrote {args.out_dir / 'park.yaml'} ({n_lines} lines): {len(model['sites'])} sites, "
          f"{sum(len(s['assets']) for s in model['sites'])} assets, {len(address)} sensors")
    print(f"wrote {args.out_dir / 'sensor_ids.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
