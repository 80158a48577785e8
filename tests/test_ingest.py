"""Ingest, as the contract states it: touchpoints in, accepted events or dead letters out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.dead_letter import DeadLetter, Reason
from schemas.ingested import IngestedEvent, SourceRecord
from streams.app import ingest_rules
from streams.dedup import DuplicateWindow
from streams.ingest import ingest as run_ingest
from streams.ingest import triage
from streams.settings import Settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
RULES = ingest_rules(Settings())


def touchpoint(**fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": "e-1",
        "occurred_at": "2026-11-22T11:00:00Z",
        "type": "page_view",
        "identifiers": {"email": "ann@example.com"},
    }
    document.update(fields)
    return document


def ingest(
    value: bytes | dict[str, Any] | None,
    topic: str = "touchpoints.web",
    timestamp_ms: int | None = NOW_MS,
    rules: Any = RULES,
) -> IngestedEvent | DeadLetter:
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    record = SourceRecord(topic, 2, 40, timestamp_ms, b"key", raw, (("trace", b"abc"),))
    return run_ingest(record, rules, NOW)


def accepted(value: dict[str, Any], **kwargs: Any) -> IngestedEvent:
    outcome = ingest(value, **kwargs)
    assert isinstance(outcome, IngestedEvent), outcome
    return outcome


def rejected(value: bytes | dict[str, Any] | None, **kwargs: Any) -> DeadLetter:
    outcome = ingest(value, **kwargs)
    assert isinstance(outcome, DeadLetter), outcome
    return outcome


def test_a_valid_event_takes_its_channel_from_the_topic() -> None:
    event = accepted(touchpoint())
    assert event.channel == "web"
    assert event.occurred_at == datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
    assert event.flags == ()


def test_a_channel_given_must_match_the_topic_and_is_required_on_touchpoints_all() -> None:
    assert accepted(touchpoint(channel="web")).channel == "web"
    assert rejected(touchpoint(channel="sms")).reason is Reason.CHANNEL_MISMATCH
    assert rejected(touchpoint(), topic="touchpoints.all").reason is Reason.CHANNEL_REQUIRED
    assert accepted(touchpoint(channel="chat"), topic="touchpoints.all").channel == "chat"


BROKEN: list[tuple[str, bytes | dict[str, Any] | None, Reason]] = [
    ("no value", None, Reason.EMPTY_VALUE),
    ("not utf-8", b"\xff\xfe{}", Reason.NOT_UTF8),
    ("not json", b"{'single': 'quotes'}", Reason.NOT_JSON),
    ("json array", b"[1, 2]", Reason.NOT_OBJECT),
    ("json string", b'"event"', Reason.NOT_OBJECT),
    ("too large", touchpoint(properties={"blob": "x" * 70_000}), Reason.TOO_LARGE),
    ("no event_id", {k: v for k, v in touchpoint().items() if k != "event_id"}, Reason.MISSING_FIELD),
    ("no identifiers", {k: v for k, v in touchpoint().items() if k != "identifiers"}, Reason.MISSING_FIELD),
    ("type not a string", touchpoint(type=12), Reason.INVALID_FIELD),
    ("identifiers not an object", touchpoint(identifiers=["a"]), Reason.INVALID_FIELD),
    ("event_id too long", touchpoint(event_id="e" * 129), Reason.STRING_TOO_LONG),
    ("timestamp in words", touchpoint(occurred_at="yesterday"), Reason.INVALID_TIMESTAMP),
    ("timestamp without offset", touchpoint(occurred_at="2026-11-22T11:00:00"), Reason.INVALID_TIMESTAMP),
    ("timestamp a boolean", touchpoint(occurred_at=True), Reason.INVALID_TIMESTAMP),
    ("long nested string", touchpoint(properties={"a": {"b": ["x" * 5000]}}), Reason.STRING_TOO_LONG),
    ("21 identifiers", touchpoint(identifiers={f"x_k{i}": "v" for i in range(21)}), Reason.TOO_MANY_IDENTIFIERS),
    ("nps 11", touchpoint(survey={"metric": "nps", "score": 11}), Reason.SCORE_OUT_OF_RANGE),
    ("nps 7.5", touchpoint(survey={"metric": "nps", "score": 7.5}), Reason.SCORE_OUT_OF_RANGE),
    ("csat 0", touchpoint(survey={"metric": "csat", "score": 0}), Reason.SCORE_OUT_OF_RANGE),
    ("csat 8 of 7", touchpoint(survey={"metric": "csat", "score": 8, "scale_max": 7}), Reason.SCORE_OUT_OF_RANGE),
    ("ces 8", touchpoint(survey={"metric": "ces", "score": 8}), Reason.SCORE_OUT_OF_RANGE),
    ("unknown metric", touchpoint(survey={"metric": "wow", "score": 1}), Reason.INVALID_FIELD),
    ("bad channel", touchpoint(channel="Web!"), Reason.INVALID_CHANNEL),
    ("only placeholders", touchpoint(identifiers={"email": "null", "phone": "unknown"}), Reason.NO_USABLE_IDENTIFIER),
    ("schema version 2", touchpoint(schema_version=2), Reason.UNSUPPORTED_SCHEMA_VERSION),
]  # fmt: skip


@pytest.mark.parametrize(("why", "value", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
def test_every_broken_message_is_dead_lettered_with_its_reason(
    why: str, value: bytes | dict[str, Any] | None, reason: Reason
) -> None:
    letter = rejected(value)
    assert letter.reason is reason, letter.detail
    assert letter.detail


def test_a_dead_letter_keeps_the_original_bytes_key_headers_and_coordinates() -> None:
    raw = b'{"event_id": "e-9", "survey": {"metric": "nps", "score": 99}}'
    letter = rejected(raw)
    assert (letter.raw, letter.key, letter.headers) == (raw, b"key", (("trace", b"abc"),))
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "touchpoints.web", 2, 40,
    )  # fmt: skip
    assert letter.event_id == "e-9"
    headers = dict(letter.kafka_headers())
    assert headers["trace"] == b"abc"
    assert headers["touchpoint.dlq.reason"] == letter.reason.value.encode()
    assert headers["touchpoint.dlq.source_offset"] == b"40"


def test_rfc3339_offsets_and_epoch_milliseconds_name_the_same_instant() -> None:
    spellings = ["2026-11-22T11:00:00Z", "2026-11-22T12:00:00+01:00",
                 "2026-11-22T05:30:00-05:30", 1_795_345_200_000]  # fmt: skip
    instants = {accepted(touchpoint(occurred_at=s)).occurred_at for s in spellings}
    assert instants == {datetime(2026, 11, 22, 11, 0, tzinfo=UTC)}


def test_a_device_clock_ahead_by_90_seconds_is_corrected_and_flagged() -> None:
    sent_by_device = NOW + timedelta(seconds=90)
    event = accepted(touchpoint(sent_at=sent_by_device.isoformat()))
    assert event.clock_skew_ms == 90_000
    assert event.occurred_at == datetime(2026, 11, 22, 10, 58, 30, tzinfo=UTC)
    assert event.client_occurred_at == datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
    assert "clock_skew_corrected" in event.flags


def test_network_delay_within_the_tolerance_is_not_skew() -> None:
    event = accepted(touchpoint(sent_at=(NOW - timedelta(seconds=1)).isoformat()))
    assert event.clock_skew_ms == 0
    assert event.occurred_at == event.client_occurred_at


def test_events_far_in_the_future_or_past_are_flagged_not_dropped() -> None:
    future = (NOW + timedelta(hours=2)).isoformat()
    ancient = (NOW - timedelta(days=90)).isoformat()
    assert accepted(touchpoint(occurred_at=future)).flags == ("event_in_future",)
    assert accepted(touchpoint(occurred_at=ancient)).flags == ("event_too_old",)


def test_with_the_dead_letter_time_policy_they_are_dead_lettered() -> None:
    strict = ingest_rules(Settings(time_policy="dead_letter"))
    future = touchpoint(occurred_at=(NOW + timedelta(hours=2)).isoformat())
    ancient = touchpoint(occurred_at=(NOW - timedelta(days=90)).isoformat())
    assert rejected(future, rules=strict).reason is Reason.EVENT_IN_FUTURE
    assert rejected(ancient, rules=strict).reason is Reason.EVENT_TOO_OLD


def test_unknown_top_level_fields_are_ignored_for_forward_compatibility() -> None:
    assert accepted(touchpoint(brand_new_field={"x": 1})).event.event_id == "e-1"


def test_identifiers_are_normalised_and_removed_ones_are_recorded() -> None:
    event = accepted(touchpoint(identifiers={"email": " Ann@Example.COM ", "device_id": "0000",
                                             "shoe_size": "42"}))  # fmt: skip
    assert event.identifiers == {"email": "ann@example.com"}
    assert event.rejected_identifiers == {"device_id": "blocked", "shoe_size": "unknown_kind"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_ingest_never_raises_and_gives_exactly_one_answer(raw: bytes) -> None:
    outcome = ingest(raw)
    assert isinstance(outcome, IngestedEvent | DeadLetter)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*list(touchpoint()), "survey", "channel", "sent_at"]),
                       json_values, max_size=6))  # fmt: skip
def test_any_json_object_is_accepted_or_dead_lettered_with_a_known_reason(
    document: dict[str, Any],
) -> None:
    outcome = ingest({**touchpoint(), **document})
    if isinstance(outcome, DeadLetter):
        assert outcome.reason in set(Reason)
        assert outcome.reason is not Reason.PROCESSING_ERROR, outcome.detail


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["valid", "repeat", "broken"]), st.integers(0, 30)),
                max_size=60))  # fmt: skip
def test_triage_accounts_for_every_record(plan: list[tuple[str, int]]) -> None:
    records = []
    for offset, (kind, n) in enumerate(plan):
        value = b"{broken" if kind == "broken" else orjson.dumps(touchpoint(event_id=f"id-{n}"))
        records.append(SourceRecord("touchpoints.web", 0, offset, NOW_MS, None, value))
    result = triage(records, RULES, DuplicateWindow(10**9, 10**6), NOW)
    assert len(result.accepted) + len(result.duplicates) + len(result.dead_letters) == len(records)
    accepted_ids = [e.event.event_id for e in result.accepted]
    assert len(accepted_ids) == len(set(accepted_ids))
    assert {e.event.event_id for e in result.duplicates} <= set(accepted_ids)
