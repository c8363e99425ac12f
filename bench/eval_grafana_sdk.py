"""Build one site-dashboard panel with grafana-foundation-sdk and compare it with the hand-built dict.

grafana-foundation-sdk is not a dependency of smartpark; this script is the measurement behind that choice
(dashboards/README.md, "Why plain dicts"). Run it in a throwaway virtualenv:

    python3 -m venv /tmp/gfsdk && /tmp/gfsdk/bin/pip install grafana-foundation-sdk
    /tmp/gfsdk/bin/python bench/eval_grafana_sdk.py dashboards/generated/smartpark-site-wwtp.json

It rebuilds the first time-series panel of the given dashboard (thresholds, threshold style, axis band, the
InfluxQL target) through the SDK's builders, checks that the thresholds come out identical, prints the keys the
SDK adds and the build time per panel.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Self

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dbb
from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.cog import builder, variants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm


class InfluxQL(variants.Dataquery):
    """The SDK ships query types for Prometheus, Loki, Elasticsearch and others, none for InfluxDB."""

    def __init__(self, query: str, ref: str = "A", alias: str | None = None) -> None:
        self.query, self.ref, self.alias = query, ref, alias

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"datasource": {"type": "influxdb", "uid": "smartpark-influxdb"}, "query": self.query,
                               "rawQuery": True, "refId": self.ref, "resultFormat": "time_series"}
        if self.alias:
            out["alias"] = self.alias
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(data["query"], data.get("refId", "A"), data.get("alias"))


class _Query(builder.Builder[variants.Dataquery]):
    def __init__(self, query: InfluxQL) -> None:
        self.query = query

    def build(self) -> InfluxQL:
        return self.query


def main(path: str) -> None:
    hand = json.load(open(path, encoding="utf-8"))
    panel = next(p for p in hand["panels"] if p.get("type") == "timeseries")
    defaults = panel["fieldConfig"]["defaults"]
    steps, target = defaults["thresholds"]["steps"], panel["targets"][0]

    def build() -> dict[str, Any]:
        thresholds = dbb.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
            [dm.Threshold(color=s["color"], value=s["value"]) for s in steps])
        p = (timeseries.Panel().title(panel["title"]).description(panel["description"])
             .datasource(dm.DataSourceRef(type_val="influxdb", uid="smartpark-influxdb"))
             .max_data_points(500).unit(defaults["unit"]).thresholds(thresholds)
             .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.LINE_AND_AREA))
             .draw_style(cm.GraphDrawStyle.LINE).line_width(1).fill_opacity(0).span_nulls(True)
             .show_points(cm.VisibilityMode.NEVER)
             .axis_soft_min(defaults["custom"]["axisSoftMin"]).axis_soft_max(defaults["custom"]["axisSoftMax"])
             .with_target(_Query(InfluxQL(target["query"], alias=target.get("alias")))).height(8).span(8))
        return json.loads(json.dumps(p.build(), cls=JSONEncoder))

    out = build()
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        build()
    per_panel_us = (time.perf_counter() - t0) / n * 1e6
    print("thresholds identical:", out["fieldConfig"]["defaults"]["thresholds"]["steps"] == steps)
    print("target identical:", out["targets"][0] == {k: target[k] for k in out["targets"][0]})
    print("keys the SDK adds:", sorted(set(out) - set(panel)))
    print(f"build time: {per_panel_us:.0f} us per panel")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dashboards/generated/smartpark-site-wwtp.json")
