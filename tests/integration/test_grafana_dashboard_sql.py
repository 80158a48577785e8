"""Every query of the analysts' Grafana dashboard runs on the real ClickHouse engine
against a migrated database, with the time macros expanded to a concrete range and the
variables to concrete choices, so a broken query fails here rather than in Grafana.
A few rows are stored first, so the queries also return something."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.grafana_dashboard import expand, load, queries

pytestmark = pytest.mark.integration

END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
START = END - timedelta(days=14)
CHOICES = {
    "channel": ["web", "call_center"],
    "stage": ["support", "usage"],
    "segment_kind": ["region"],
    "segment_value": ["eu-west", "uk"],
}


async def test_every_panel_variable_and_annotation_query_runs(
    clickhouse_client: Any, clickhouse_database: str
) -> None:
    db = clickhouse_database
    at = (END - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    await clickhouse_client.command(
        f"INSERT INTO {db}.events_store (event_id, occurred_at, received_at, channel, type, "
        "customer_id, case_id, survey_metric, survey_score, journey_stage, transferred) VALUES "
        f"('a', '{at}', '{at}', 'call_center', 'call', 'c1', 'k1', NULL, NULL, 'support', true), "
        f"('b', '{at}', '{at}', 'call_center', 'survey_response', 'c1', 'k1', 'nps', 3, "
        "'support', NULL)"
    )
    variables = {"database": [db], **CHOICES}
    ran = []
    for where, sql in queries(load()):
        expanded = expand(sql, variables, START, END, 3600)
        assert "$" not in expanded, f"{where}: left unexpanded:\n{expanded}"
        try:
            result = await clickhouse_client.query(expanded)
        except Exception as exc:
            raise AssertionError(f"{where} fails on ClickHouse:\n{expanded}\n{exc}") from exc
        ran.append((where, len(result.result_rows)))
    assert len(ran) == len(list(queries(load())))
    returned = dict(ran)
    assert returned["panel 1 'What the range covers' A"] == 1
    assert returned["panel 11 'Moves between journey stages' A"] == 0
