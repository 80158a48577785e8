"""Metric names as Prometheus exposes them, and as the README, dashboards and rules use them.

A counter family ``touchpoint_x`` is queried as ``touchpoint_x_total``, a histogram
``touchpoint_h`` as ``touchpoint_h_bucket``, ``_sum`` and ``_count``; a gauge by its
own name. Every name a person or a panel can write is a *sample name*.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "DASHBOARDS",
    "PROMETHEUS_BUILTINS",
    "README",
    "RULES",
    "dashboard_expressions",
    "documented_metric_names",
    "exported_families",
    "promql_metric_names",
    "rule_expressions",
    "sample_names",
]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"

#: Series Prometheus makes itself for every scrape target (not in any exposition).
PROMETHEUS_BUILTINS = frozenset({"up"})

#: Grafana's interval variables, replaced by a plain duration before parsing.
_GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}

#: The project's own names and the process collector's.
_NAME = re.compile(r"`((?:touchpoint|process)_[a-z0-9_]+)(?:\{[^`]*\})?`")

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


def exported_families(exposition: str) -> dict[str, str]:
    """Family name -> type (counter, gauge, histogram, ...) of an exposition."""
    return {f.name: f.type for f in text_string_to_metric_families(exposition)}


def sample_names(exposition: str) -> set[str]:
    """Every name a query can use: each family's sample names (``_created`` left out,
    it is a detail of the client library)."""
    names: set[str] = set()
    for family, kind in exported_families(exposition).items():
        names.update(family + s for s in _SUFFIXES.get(kind, ("",)))
    return names


def documented_metric_names(text: str | None = None) -> set[str]:
    """The metric names the README writes in backticks."""
    return set(_NAME.findall(README.read_text() if text is None else text))


def promql_metric_names(expression: str) -> set[str]:
    """Metric names a PromQL expression selects (parsed, so a typo in it fails here)."""
    for variable, value in _GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)
        for attribute in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attribute, None)
            if isinstance(child, promql_parser.Expr):
                visit(child)
        for child in getattr(node, "args", None) or ():
            if isinstance(child, promql_parser.Expr):
                visit(child)

    visit(promql_parser.parse(expression))
    return found


def rule_expressions() -> dict[str, str]:
    """Alert name -> PromQL expression of every rule in the shipped rule file."""
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule["expr"] for group in document["groups"] for rule in group["rules"]}


def dashboard_expressions() -> dict[str, str]:
    """``dashboard file / panel title #n`` -> PromQL of every target on a Prometheus
    datasource in the shipped dashboards (targets on ClickHouse are SQL)."""
    found: dict[str, str] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text()).get("panels", []):
            for n, target in enumerate(panel.get("targets", [])):
                source = target.get("datasource") or panel.get("datasource") or {}
                if source.get("type") == "prometheus":
                    found[f"{path.name} / {panel.get('title')} #{n}"] = target["expr"]
    return found
