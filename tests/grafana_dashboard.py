"""The analysts' Grafana dashboard as its SQL: every query it holds, and those queries
with Grafana's variables and the ClickHouse plugin's time macros expanded the way the
plugin expands them (``$__timeFilter(c)`` is ``c >= toDateTime(from) AND c <=
toDateTime(to)``, ``$__timeInterval(c)`` is ``toStartOfInterval(toDateTime(c), INTERVAL
n second)``, ...), so they can run on the real ClickHouse engine."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARD", "DATASOURCE", "PROVISIONING", "expand", "load", "queries"]

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "analysts.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "clickhouse.yaml"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "touchpoint-clickhouse"}

_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def load() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, SQL) of every query: panel targets, query variables, annotations."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["rawSql"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["query"]
    for annotation in dashboard["annotations"]["list"]:
        if "target" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["target"]["rawSql"]


def expand(
    sql: str,
    variables: Mapping[str, Sequence[str]],
    start: datetime,
    end: datetime,
    interval_s: int,
) -> str:
    """The SQL the plugin sends for this time range, step and choice of variables."""

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name.startswith("__"):
            return match.group(0)  # a macro, expanded below
        values = variables[name]
        if match.group(2) == "singlequote":
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
        if match.group(2) is not None:
            raise ValueError(f"format {match.group(2)!r} of ${name} is not expanded here")
        assert len(values) == 1, f"${name} has several values; give it a format"
        return values[0]

    def seconds(at: datetime) -> str:
        return f"toDateTime({int(at.timestamp())})"

    def millis(at: datetime) -> str:
        return f"fromUnixTimestamp64Milli({int(at.timestamp() * 1000)})"

    def macro(match: re.Match[str]) -> str:
        name, argument = match.group(1), (match.group(2) or "").strip()
        if name == "timeFilter":
            return f"{argument} >= {seconds(start)} AND {argument} <= {seconds(end)}"
        if name == "timeFilter_ms":
            return f"{argument} >= {millis(start)} AND {argument} <= {millis(end)}"
        if name == "dateFilter":
            return (
                f"{argument} >= toDate('{start:%Y-%m-%d}') AND "
                f"{argument} <= toDate('{end:%Y-%m-%d}')"
            )
        if name == "timeInterval":
            return f"toStartOfInterval(toDateTime({argument}), INTERVAL {interval_s} second)"
        if name == "timeInterval_ms":
            return (
                f"toStartOfInterval(toDateTime64({argument}, 3), "
                f"INTERVAL {interval_s * 1000} millisecond)"
            )
        simple = {
            "fromTime": seconds(start),
            "toTime": seconds(end),
            "fromTime_ms": millis(start),
            "toTime_ms": millis(end),
            "interval_s": str(interval_s),
        }
        if name in simple and not argument:
            return simple[name]
        raise ValueError(f"unknown macro $__{name}")

    return _MACRO.sub(macro, _VARIABLE.sub(variable, sql))
