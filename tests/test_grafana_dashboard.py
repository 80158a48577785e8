"""The analysts' Grafana dashboard and its ClickHouse data source, as files: the uids
and data source references hold together, every variable a query names exists, the
time picker reaches every panel, and the password comes from the environment.
``tests/integration/test_grafana_dashboard_sql.py`` runs every query."""

from __future__ import annotations

import re

import yaml

from tests.grafana_dashboard import DATASOURCE, PROVISIONING, load, queries

MACROS = {"timeFilter", "timeFilter_ms", "dateFilter", "timeInterval", "timeInterval_ms",
          "fromTime", "toTime", "fromTime_ms", "toTime_ms", "interval_s"}  # fmt: skip


def test_the_provisioned_data_source_is_the_one_every_panel_names() -> None:
    provisioning = yaml.safe_load(PROVISIONING.read_text(encoding="utf-8"))
    assert provisioning["apiVersion"] == 1
    [source] = provisioning["datasources"]
    assert {"type": source["type"], "uid": source["uid"]} == DATASOURCE
    assert source["jsonData"]["defaultDatabase"] == "touchpoints"
    assert source["jsonData"]["protocol"] in ("http", "native")


def test_the_password_comes_from_the_environment_and_nothing_secret_is_written() -> None:
    text = PROVISIONING.read_text(encoding="utf-8")
    [source] = yaml.safe_load(text)["datasources"]
    assert list(source["secureJsonData"]) == ["password"]
    assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*\}", source["secureJsonData"]["password"])
    assert "password" not in source["jsonData"]
    assert "basicAuthPassword" not in source


def test_every_panel_query_and_annotation_uses_that_data_source() -> None:
    dashboard = load()
    assert dashboard["uid"] == "touchpoint-analysts"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["editorType"] == "sql" and target["rawSql"].strip()
            series = panel["type"] == "timeseries"
            assert (target["format"], target["queryType"]) == (
                (0, "timeseries") if series else (1, "table")
            ), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    annotations = [a for a in dashboard["annotations"]["list"] if "target" in a]
    assert [a["datasource"] for a in annotations] == [DATASOURCE]


def test_the_time_picker_reaches_every_panel_and_time_series_step_with_it() -> None:
    dashboard = load()
    assert dashboard["time"] == {"from": "now-14d", "to": "now"}
    assert "timepicker" in dashboard
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            sql = target["rawSql"]
            assert re.search(r"\$__(timeFilter|fromTime|toTime)", sql), panel["title"]
            if panel["type"] == "timeseries":
                assert "$__timeInterval(" in sql and " AS time" in sql, panel["title"]


def test_every_variable_a_query_names_exists_and_the_segment_variables_are_there() -> None:
    dashboard = load()
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert len(names) == len(set(names))
    assert {"database", "channel", "stage", "segment_kind", "segment_value"} <= set(names)
    for where, sql in queries(dashboard):
        for braced, _format, bare in re.findall(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)", sql):
            name = braced or bare
            if name.startswith("__"):
                assert name[2:] in MACROS, f"{where}: unknown macro {name}"
            else:
                assert name in names, f"{where}: no variable {name}"
        assert "${database}." in sql or "$database." in sql, f"{where} names no database"
