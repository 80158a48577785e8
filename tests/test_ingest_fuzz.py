"""Fuzzing the whole per-message path: whatever a producer sends, one outcome per message.

For any bytes, key, headers and record timestamp, ``triage`` gives each record exactly
one outcome (accepted, duplicate, or a dead letter with a reason of the vocabulary),
raises nothing, accounts for every record, and every accepted event carries its row,
serialised, holding what was validated. Every dead letter can be written to Kafka and
ClickHouse. The reference for "what was validated" is an independent strict parse of
the same bytes (orjson).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.clickhouse import DEAD_LETTER_COLUMNS, EVENT_COLUMN, EVENT_COLUMNS
from schemas.dead_letter import DeadLetter, Reason
from schemas.event import TouchpointEvent
from schemas.ingested import IngestedEvent, SourceRecord
from sinks.rows import dead_letter_row, event_row
from streams.domain.dedup import DuplicateWindow
from streams.domain.ingest import triage
from streams.runtime.app import ingest_rules
from streams.settings import Settings
from tests.hostile_input import (
    CORPUS,
    NOW_MS,
    base_event,
    encode,
    hostile_values,
    json_values,
    record_parts,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RULES = ingest_rules(Settings())
COLUMN = EVENT_COLUMN
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, telling -0.0 from 0.0 and 1 from 1.0 and true."""
    if isinstance(a, float) or isinstance(b, float):
        return (
            type(a) is type(b) and a == b and math.copysign(1.0, a) == math.copysign(1.0, b)  # type: ignore[arg-type]
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check_accepted(event: IngestedEvent, raw: bytes) -> None:
    """The row is serialised, re-readable, the row of this event, and holds what was sent."""
    assert isinstance(event.row, bytes) and event.row
    row = orjson.loads(event.row)
    assert isinstance(row, list) and len(row) == len(EVENT_COLUMNS)
    assert event.row == orjson.dumps(event_row(event))
    assert row[COLUMN["event_id"]] == event.event.event_id
    sent = orjson.loads(raw)  # an independent strict reading of the same bytes
    stored_properties = orjson.loads(row[COLUMN["properties"]])
    assert same_json(stored_properties, sent.get("properties") or {})
    assert row[COLUMN["event_id"]] == sent["event_id"]
    assert row[COLUMN["context"]] == (sent.get("context") or {})
    for text in (row[COLUMN["event_id"]], row[COLUMN["properties"]], *row[COLUMN["context"]]):
        text.encode("utf-8")  # orjson wrote it: valid UTF-8, no lone surrogate


def check_dead_letter(letter: DeadLetter, record: SourceRecord) -> None:
    """A reason of the vocabulary, the original bytes, and writable to Kafka and ClickHouse."""
    assert letter.reason in set(Reason)
    assert letter.reason is not Reason.PROCESSING_ERROR, letter.detail
    assert letter.detail
    assert (letter.raw, letter.key, letter.headers) == (
        record.value or b"",
        record.key,
        record.headers,
    )
    row = dead_letter_row(letter)
    assert len(row) == len(DEAD_LETTER_COLUMNS)
    for value in row:
        if isinstance(value, str):
            value.encode("utf-8")
    for name, value in row[DEAD_LETTER_COLUMNS.index("headers")]:
        name.encode("utf-8")
        assert isinstance(value, bytes)
    for name, header in letter.kafka_headers():
        name.encode("utf-8")
        assert isinstance(header, bytes)


def run(records: list[SourceRecord]) -> None:
    """Triage the records and check every outcome against its record."""
    result = triage(records, RULES, DuplicateWindow(10**12, 10**9), NOW)
    outcomes = len(result.accepted) + len(result.duplicates) + len(result.dead_letters)
    assert outcomes == len(records)
    by_offset = {r.offset: r for r in records}
    seen: list[int] = []
    for event in [*result.accepted, *result.duplicates]:
        assert event.source is by_offset[event.source.offset]
        check_accepted(event, event.source.value or b"")
        seen.append(event.source.offset)
    for letter in result.dead_letters:
        check_dead_letter(letter, by_offset[letter.source_offset])
        seen.append(letter.source_offset)
    assert sorted(seen) == sorted(by_offset)  # each record exactly once


def records_of(values: list[tuple[bytes | None, Any]]) -> list[SourceRecord]:
    return [
        SourceRecord("touchpoints.web", 0, offset, timestamp_ms, key, value, headers)
        for offset, (value, (key, headers, timestamp_ms)) in enumerate(values)
    ]


@settings(FUZZ, max_examples=80)
@given(st.lists(st.tuples(hostile_values, record_parts), min_size=1, max_size=6))
def test_any_batch_of_hostile_records_gets_one_outcome_per_record(
    values: list[tuple[bytes | None, Any]],
) -> None:
    run(records_of(values))


@FUZZ
@given(st.data())
def test_any_json_value_at_any_field_is_accepted_whole_or_dead_lettered(
    data: st.DataObject,
) -> None:
    field = data.draw(st.sampled_from(sorted(TouchpointEvent.model_fields)))
    value = data.draw(json_values)
    run(records_of([(encode(base_event(**{field: value})), (None, (), NOW_MS))]))


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_properties_of_any_json_value_round_trip_through_the_row_or_are_refused(
    properties: Any,
) -> None:
    document = base_event(properties={"p": properties})
    run(records_of([(encode(document), (None, (), NOW_MS))]))


@settings(max_examples=60, deadline=None)
@given(
    st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([1e308, 5e-324, -0.0, 2**64 - 1, -(2**63), 2**64, -(2**63) - 1])
)
def test_huge_and_tiny_numbers_are_stored_exactly_or_refused_with_a_reason(number: Any) -> None:
    document = base_event(properties={"n": number, "in": [number, {"x": number}]})
    result = triage(records_of([(encode(document), (None, (), NOW_MS))]), RULES, DuplicateWindow(10**12, 10**9), NOW)  # fmt: skip
    if isinstance(number, int) and not -(2**63) <= number <= 2**64 - 1:
        (letter,) = result.dead_letters
        assert letter.reason is Reason.INVALID_FIELD
        assert letter.detail.startswith("properties.n: integer outside the 64-bit range")
    else:
        (event,) = result.accepted
        stored = orjson.loads(orjson.loads(event.row)[COLUMN["properties"]])
        assert same_json(stored, {"n": number, "in": [number, {"x": number}]})


@pytest.mark.parametrize("spelling", [b"NaN", b"-NaN", b"nan", b"Infinity", b"-Infinity", b"+Infinity", b"inf", b"1e400", b"-1e400"])  # fmt: skip
@pytest.mark.parametrize("where", ["properties", "score", "wait"])
def test_nan_and_infinity_in_any_spelling_are_not_json(spelling: bytes, where: str) -> None:
    document = {
        "properties": base_event(properties={"mark": 1}),
        "score": base_event(survey={"metric": "csat", "mark": 1}),
        "wait": base_event(interaction={"mark": 1}),
    }[where]
    key = {"properties": b'"x":', "score": b'"score":', "wait": b'"wait_seconds":'}[where]
    raw = encode(document).replace(b'"mark":1', key + spelling)
    result = triage(records_of([(raw, (None, (), NOW_MS))]), RULES, DuplicateWindow(10**12, 10**9), NOW)  # fmt: skip
    assert [d.reason for d in result.dead_letters] == [Reason.NOT_JSON]


@FUZZ
@given(st.data())
def test_with_a_repeated_key_the_stored_row_holds_the_value_that_was_validated(
    data: st.DataObject,
) -> None:
    document = base_event(properties={"k": 1}, context={"region": "eu"})
    where = data.draw(st.sampled_from(["top", "properties", "context", "identifiers"]))
    first, last = data.draw(json_values), data.draw(json_values)
    raw = encode(document)
    if where == "top":
        raw = b'{"properties":' + encode(first) + b"," + raw[1:-1] + b',"properties":' + encode(last) + b"}"  # fmt: skip
    else:
        head = f'"{where}":{{'.encode()
        raw = raw.replace(head, head + b'"dup":' + encode(first) + b',"dup":' + encode(last) + b",", 1)  # fmt: skip
    run(records_of([(raw, (None, (), NOW_MS))]))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.sampled_from(["object", "array"]))
def test_nesting_at_any_depth_is_accepted_to_the_limit_or_too_deep_never_a_crash(
    depth: int, kind: str
) -> None:
    """``depth`` levels inside ``properties``, which is itself the second level."""
    opener, leaf, closer = (b'{"n":', b"{}", b"}") if kind == "object" else (b"[", b"[]", b"]")
    inner = opener * (depth - 1) + leaf + closer * (depth - 1)
    raw = encode(base_event(properties={"mark": 1})).replace(b'{"mark":1}', inner)
    result = triage(records_of([(raw, (None, (), NOW_MS))]), RULES, DuplicateWindow(10**12, 10**9), NOW)  # fmt: skip
    if kind == "array":  # properties must be an object
        expected = Reason.INVALID_FIELD if depth + 1 <= 32 else Reason.TOO_DEEP
        assert [d.reason for d in result.dead_letters] == [expected]
    elif depth + 1 <= 32:
        assert len(result.accepted) == 1
    else:
        assert [d.reason for d in result.dead_letters] == [Reason.TOO_DEEP]


@pytest.mark.parametrize(("name", "value", "outcome"), CORPUS, ids=[c[0] for c in CORPUS])
def test_the_hostile_corpus_gets_the_outcome_it_is_listed_with(
    name: str, value: bytes | None, outcome: str
) -> None:
    record = SourceRecord("touchpoints.web", 0, 0, NOW_MS, b"\xff", value, (("\udc80", b"\x00"),))
    result = triage([record], RULES, DuplicateWindow(10**12, 10**9), NOW)
    if outcome == "accepted":
        (event,) = result.accepted
        check_accepted(event, value or b"")
    else:
        (letter,) = result.dead_letters
        assert f"dead:{letter.reason.value}" == outcome, letter.detail
        check_dead_letter(letter, record)
