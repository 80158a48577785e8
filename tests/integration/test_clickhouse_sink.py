"""The ClickHouse schema and sink against the real ClickHouse engine.

Also the contract test of habit 4: the pydantic event model, the JSON Schema and the
DDL describe the same fields.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from schemas.clickhouse import DEAD_LETTER_COLUMNS, EVENT_COLUMNS, TABLE_COLUMNS, migrations
from schemas.dead_letter import DeadLetter, Reason
from schemas.event import TouchpointEvent, event_json_schema
from schemas.ingested import IngestedEvent, SourceRecord
from sinks.clickhouse import ClickHouseSink
from sinks.migrations import migrate
from sinks.rows import dead_letter_row, event_row
from streams.domain.ingest import ingest
from streams.runtime.app import ingest_rules
from streams.settings import Settings

pytestmark = pytest.mark.integration

#: Where each field of the event model lands in ``events``; a new field must be added here.
FIELD_COLUMNS: dict[str, tuple[str, ...]] = {
    "event_id": ("event_id",),
    "occurred_at": ("occurred_at", "client_occurred_at"),
    "type": ("type",),
    "identifiers": ("identifiers", "rejected_identifiers"),
    "channel": ("channel",),
    "sent_at": ("sent_at",),
    "schema_version": ("schema_version",),
    "source": ("source",),
    "session_id": ("session_id",),
    "case_id": ("case_id",),
    "survey": ("survey_metric", "survey_score", "survey_scale_max", "survey_comment"),
    "interaction": (
        "interaction_direction",
        "interaction_queue",
        "interaction_agent_id",
        "wait_seconds",
        "handle_seconds",
        "transferred",
        "escalated",
        "resolved",
    ),
    "commerce": ("order_id", "amount", "currency"),
    "context": ("context",),
    "properties": ("properties",),
}

#: Columns CONTRACT section 3 promises analysts.
CONTRACT_EVENT_COLUMNS = {
    "event_id", "occurred_at", "received_at", "channel", "type", "customer_id", "case_id",
    "survey_metric", "survey_score", "context", "properties", "source_topic",
    "source_partition", "source_offset",
}  # fmt: skip
CONTRACT_DEAD_LETTER_COLUMNS = {
    "source_topic",
    "source_partition",
    "source_offset",
    "reason",
    "raw",
}

#: The other analysts' views of CONTRACT section 3 and the columns they promise.
CONTRACT_VIEWS: dict[str, set[str]] = {
    "customer_360": {
        "customer_id", "identifiers", "first_seen", "last_seen", "touchpoints", "channels",
        "journey_stage", "last_nps", "last_csat", "last_ces", "effort_index", "open_cases",
        "updated_at",
    },
    "customer_aliases": {"identifier_kind", "identifier_value", "customer_id", "updated_at"},
    "identity_merges": {"merged_from", "merged_into", "reason", "at"},
    "alerts": {"alert_id", "type", "subject", "fired_at", "payload", "delivery_status"},
}  # fmt: skip

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def client(clickhouse_client: Any) -> Any:
    return clickhouse_client


def _event(event_id: str, offset: int, **extra: Any) -> IngestedEvent:
    document = {
        "event_id": event_id,
        "occurred_at": "2026-11-22T11:59:00+01:00",
        "type": "survey_response",
        "identifiers": {"email": "A@Example.com"},
        "survey": {"metric": "nps", "score": 3, "comment": "slow"},
        "interaction": {"wait_seconds": 30, "transferred": True},
        "commerce": {"order_id": "o1", "amount": 12.5, "currency": "eur"},
        "context": {"region": "eu"},
        "properties": {"nested": {"x": [1, 2]}},
        **extra,
    }
    record = SourceRecord("touchpoints.web", 3, offset, None, b"k", orjson.dumps(document))
    outcome = ingest(record, ingest_rules(Settings()), NOW)
    assert isinstance(outcome, IngestedEvent), outcome
    return outcome


def _rows(events: list[IngestedEvent], dead_letters: list[DeadLetter]) -> dict[str, list[Any]]:
    return {
        "events_store": [event_row(e) for e in events],
        "dead_letters_store": [dead_letter_row(d) for d in dead_letters],
    }


def _dead_letter(offset: int) -> DeadLetter:
    record = SourceRecord(
        "touchpoints.sms", 0, offset, 1_700_000_000_000, None, b"\xff\x00not json", (("h", b"v"),)
    )
    outcome = ingest(record, ingest_rules(Settings()), NOW)
    assert isinstance(outcome, DeadLetter)
    return outcome


async def _count(client: Any, database: str, view: str) -> int:
    result = await client.query(f"SELECT count() FROM {database}.{view}")
    return int(result.result_rows[0][0])


async def test_every_event_field_has_a_column_and_the_insert_order_matches_the_ddl(
    client: Any, clickhouse_database: str
) -> None:
    described = await client.query(f"DESCRIBE TABLE {clickhouse_database}.events_store")
    ddl_columns = tuple(row[0] for row in described.result_rows)
    assert ddl_columns == EVENT_COLUMNS
    assert set(FIELD_COLUMNS) == set(TouchpointEvent.model_fields)
    assert set(event_json_schema()["properties"]) == set(TouchpointEvent.model_fields)
    mapped = {c for columns in FIELD_COLUMNS.values() for c in columns}
    assert mapped <= set(EVENT_COLUMNS)
    view = await client.query(f"DESCRIBE TABLE {clickhouse_database}.events")
    assert {row[0] for row in view.result_rows} >= CONTRACT_EVENT_COLUMNS
    dl = await client.query(f"DESCRIBE TABLE {clickhouse_database}.dead_letters_store")
    assert tuple(row[0] for row in dl.result_rows) == DEAD_LETTER_COLUMNS
    dl_view = await client.query(f"DESCRIBE TABLE {clickhouse_database}.dead_letters")
    assert {row[0] for row in dl_view.result_rows} >= CONTRACT_DEAD_LETTER_COLUMNS


@pytest.mark.parametrize("table", sorted(TABLE_COLUMNS))
async def test_insert_column_order_matches_the_ddl(
    client: Any, clickhouse_database: str, table: str
) -> None:
    described = await client.query(f"DESCRIBE TABLE {clickhouse_database}.{table}")
    assert tuple(row[0] for row in described.result_rows) == TABLE_COLUMNS[table]


@pytest.mark.parametrize("view", sorted(CONTRACT_VIEWS))
async def test_contract_views_have_the_promised_columns(
    client: Any, clickhouse_database: str, view: str
) -> None:
    described = await client.query(f"DESCRIBE TABLE {clickhouse_database}.{view}")
    assert {row[0] for row in described.result_rows} >= CONTRACT_VIEWS[view]


async def test_migrate_twice_applies_each_version_once(
    client: Any, clickhouse_database: str
) -> None:
    report = await migrate(client, clickhouse_database)
    assert report.applied == ()
    assert report.already_applied == tuple(m.version for m in migrations())
    assert report.changed == ()


async def test_stored_event_reads_back_with_types_and_normalised_values(
    client: Any, clickhouse_database: str
) -> None:
    sink = ClickHouseSink(client, clickhouse_database, linger_s=0.05)
    await sink.start()
    stored = asyncio.Event()
    await sink.add(_rows([_event("e-1", 10)], [_dead_letter(7)]), stored.set, token="t:0:7-10")
    await asyncio.wait_for(stored.wait(), 30)
    await sink.stop()

    rows = (
        await client.query(
            f"SELECT event_id, occurred_at, channel, identifiers, survey_metric, survey_score, "
            f"survey_scale_max, transferred, currency, context, properties, source_partition, "
            f"source_offset FROM {clickhouse_database}.events"
        )
    ).result_rows
    # clickhouse-connect gives UTC wall time for a column in the server's own zone
    row = [(r[0], r[1].replace(tzinfo=r[1].tzinfo or UTC), *r[2:]) for r in rows]
    assert row == [
        (
            "e-1",
            datetime(2026, 11, 22, 10, 59, tzinfo=UTC),
            "web",
            {"email": "a@example.com"},
            "nps",
            3.0,
            10,
            True,
            "EUR",
            {"region": "eu"},
            '{"nested":{"x":[1,2]}}',
            3,
            10,
        )
    ]
    letters = (
        await client.query(
            f"SELECT reason, hex(raw), headers, source_topic, source_offset "
            f"FROM {clickhouse_database}.dead_letters"
        )
    ).result_rows
    assert len(letters) == 1
    reason, raw_hex, headers, topic, offset = letters[0]
    assert (reason, topic, offset) == (Reason.NOT_UTF8.value, "touchpoints.sms", 7)
    assert bytes.fromhex(raw_hex) == b"\xff\x00not json"  # the original bytes, exactly
    assert [(h["name"], h["value"]) for h in headers] == [("h", "v")]  # named tuple -> dict


async def test_retried_insert_with_the_same_token_stores_rows_once(
    client: Any, clickhouse_database: str
) -> None:
    events = [_event(f"e-{i}", i) for i in range(50)]
    for _attempt in range(2):  # the same batch again, as after a failed acknowledgement
        sink = ClickHouseSink(client, clickhouse_database, linger_s=0.01)
        await sink.start()
        await sink.add(_rows(events, []), lambda: None, token="touchpoints.web:3:0-49")
        await sink.stop()
    raw_rows = await _count(client, clickhouse_database, "events_store")
    assert raw_rows == 50


async def test_replayed_events_under_another_token_are_not_seen_twice_by_analysts(
    client: Any, clickhouse_database: str
) -> None:
    sink = ClickHouseSink(client, clickhouse_database, linger_s=0.01)
    await sink.start()
    await sink.add(_rows([_event(f"e-{i}", i) for i in range(20)], []), lambda: None, token="a")
    await sink.flush()
    # a replay after a crash starts at the last commit, so batch boundaries differ
    await sink.add(_rows([_event(f"e-{i}", i) for i in range(10, 30)], []), lambda: None, token="b")
    await sink.stop()

    assert await _count(client, clickhouse_database, "events") == 30
    assert await _count(client, clickhouse_database, "events_store") == 40


async def test_callback_runs_only_after_rows_are_queryable(
    client: Any, clickhouse_database: str
) -> None:
    sink = ClickHouseSink(client, clickhouse_database, linger_s=0.2, batch_rows=1000)
    await sink.start()
    counts: list[int] = []

    def on_stored() -> None:
        counts.append(-1)

    await sink.add(_rows([_event("e-x", 1)], []), on_stored, token="x")
    assert counts == []  # lingering: not stored yet
    await sink.flush()
    assert counts == [-1]
    assert await _count(client, clickhouse_database, "events") == 1
    await sink.stop()


async def test_a_batch_larger_than_one_native_block_is_stored_whole(
    client: Any, clickhouse_database: str
) -> None:
    template = _event("big-0", 0)
    events = [
        IngestedEvent(**{**{f: getattr(template, f) for f in template.__slots__},
                         "event": template.event.model_copy(update={"event_id": f"big-{i}"})})
        for i in range(30_000)
    ]  # fmt: skip
    sink = ClickHouseSink(client, clickhouse_database, batch_rows=50_000, linger_s=0.05)
    await sink.start()
    await sink.add(_rows(events, []), lambda: None, token="big")
    await sink.stop()
    assert await _count(client, clickhouse_database, "events") == 30_000
