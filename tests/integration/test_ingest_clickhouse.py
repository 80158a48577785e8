"""Everything ingest accepts can be stored, and so can every dead letter.

Hostile input (the corpus of ``tests/hostile_input.py`` and a hypothesis sample) goes
through ``triage``; the accepted rows, exactly as the ingest agent forwards them, and
the dead letters go through the real sink into the real ClickHouse engine, and come
back equal: ids, counts, every column, the properties JSON byte for byte, the dead
letters' raw bytes, keys and headers.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.clickhouse import DEAD_LETTER_COLUMNS, EVENT_COLUMNS
from schemas.dead_letter import Reason, utf8_text
from schemas.ingested import SourceRecord
from sinks.clickhouse import ClickHouseSink
from sinks.rows import dead_letter_row, to_ms
from streams.domain.dedup import DuplicateWindow
from streams.domain.ingest import Triage, triage
from streams.runtime.app import ingest_rules
from streams.settings import Settings
from tests.hostile_input import CORPUS, NOW_MS, hostile_values, record_parts

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RULES = ingest_rules(Settings())
_TIMES = {"occurred_at", "client_occurred_at", "sent_at", "received_at"}
#: Every column of ``events_store``, times as epoch milliseconds like the rows hold them.
_EVENT_SELECT = ", ".join(
    f"toUnixTimestamp64Milli({c})" if c in _TIMES else c for c in EVENT_COLUMNS
)
_DEAD_LETTER_SELECT = (
    "source_offset, toUnixTimestamp64Milli(source_timestamp), reason, detail, event_id, "
    "hex(key), hex(raw), arrayMap(h -> h.1, headers), arrayMap(h -> hex(h.2), headers)"
)
_partitions = itertools.count(1)


def same(a: Any, b: Any) -> bool:
    """Equal, telling -0.0 from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


async def store_and_read_back(client: Any, database: str, records: list[SourceRecord]) -> Triage:
    """Triage ``records`` (all of one partition), store the outcome through the sink, and
    check that ClickHouse gives back what was stored."""
    partition = records[0].partition
    result = triage(records, RULES, DuplicateWindow(10**12, 10**9), NOW)
    assert len(result.accepted) + len(result.duplicates) + len(result.dead_letters) == len(records)
    rows = [orjson.loads(e.row) for e in result.accepted]  # what the stitch agent receives
    letters = [dead_letter_row(d) for d in result.dead_letters]

    sink = ClickHouseSink(client, database, linger_s=0.01)
    await sink.start()
    stored = asyncio.Event()
    await sink.add(
        {"events_store": rows, "dead_letters_store": letters},
        stored.set,
        token=f"hostile:{partition}",
    )
    await sink.stop()
    assert stored.is_set()

    events = await client.query(
        f"SELECT {_EVENT_SELECT} FROM {database}.events_store "
        f"WHERE source_partition = {partition} ORDER BY source_offset"
    )
    back = [list(r) for r in events.result_rows]
    assert len(back) == len(rows)
    for expected, got in zip(rows, back, strict=True):
        for column, want, have in zip(EVENT_COLUMNS, expected, got, strict=True):
            assert same(want, have), (column, want, have)
        properties = got[EVENT_COLUMNS.index("properties")]
        assert orjson.loads(properties) == orjson.loads(expected[EVENT_COLUMNS.index("properties")])

    dead = await client.query(
        f"SELECT {_DEAD_LETTER_SELECT} FROM {database}.dead_letters_store "
        f"WHERE source_partition = {partition} ORDER BY source_offset"
    )
    assert len(dead.result_rows) == len(result.dead_letters)
    column = {name: i for i, name in enumerate(DEAD_LETTER_COLUMNS)}
    for letter, row, got in zip(result.dead_letters, letters, dead.result_rows, strict=True):
        offset, stamp, reason, detail, event_id, key, raw, names, values = got
        assert (offset, reason, detail) == (letter.source_offset, letter.reason.value, utf8_text(letter.detail))  # fmt: skip
        assert event_id == letter.event_id
        assert bytes.fromhex(raw) == letter.raw
        assert (None if key is None else bytes.fromhex(key)) == letter.key
        assert names == [utf8_text(n) for n, _ in letter.headers]
        assert [bytes.fromhex(v) for v in values] == [v for _, v in letter.headers]
        expected_stamp = row[column["source_timestamp"]]
        assert stamp == (None if expected_stamp is None else to_ms(expected_stamp))
    return result


async def test_the_hostile_corpus_is_stored_and_reads_back_equal(
    clickhouse_client: Any, clickhouse_database: str
) -> None:
    partition = next(_partitions)
    records = [
        SourceRecord(
            "touchpoints.web", partition, offset, NOW_MS, b"\xff\x00key", value,
            (("\udcff", b"\x00\xff"), ("trace", b"abc")),
        )
        for offset, (_, value, _) in enumerate(CORPUS)
    ]  # fmt: skip
    result = await store_and_read_back(clickhouse_client, clickhouse_database, records)
    outcomes = {r.offset: "accepted" for r in (e.source for e in result.accepted)}
    outcomes |= {d.source_offset: f"dead:{d.reason.value}" for d in result.dead_letters}
    assert [outcomes[i] for i in range(len(CORPUS))] == [outcome for _, _, outcome in CORPUS]
    assert len(result.accepted) == [o for _, _, o in CORPUS].count("accepted") > 10
    assert {d.reason for d in result.dead_letters} >= {
        Reason.NOT_JSON, Reason.NOT_UTF8, Reason.TOO_DEEP, Reason.INVALID_FIELD,
        Reason.SCHEMA_REGISTRY_FRAMING, Reason.STRING_TOO_LONG, Reason.EMPTY_VALUE,
    }  # fmt: skip


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.tuples(hostile_values, record_parts), min_size=1, max_size=12))
async def test_a_hypothesis_sample_of_hostile_records_is_stored_and_reads_back_equal(
    clickhouse_client: Any, clickhouse_database: str, values: list[tuple[bytes | None, Any]]
) -> None:
    partition = next(_partitions)  # each example apart from the others in the same tables
    records = [
        SourceRecord("touchpoints.web", partition, offset, timestamp_ms, key, value, headers)
        for offset, (value, (key, headers, timestamp_ms)) in enumerate(values)
    ]
    # event ids repeat across examples; the ReplacingMergeTree would collapse them
    await clickhouse_client.command(f"SYSTEM STOP MERGES {clickhouse_database}.events_store")
    await store_and_read_back(clickhouse_client, clickhouse_database, records)
