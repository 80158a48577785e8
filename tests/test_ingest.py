"""Ingest, as the contract states it: touchpoints in, accepted events or dead letters out.

Every record gets exactly one answer. A valid event is accepted with its channel taken
from the topic, its identifiers normalised and its event time corrected for a device
clock that runs fast or slow; everything else becomes a dead letter with one reason
from the :class:`Reason` vocabulary and the original bytes, key and headers.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.domain.identifiers as identifiers_module
import streams.domain.ingest as ingest_module
from schemas.clickhouse import EVENT_COLUMNS
from schemas.dead_letter import DeadLetter, Reason
from schemas.event import EPOCH_MS_MINIMUM, LATEST_MS
from schemas.ingested import IngestedEvent, SourceRecord
from sinks.rows import event_row
from streams.domain.dedup import DuplicateWindow
from streams.domain.ingest import IngestRules, triage
from streams.domain.ingest import ingest as run_ingest
from streams.runtime.app import ingest_rules
from streams.settings import Settings

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
ELEVEN_UTC = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
RULES = ingest_rules(Settings())
HEADERS = (("trace", b"abc"), ("producer", b"checkout"))


def touchpoint(**fields: Any) -> dict[str, Any]:
    """A valid web page view; keyword arguments add or replace fields."""
    document: dict[str, Any] = {
        "event_id": "e-1",
        "occurred_at": "2026-11-22T11:00:00Z",
        "type": "page_view",
        "identifiers": {"email": "ann@example.com"},
    }
    document.update(fields)
    return document


def without(field: str) -> dict[str, Any]:
    return {k: v for k, v in touchpoint().items() if k != field}


def record(
    value: bytes | dict[str, Any] | None,
    topic: str = "touchpoints.web",
    timestamp_ms: int | None = NOW_MS,
) -> SourceRecord:
    raw = encode(value) if isinstance(value, dict) else value
    return SourceRecord(topic, 2, 40, timestamp_ms, b"key", raw, HEADERS)


def encode(document: dict[str, Any]) -> bytes:
    """JSON of ``document``; the standard library writes the integers orjson will not."""
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()


def ingest(
    value: bytes | dict[str, Any] | None,
    topic: str = "touchpoints.web",
    timestamp_ms: int | None = NOW_MS,
    rules: IngestRules = RULES,
) -> IngestedEvent | DeadLetter:
    return run_ingest(record(value, topic, timestamp_ms), rules, NOW)


def accepted(value: bytes | dict[str, Any], **kwargs: Any) -> IngestedEvent:
    outcome = ingest(value, **kwargs)
    assert isinstance(outcome, IngestedEvent), outcome
    return outcome


def rejected(value: bytes | dict[str, Any] | None, **kwargs: Any) -> DeadLetter:
    outcome = ingest(value, **kwargs)
    assert isinstance(outcome, DeadLetter), outcome
    return outcome


def rules_with(**settings: Any) -> IngestRules:
    return ingest_rules(Settings(**settings))


# --- accepted events -----------------------------------------------------------------


def test_a_valid_event_is_accepted_with_its_channel_from_the_topic() -> None:
    event = accepted(touchpoint(), topic="touchpoints.call_center")
    assert event.channel == "call_center"
    assert event.event.event_id == "e-1"
    assert event.occurred_at == ELEVEN_UTC
    assert event.identifiers == {"email": "ann@example.com"}
    assert event.flags == ()
    assert event.received_at == NOW
    assert event.source == record(touchpoint(), topic="touchpoints.call_center")


def test_a_channel_nobody_listed_is_accepted_as_itself() -> None:
    assert accepted(touchpoint(), topic="touchpoints.kiosk").channel == "kiosk"


def test_a_channel_given_must_equal_the_topics_channel() -> None:
    assert accepted(touchpoint(channel="web")).channel == "web"
    assert rejected(touchpoint(channel="sms")).reason is Reason.CHANNEL_MISMATCH


def test_on_touchpoints_all_the_channel_is_required_and_taken_from_the_event() -> None:
    assert rejected(touchpoint(), topic="touchpoints.all").reason is Reason.CHANNEL_REQUIRED
    assert accepted(touchpoint(channel="chat"), topic="touchpoints.all").channel == "chat"


def test_a_channel_with_a_trailing_newline_is_not_a_channel() -> None:
    # "[a-z0-9_]+" means the whole value; a newline must not slip into the channel dimension
    on_all = rejected(touchpoint(channel="chat\n"), topic="touchpoints.all")
    assert on_all.reason is Reason.INVALID_CHANNEL
    assert rejected(touchpoint(channel="web\n")).reason is Reason.INVALID_CHANNEL


def test_unknown_top_level_and_nested_fields_are_ignored_for_forward_compatibility() -> None:
    event = accepted(
        touchpoint(brand_new_field={"x": 1}, survey={"metric": "nps", "score": 9, "wave": 3})
    )
    assert event.event.event_id == "e-1"
    assert event.event.survey is not None and event.event.survey.score == 9
    assert not hasattr(event.event, "brand_new_field")


def test_optional_fields_sent_as_null_mean_absent() -> None:
    # Many serialisers write absent optional fields as null; the JSON Schema allows it.
    optional = ["channel", "sent_at", "source", "session_id", "case_id", "survey", "interaction", "commerce"]  # fmt: skip
    event = accepted(touchpoint(**dict.fromkeys(optional)))
    assert event.event.sent_at is None
    assert event.clock_skew_ms == 0


def test_a_full_event_keeps_every_contract_field() -> None:
    event = accepted(
        touchpoint(
            channel="web",
            sent_at="2026-11-22T12:00:00Z",
            schema_version=1,
            source="checkout-service",
            session_id="s-1",
            case_id="c-1",
            survey={"metric": "csat", "score": 4, "scale_max": 5, "comment": "ok"},
            interaction={
                "direction": "inbound",
                "queue": "billing",
                "agent_id": "a-7",
                "wait_seconds": 30,
                "handle_seconds": 240.5,
                "transferred": False,
                "escalated": False,
                "resolved": True,
            },
            commerce={"order_id": "o-1", "amount": 12.5, "currency": "EUR"},
            context={"region": "eu", "segment": "smb"},
            properties={"path": "/pricing", "nested": {"list": [1, "two", None]}},
        )
    )
    assert event.event.case_id == "c-1"
    assert event.event.interaction is not None and event.event.interaction.resolved is True
    assert event.event.commerce is not None and event.event.commerce.currency == "EUR"
    assert event.event.context == {"region": "eu", "segment": "smb"}
    assert event.event.properties["nested"] == {"list": [1, "two", None]}


def test_identifiers_are_normalised_and_the_removed_ones_are_recorded() -> None:
    event = accepted(
        touchpoint(identifiers={"email": " Ann@Example.COM ", "device_id": "0000", "shoe_size": "42"})
    )  # fmt: skip
    assert event.identifiers == {"email": "ann@example.com"}
    assert event.rejected_identifiers == {"device_id": "blocked", "shoe_size": "unknown_kind"}


@pytest.mark.parametrize(
    "score",
    [
        {"metric": "nps", "score": 0},
        {"metric": "nps", "score": 10},
        {"metric": "nps", "score": 10, "scale_max": 10},
        {"metric": "csat", "score": 1},
        {"metric": "csat", "score": 5},
        {"metric": "csat", "score": 4.5},
        {"metric": "csat", "score": 7, "scale_max": 7},
        {"metric": "csat", "score": 10, "scale_max": 10},
        {"metric": "ces", "score": 1},
        {"metric": "ces", "score": 7},
    ],
    ids=lambda s: f"{s['metric']} {s['score']} of {s.get('scale_max', 'default')}",
)
def test_scores_on_their_scale_are_accepted(score: dict[str, Any]) -> None:
    assert accepted(touchpoint(survey=score)).event.survey is not None


# --- dead letters: one reason per kind of broken message -------------------------------


def nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep (``{"n": {"n": ... {}}}`` counts ``levels``)."""
    document: dict[str, Any] = {}
    for _ in range(levels - 1):
        document = {"n": document}
    return document


def with_raw(document: dict[str, Any], old: bytes, new: bytes) -> bytes:
    """The JSON of ``document`` with one spelling replaced, for what orjson will not write."""
    raw = orjson.dumps(document)
    assert raw.count(old) == 1
    return raw.replace(old, new)


BROKEN: list[tuple[str, bytes | dict[str, Any] | None, Reason]] = [
    ("no value", None, Reason.EMPTY_VALUE),
    ("zero bytes", b"", Reason.EMPTY_VALUE),
    ("latin-1 bytes", b"\xff\xfe{}", Reason.NOT_UTF8),
    ("utf-16 json", '{"event_id": "e-1"}'.encode("utf-16"), Reason.NOT_UTF8),
    ("invalid utf-8 inside a string", b'{"event_id": "\xc3\x28"}', Reason.NOT_UTF8),
    ("single quotes", b"{'single': 'quotes'}", Reason.NOT_JSON),
    ("truncated", orjson.dumps(touchpoint())[:-3], Reason.NOT_JSON),
    ("white space only", b"   ", Reason.NOT_JSON),
    ("NaN is not JSON", with_raw(touchpoint(properties={"x": 1}), b'"x":1', b'"x":NaN'), Reason.NOT_JSON),
    ("json array", b"[1, 2]", Reason.NOT_OBJECT),
    ("json string", b'"event"', Reason.NOT_OBJECT),
    ("json number", b"42", Reason.NOT_OBJECT),
    ("json null", b"null", Reason.NOT_OBJECT),
    ("too large", touchpoint(properties={f"k{i}": "x" * 1000 for i in range(70)}), Reason.TOO_LARGE),
    ("no event_id", without("event_id"), Reason.MISSING_FIELD),
    ("no occurred_at", without("occurred_at"), Reason.MISSING_FIELD),
    ("no type", without("type"), Reason.MISSING_FIELD),
    ("no identifiers", without("identifiers"), Reason.MISSING_FIELD),
    ("empty object", {}, Reason.MISSING_FIELD),
    ("event_id a number", touchpoint(event_id=7), Reason.INVALID_FIELD),
    ("event_id empty", touchpoint(event_id=""), Reason.INVALID_FIELD),
    ("type not a string", touchpoint(type=12), Reason.INVALID_FIELD),
    ("type not snake_case", touchpoint(type="PageView"), Reason.INVALID_FIELD),
    ("identifiers a list", touchpoint(identifiers=["a"]), Reason.INVALID_FIELD),
    ("identifiers empty", touchpoint(identifiers={}), Reason.INVALID_FIELD),
    ("identifier value a number", touchpoint(identifiers={"account_id": 42}), Reason.INVALID_FIELD),
    ("context value a number", touchpoint(context={"region": 1}), Reason.INVALID_FIELD),
    ("properties a list", touchpoint(properties=[1]), Reason.INVALID_FIELD),
    ("score a word", touchpoint(survey={"metric": "nps", "score": "ten"}), Reason.INVALID_FIELD),
    ("unknown metric", touchpoint(survey={"metric": "wow", "score": 1}), Reason.INVALID_FIELD),
    ("negative wait", touchpoint(interaction={"wait_seconds": -1}), Reason.INVALID_FIELD),
    ("direction sideways", touchpoint(interaction={"direction": "sideways"}), Reason.INVALID_FIELD),
    ("currency euro", touchpoint(commerce={"currency": "EURO"}), Reason.INVALID_FIELD),
    ("timestamp in words", touchpoint(occurred_at="yesterday"), Reason.INVALID_TIMESTAMP),
    ("naive date-time text", touchpoint(occurred_at="2026-11-22T11:00:00"), Reason.INVALID_TIMESTAMP),
    ("date only", touchpoint(occurred_at="2026-11-22"), Reason.INVALID_TIMESTAMP),
    ("timestamp a boolean", touchpoint(occurred_at=True), Reason.INVALID_TIMESTAMP),
    ("timestamp a float", touchpoint(occurred_at=1_795_345_200_000.5), Reason.INVALID_TIMESTAMP),
    ("timestamp null", touchpoint(occurred_at=None), Reason.INVALID_TIMESTAMP),
    ("epoch beyond any calendar", touchpoint(occurred_at=2**62), Reason.INVALID_TIMESTAMP),
    ("sent_at naive", touchpoint(sent_at="2026-11-22T11:00:00"), Reason.INVALID_TIMESTAMP),
    ("event_id over 128 chars", touchpoint(event_id="e" * 129), Reason.STRING_TOO_LONG),
    ("long string nested in properties", touchpoint(properties={"a": {"b": ["x" * 5000]}}), Reason.STRING_TOO_LONG),
    ("long key in properties", touchpoint(properties={"k" * 5000: 1}), Reason.STRING_TOO_LONG),
    ("long comment", touchpoint(survey={"metric": "nps", "score": 9, "comment": "x" * 4097}), Reason.STRING_TOO_LONG),
    ("long context value", touchpoint(context={"region": "x" * 4097}), Reason.STRING_TOO_LONG),
    ("21 identifiers", touchpoint(identifiers={f"x_k{i}": f"v{i}" for i in range(21)}), Reason.TOO_MANY_IDENTIFIERS),
    ("nps 11", touchpoint(survey={"metric": "nps", "score": 11}), Reason.SCORE_OUT_OF_RANGE),
    ("nps -1", touchpoint(survey={"metric": "nps", "score": -1}), Reason.SCORE_OUT_OF_RANGE),
    ("nps 7.5", touchpoint(survey={"metric": "nps", "score": 7.5}), Reason.SCORE_OUT_OF_RANGE),
    ("nps on a 5-point scale", touchpoint(survey={"metric": "nps", "score": 4, "scale_max": 5}), Reason.SCORE_OUT_OF_RANGE),
    # a number beyond double range cannot be read by any consumer: refused as not JSON
    ("nps 1e400", with_raw(touchpoint(survey={"metric": "nps", "score": 1}), b'"score":1', b'"score":1e400'), Reason.NOT_JSON),
    ("csat 0", touchpoint(survey={"metric": "csat", "score": 0}), Reason.SCORE_OUT_OF_RANGE),
    ("csat 6 of default 5", touchpoint(survey={"metric": "csat", "score": 6}), Reason.SCORE_OUT_OF_RANGE),
    ("csat 8 of 7", touchpoint(survey={"metric": "csat", "score": 8, "scale_max": 7}), Reason.SCORE_OUT_OF_RANGE),
    ("ces 0", touchpoint(survey={"metric": "ces", "score": 0}), Reason.SCORE_OUT_OF_RANGE),
    ("ces 8", touchpoint(survey={"metric": "ces", "score": 8}), Reason.SCORE_OUT_OF_RANGE),
    ("ces on a 10-point scale", touchpoint(survey={"metric": "ces", "score": 8, "scale_max": 10}), Reason.SCORE_OUT_OF_RANGE),
    ("channel upper case", touchpoint(channel="Web"), Reason.INVALID_CHANNEL),
    ("channel with punctuation", touchpoint(channel="web!"), Reason.INVALID_CHANNEL),
    ("channel of another topic", touchpoint(channel="sms"), Reason.CHANNEL_MISMATCH),
    ("only placeholders", touchpoint(identifiers={"email": "null", "phone": "unknown"}), Reason.NO_USABLE_IDENTIFIER),
    ("only malformed", touchpoint(identifiers={"email": "ann-at-example", "phone": "12"}), Reason.NO_USABLE_IDENTIFIER),
    ("only unknown kinds", touchpoint(identifiers={"shoe_size": "42"}), Reason.NO_USABLE_IDENTIFIER),
    ("all-zero uuid", touchpoint(identifiers={"device_id": "00000000-0000-0000-0000-000000000000"}), Reason.NO_USABLE_IDENTIFIER),
    ("schema version 2", touchpoint(schema_version=2), Reason.UNSUPPORTED_SCHEMA_VERSION),
    ("schema version 0", touchpoint(schema_version=0), Reason.UNSUPPORTED_SCHEMA_VERSION),
    # JSON types must be the schema's exactly: nothing is coerced
    ("score true", touchpoint(survey={"metric": "nps", "score": True}), Reason.INVALID_FIELD),
    ("score a numeric string", touchpoint(survey={"metric": "nps", "score": "9"}), Reason.INVALID_FIELD),
    ("scale_max a float", touchpoint(survey={"metric": "csat", "score": 4, "scale_max": 5.0}), Reason.INVALID_FIELD),
    ("scale_max a numeric string", touchpoint(survey={"metric": "csat", "score": 4, "scale_max": "5"}), Reason.INVALID_FIELD),
    ("transferred yes", touchpoint(interaction={"transferred": "yes"}), Reason.INVALID_FIELD),
    ("transferred 1", touchpoint(interaction={"transferred": 1}), Reason.INVALID_FIELD),
    ("resolved a string", touchpoint(interaction={"resolved": "true"}), Reason.INVALID_FIELD),
    ("wait_seconds a numeric string", touchpoint(interaction={"wait_seconds": "60"}), Reason.INVALID_FIELD),
    ("amount true", touchpoint(commerce={"amount": True}), Reason.INVALID_FIELD),
    ("amount a numeric string", touchpoint(commerce={"amount": "9.99"}), Reason.INVALID_FIELD),
    ("schema_version a numeric string", touchpoint(schema_version="1"), Reason.INVALID_FIELD),
    ("schema_version true", touchpoint(schema_version=True), Reason.INVALID_FIELD),
    ("schema_version 1.0", touchpoint(schema_version=1.0), Reason.INVALID_FIELD),
    ("event_id a boolean", touchpoint(event_id=True), Reason.INVALID_FIELD),
    ("source a number", touchpoint(source=7), Reason.INVALID_FIELD),
    # numbers we store have bounds
    ("wait of 1e30 seconds", touchpoint(interaction={"wait_seconds": 1e30}), Reason.INVALID_FIELD),
    ("wait over 30 days", touchpoint(interaction={"wait_seconds": 30 * 86400 + 1}), Reason.INVALID_FIELD),
    ("handle of 1e30 seconds", touchpoint(interaction={"handle_seconds": 1e30}), Reason.INVALID_FIELD),
    ("negative handle", touchpoint(interaction={"handle_seconds": -0.5}), Reason.INVALID_FIELD),
    ("amount of 1e30", touchpoint(commerce={"amount": 1e30}), Reason.INVALID_FIELD),
    ("amount of -1e30", touchpoint(commerce={"amount": -1e30}), Reason.INVALID_FIELD),
    ("amount over 10^12", touchpoint(commerce={"amount": 10**12 + 1}), Reason.INVALID_FIELD),
    ("score beyond 64 bits", touchpoint(survey={"metric": "nps", "score": 10**30}), Reason.SCORE_OUT_OF_RANGE),
    # an integer no row can hold, anywhere in properties
    ("integer beyond 64 bits", touchpoint(properties={"n": 123456789012345678901234567890}), Reason.INVALID_FIELD),
    ("integer beyond 64 bits nested", touchpoint(properties={"a": {"b": {"n": 2**64}}}), Reason.INVALID_FIELD),
    ("integer beyond 64 bits in a list", touchpoint(properties={"a": [1, 2, -(2**63) - 1]}), Reason.INVALID_FIELD),
    ("integer beyond double range", with_raw(touchpoint(properties={"n": 1}), b'"n":1', b'"n":' + b"9" * 400), Reason.NOT_JSON),
    # times: epoch seconds sent as milliseconds, and what ClickHouse DateTime64 cannot hold
    ("occurred_at in epoch seconds", touchpoint(occurred_at=1_795_345_200), Reason.INVALID_TIMESTAMP),
    ("occurred_at zero", touchpoint(occurred_at=0), Reason.INVALID_TIMESTAMP),
    ("occurred_at negative", touchpoint(occurred_at=-1), Reason.INVALID_TIMESTAMP),
    ("occurred_at in microseconds", touchpoint(occurred_at=1_795_345_200_000_000), Reason.INVALID_TIMESTAMP),
    ("sent_at in epoch seconds", touchpoint(sent_at=1_795_348_800), Reason.INVALID_TIMESTAMP),
    ("occurred_at in 2300", touchpoint(occurred_at="2300-01-01T00:00:00Z"), Reason.INVALID_TIMESTAMP),
    ("occurred_at in 1899", touchpoint(occurred_at="1899-12-31T23:59:59.999Z"), Reason.INVALID_TIMESTAMP),
    ("occurred_at in year 1", touchpoint(occurred_at="0001-01-01T00:00:00Z"), Reason.INVALID_TIMESTAMP),
    ("occurred_at in 9999", touchpoint(occurred_at="9999-12-31T23:59:59+14:00"), Reason.INVALID_TIMESTAMP),
    ("sent_at in 2300", touchpoint(sent_at="2300-06-01T00:00:00Z"), Reason.INVALID_TIMESTAMP),
    ("skew correction beyond 2299", touchpoint(occurred_at="2290-01-01T00:00:00Z", sent_at="1901-01-01T00:00:00Z"), Reason.INVALID_TIMESTAMP),
    # hostile JSON
    ("nested 33 deep", touchpoint(properties=nested(32)), Reason.TOO_DEEP),
    ("lists nested 33 deep", touchpoint(properties={"l": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}), Reason.TOO_DEEP),
    ("nested 2000 deep", with_raw(touchpoint(properties={"n": 1}), b'"n":1', b'"n":' + b"[" * 2000 + b"]" * 2000), Reason.TOO_DEEP),
    ("schema registry framing", b"\x00\x00\x00\x00\x07" + orjson.dumps(touchpoint()), Reason.SCHEMA_REGISTRY_FRAMING),
    ("schema registry framing of avro", b"\x00\x00\x00\x01\x00\x02\x06abc", Reason.SCHEMA_REGISTRY_FRAMING),
]  # fmt: skip


@pytest.mark.parametrize(("why", "value", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
def test_every_broken_message_is_dead_lettered_with_its_reason(
    why: str, value: bytes | dict[str, Any] | None, reason: Reason
) -> None:
    letter = rejected(value)
    assert letter.reason is reason, letter.detail
    assert letter.detail


def test_every_reason_ingest_can_give_is_covered_by_a_broken_message() -> None:
    elsewhere = {
        Reason.CHANNEL_REQUIRED,  # only on touchpoints.all, covered above
        Reason.EVENT_IN_FUTURE,  # only under the dead-letter time policy, covered below
        Reason.EVENT_TOO_OLD,
        Reason.PROCESSING_ERROR,  # a defect, not a kind of message
    }
    assert {reason for _, _, reason in BROKEN} == set(Reason) - elsewhere


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("survey", {"metric": "nps", "score": True}, "survey.score"),
        ("survey", {"metric": "nps", "score": "9"}, "survey.score"),
        ("interaction", {"transferred": "yes"}, "interaction.transferred"),
        ("interaction", {"wait_seconds": "60"}, "interaction.wait_seconds"),
        ("interaction", {"wait_seconds": 1e30}, "interaction.wait_seconds"),
        ("commerce", {"amount": True}, "commerce.amount"),
        ("schema_version", "1", "schema_version"),
    ],
)
def test_a_wrong_json_type_or_an_unbounded_number_is_refused_naming_its_field(
    field: str, value: Any, path: str
) -> None:
    letter = rejected(touchpoint(**{field: value}))
    assert letter.reason is Reason.INVALID_FIELD
    assert letter.detail.startswith(f"{path}: "), letter.detail
    assert letter.event_id == "e-1"


def test_an_integer_stands_for_a_number_as_json_schema_says() -> None:
    event = accepted(
        touchpoint(
            survey={"metric": "csat", "score": 4},
            interaction={"wait_seconds": 60, "handle_seconds": 0},
            commerce={"amount": -25},
        )
    )
    assert event.event.survey is not None and event.event.survey.score == 4.0
    assert event.event.interaction is not None and event.event.interaction.wait_seconds == 60.0
    assert event.event.commerce is not None and event.event.commerce.amount == -25.0


def test_the_bounds_of_stored_numbers_are_inside() -> None:
    event = accepted(
        touchpoint(
            interaction={"wait_seconds": 30 * 86400, "handle_seconds": 30 * 86400},
            commerce={"amount": -(10**12)},
        )
    )
    assert event.event.commerce is not None and event.event.commerce.amount == -1e12
    assert accepted(touchpoint(commerce={"amount": 10**12}))


@pytest.mark.parametrize(
    ("properties", "path"),
    [
        ({"n": 123456789012345678901234567890}, "properties.n"),
        ({"a": {"b": [0, {"c": 2**64}]}}, "properties.a.b[1].c"),
        ({"a": [1, -(2**63) - 1]}, "properties.a[1]"),
    ],
)
def test_an_integer_beyond_64_bits_is_one_dead_letter_naming_its_path(
    properties: dict[str, Any], path: str
) -> None:
    letter = rejected(touchpoint(properties=properties))
    assert letter.reason is Reason.INVALID_FIELD
    assert letter.detail.startswith(f"{path}: integer"), letter.detail
    assert letter.event_id == "e-1"


def test_the_64_bit_integers_are_kept_exactly() -> None:
    extremes = {"min": -(2**63), "max": 2**64 - 1, "big": 2**53 + 1}
    event = accepted(touchpoint(properties=extremes))
    assert orjson.loads(orjson.loads(event.row)[PROPERTIES]) == extremes


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (1_795_345_200, "epoch seconds"),
        (0, "epoch seconds"),
        (1_795_345_200_000_000, "microseconds"),
    ],
)
def test_an_integer_timestamp_in_the_wrong_unit_says_which_unit_it_looks_like(
    value: int, hint: str
) -> None:
    letter = rejected(touchpoint(occurred_at=value))
    assert letter.reason is Reason.INVALID_TIMESTAMP
    assert letter.detail.startswith("occurred_at: "), letter.detail
    assert hint in letter.detail


def test_epoch_milliseconds_from_1973_and_text_from_1900_to_2299_are_accepted() -> None:
    assert accepted(touchpoint(occurred_at=100_000_000_000)).occurred_at == datetime(
        1973, 3, 3, 9, 46, 40, tzinfo=UTC
    )
    assert rejected(touchpoint(occurred_at=99_999_999_999)).reason is Reason.INVALID_TIMESTAMP
    last = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    assert accepted(touchpoint(occurred_at=int(last.timestamp() * 1000))).occurred_at == last
    assert accepted(touchpoint(occurred_at="2299-12-31T23:59:59.999Z")).occurred_at == last
    assert accepted(touchpoint(occurred_at="1900-01-01T00:00:00Z")).flags == ("event_too_old",)
    assert accepted(touchpoint(occurred_at="1950-06-01T12:00:00+02:00")).flags == ("event_too_old",)


def test_a_record_timestamp_no_calendar_holds_is_no_reference_clock_and_no_defect() -> None:
    for timestamp_ms in (2**62, -(2**62), 10**16):
        event = accepted(touchpoint(sent_at=NOW_MS), timestamp_ms=timestamp_ms)
        assert (event.clock_skew_ms, event.occurred_at) == (0, ELEVEN_UTC)
        letter = rejected(b"{broken", timestamp_ms=timestamp_ms)
        assert (letter.reason, letter.source_timestamp) == (Reason.NOT_JSON, None)


def test_nesting_to_the_limit_is_accepted_and_one_level_more_is_too_deep() -> None:
    assert accepted(touchpoint(properties=nested(31)))  # the event is the first level
    letter = rejected(touchpoint(properties=nested(32)))
    assert letter.reason is Reason.TOO_DEEP
    assert letter.detail.startswith("properties.n.n"), letter.detail
    assert letter.event_id == "e-1"


def test_deep_nesting_is_refused_without_a_recursion_error_at_any_depth() -> None:
    for depth in (33, 150, 500, 990, 5000, 20000):
        raw = b'{"event_id": "e-1", "properties": ' + b"[" * depth + b"]" * depth + b"}"
        letter = rejected(raw)
        assert letter.reason is Reason.TOO_DEEP, (depth, letter.detail)


def test_a_schema_registry_framed_message_is_refused_with_its_schema_id() -> None:
    raw = b"\x00" + (1027).to_bytes(4, "big") + orjson.dumps(touchpoint())
    letter = rejected(raw)
    assert letter.reason is Reason.SCHEMA_REGISTRY_FRAMING
    assert "schema id 1027" in letter.detail
    assert letter.raw == raw  # kept whole: stripping the 5 bytes replays it


def test_a_zero_byte_too_short_to_be_framing_is_not_utf8_json() -> None:
    assert rejected(b"\x00\x00").reason is Reason.NOT_JSON


def test_with_duplicate_keys_the_last_value_wins_everywhere_and_the_row_says_so() -> None:
    raw = (
        b'{"event_id": "first", "event_id": "e-1", "occurred_at": "2026-11-22T11:00:00Z",'
        b' "type": "page_view", "identifiers": {"email": "x@example.com",'
        b' "email": "ann@example.com"}, "survey": {"metric": "nps", "score": 1, "score": 9},'
        b' "properties": {"a": 1, "a": {"b": 2, "b": 3}}}'
    )
    event = accepted(raw)
    assert (event.event.event_id, event.identifiers) == ("e-1", {"email": "ann@example.com"})
    row = orjson.loads(event.row)
    assert (row[0], row[SCORE], orjson.loads(row[PROPERTIES])) == ("e-1", 9.0, {"a": {"b": 3}})


def test_a_long_string_hidden_behind_a_duplicate_key_is_judged_on_the_value_kept() -> None:
    long_first = with_raw(touchpoint(properties={"a": "x" * 5000, "b": 1}), b'"b":1', b'"a":"ok"')
    assert orjson.loads(orjson.loads(accepted(long_first).row)[PROPERTIES]) == {"a": "ok"}
    long_last = with_raw(
        touchpoint(properties={"a": "ok", "b": 1}), b'"b":1', b'"a":"' + b"x" * 5000 + b'"'
    )
    assert rejected(long_last).reason is Reason.STRING_TOO_LONG


# --- the accepted row ------------------------------------------------------------------------

PROPERTIES = EVENT_COLUMNS.index("properties")
SCORE = EVENT_COLUMNS.index("survey_score")


def test_an_accepted_event_carries_its_events_store_row_already_serialised() -> None:
    event = accepted(
        touchpoint(properties={"path": "/pricing"}, survey={"metric": "nps", "score": 9})
    )
    assert event.row == orjson.dumps(event_row(event))
    row = orjson.loads(event.row)
    assert len(row) == len(EVENT_COLUMNS)
    assert dict(zip(EVENT_COLUMNS, row, strict=True))["event_id"] == "e-1"
    assert orjson.loads(row[PROPERTIES]) == {"path": "/pricing"}


def test_one_bad_message_costs_exactly_one_dead_letter_never_its_neighbours() -> None:
    values = [
        touchpoint(event_id="before"),
        touchpoint(event_id="big", properties={"n": 123456789012345678901234567890}),
        touchpoint(event_id="after"),
    ]
    records = [SourceRecord("touchpoints.web", 0, i, NOW_MS, None, encode(v)) for i, v in enumerate(values)]  # fmt: skip
    result = triage(records, RULES, DuplicateWindow(10**12, 10**9), NOW)
    assert [e.event.event_id for e in result.accepted] == ["before", "after"]
    assert [(d.event_id, d.reason) for d in result.dead_letters] == [("big", Reason.INVALID_FIELD)]
    assert [orjson.loads(e.row)[0] for e in result.accepted] == ["before", "after"]


class _Failing:
    """A stand-in for a third-party library that fails on one message only."""

    def __init__(self, real: Any, name: str, marker: str) -> None:
        self._real, self._name, self._marker = real, name, marker

    def __getattr__(self, attribute: str) -> Any:
        original = getattr(self._real, attribute)
        if attribute != self._name:
            return original

        def failing(*args: Any, **kwargs: Any) -> Any:
            if self._marker in repr(args):
                raise RuntimeError("the library failed")
            return original(*args, **kwargs)

        return failing


ODD_PHONE = "+44 20 7946 0999"  # a number no other test normalises (the parser is cached)


@pytest.mark.parametrize(
    ("module", "library", "function", "marker"),
    [
        (ingest_module, "orjson", "loads", ODD_PHONE),  # parsing
        (identifiers_module, "phonenumbers", "parse", ODD_PHONE),  # normalisation
        (ingest_module, "orjson", "dumps", "+442079460999"),  # serialising the row
    ],
    ids=["parse", "normalise", "serialise"],
)
def test_a_library_failing_on_one_message_costs_that_message_only(
    monkeypatch: pytest.MonkeyPatch, module: Any, library: str, function: str, marker: str
) -> None:
    monkeypatch.setattr(module, library, _Failing(getattr(module, library), function, marker))
    values = [
        touchpoint(event_id="before"),
        touchpoint(event_id="odd", identifiers={"email": "o@example.com", "phone": ODD_PHONE}),
        touchpoint(event_id="after"),
    ]
    records = [SourceRecord("touchpoints.web", 0, i, NOW_MS, None, orjson.dumps(v)) for i, v in enumerate(values)]  # fmt: skip
    result = triage(records, RULES, DuplicateWindow(10**12, 10**9), NOW)
    assert [e.event.event_id for e in result.accepted] == ["before", "after"]
    (letter,) = result.dead_letters
    assert letter.reason is Reason.PROCESSING_ERROR
    assert letter.detail == "RuntimeError: the library failed"
    assert letter.raw == records[1].value


def test_a_string_on_the_configured_limit_passes_and_one_char_more_does_not() -> None:
    strict = rules_with(max_string_chars=100)
    assert accepted(touchpoint(properties={"note": "x" * 100}), rules=strict)
    too_long = rejected(touchpoint(properties={"note": "x" * 101}), rules=strict)
    assert too_long.reason is Reason.STRING_TOO_LONG


def test_the_string_limit_counts_characters_not_bytes() -> None:
    assert accepted(touchpoint(properties={"note": "é" * 4096}))  # 8192 bytes of UTF-8
    assert accepted(touchpoint(properties={"note": "€" * 4096}))  # 12288 bytes of UTF-8


def test_a_string_over_the_limit_is_found_even_next_to_a_non_standard_number() -> None:
    document = touchpoint(properties={"x": 1, "note": "x" * 5000})
    letter = rejected(with_raw(document, b'"x":1', b'"x":Infinity'))
    assert letter.reason in {Reason.NOT_JSON, Reason.STRING_TOO_LONG}


def padded_to(size: int) -> dict[str, Any]:
    """A valid event whose JSON encoding is exactly ``size`` bytes."""
    base = len(orjson.dumps(touchpoint(properties={"pad": ""})))
    document = touchpoint(properties={"pad": "x" * (size - base)})
    assert len(orjson.dumps(document)) == size
    return document


def test_an_event_of_exactly_the_size_limit_is_accepted_and_one_byte_more_is_too_large() -> None:
    rules = rules_with(max_event_bytes=2048)
    assert accepted(padded_to(2048), rules=rules)
    assert rejected(padded_to(2049), rules=rules).reason is Reason.TOO_LARGE


def test_twenty_identifiers_are_allowed() -> None:
    identifiers = {f"x_k{i}": f"v{i}" for i in range(20)}
    assert len(accepted(touchpoint(identifiers=identifiers)).identifiers) == 20


# --- what a dead letter carries ----------------------------------------------------------


def test_a_dead_letter_keeps_the_original_bytes_key_headers_and_coordinates() -> None:
    raw = b'{"event_id": "e-9", "survey": {"metric": "nps", "score": 99}}'
    source = SourceRecord("touchpoints.chat", 5, 1234, NOW_MS - 500, b"k-9", raw, HEADERS)
    letter = run_ingest(source, RULES, NOW)
    assert isinstance(letter, DeadLetter)
    assert (letter.raw, letter.key, letter.headers) == (raw, b"k-9", HEADERS)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "touchpoints.chat", 5, 1234,
    )  # fmt: skip
    assert letter.source_timestamp == NOW - timedelta(milliseconds=500)
    assert letter.received_at == NOW
    assert letter.event_id == "e-9"


def test_the_dead_letter_headers_are_the_original_ones_then_reason_and_coordinates() -> None:
    letter = rejected(touchpoint(channel="sms"))
    headers = letter.kafka_headers()
    assert headers[: len(HEADERS)] == list(HEADERS)
    assert dict(headers[len(HEADERS) :]) == {
        "touchpoint.dlq.reason": b"channel_mismatch",
        "touchpoint.dlq.detail": letter.detail.encode(),
        "touchpoint.dlq.source_topic": b"touchpoints.web",
        "touchpoint.dlq.source_partition": b"2",
        "touchpoint.dlq.source_offset": b"40",
        "touchpoint.dlq.received_at": NOW.isoformat().encode(),
    }


def test_a_message_without_value_or_timestamp_is_still_dead_lettered_with_its_coordinates() -> None:
    letter = rejected(None, timestamp_ms=None)
    assert (letter.raw, letter.source_timestamp, letter.event_id) == (b"", None, None)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "touchpoints.web", 2, 40,
    )  # fmt: skip


def test_a_dead_letter_names_its_event_only_by_a_valid_event_id() -> None:
    assert rejected(touchpoint(event_id="e" * 129)).event_id is None
    assert rejected(touchpoint(event_id="e" * 5000)).event_id is None
    assert rejected(touchpoint(event_id=7, type="Bad")).event_id is None


# --- event time ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "2026-11-22T11:00:00Z",
        "2026-11-22T11:00:00+00:00",
        "2026-11-22T11:00:00-00:00",
        "2026-11-22T12:00:00+01:00",
        "2026-11-22T16:30:00+05:30",
        "2026-11-22T05:30:00-05:30",
        "2026-11-23T00:45:00+13:45",
        "2026-11-21T23:00:00-12:00",
        "2026-11-22T11:00:00.000Z",
        "2026-11-22T11:00:00.000000000Z",
        "2026-11-22t11:00:00z",
        1_795_345_200_000,
    ],
)
def test_rfc3339_offsets_and_epoch_milliseconds_name_the_same_utc_instant(
    spelling: str | int,
) -> None:
    event = accepted(touchpoint(occurred_at=spelling))
    assert event.occurred_at == ELEVEN_UTC
    assert event.occurred_at.utcoffset() == timedelta(0)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@settings(max_examples=150, deadline=None)
@given(
    epoch_ms=st.integers(EPOCH_MS_MINIMUM, LATEST_MS),  # 1973 to the end of 2299
    offset_minutes=st.integers(-14 * 60, 14 * 60),
)
def test_any_instant_reads_the_same_in_any_offset_and_in_epoch_milliseconds(
    epoch_ms: int, offset_minutes: int
) -> None:
    instant = EPOCH + timedelta(milliseconds=epoch_ms)
    local = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    as_text = accepted(touchpoint(occurred_at=local.isoformat())).occurred_at
    as_epoch = accepted(touchpoint(occurred_at=epoch_ms)).occurred_at
    assert as_text == as_epoch == instant


@settings(max_examples=300, deadline=None)
@given(st.integers(EPOCH_MS_MINIMUM, LATEST_MS), st.integers(EPOCH_MS_MINIMUM, LATEST_MS))
def test_epoch_milliseconds_reach_the_row_exactly(occurred_ms: int, sent_ms: int) -> None:
    # no float on the way: milliseconds / 1000 and back are off by one ms now and then
    event = accepted(touchpoint(occurred_at=occurred_ms, sent_at=sent_ms), timestamp_ms=None)
    row = dict(zip(EVENT_COLUMNS, orjson.loads(event.row), strict=True))
    assert (row["occurred_at"], row["client_occurred_at"], row["sent_at"]) == (occurred_ms, occurred_ms, sent_ms)  # fmt: skip
    assert row["received_at"] == NOW_MS


def test_a_device_clock_ahead_by_90_seconds_is_corrected_and_flagged() -> None:
    sent_by_device = NOW + timedelta(seconds=90)  # the Kafka record says NOW
    event = accepted(touchpoint(sent_at=sent_by_device.isoformat()))
    assert event.clock_skew_ms == 90_000
    assert event.occurred_at == ELEVEN_UTC - timedelta(seconds=90)
    assert event.client_occurred_at == ELEVEN_UTC
    assert event.flags == ("clock_skew_corrected",)


def test_a_device_clock_behind_by_90_seconds_is_corrected_forward() -> None:
    event = accepted(touchpoint(sent_at=int((NOW - timedelta(seconds=90)).timestamp() * 1000)))
    assert event.clock_skew_ms == -90_000
    assert event.occurred_at == ELEVEN_UTC + timedelta(seconds=90)
    assert event.flags == ("clock_skew_corrected",)


@pytest.mark.parametrize("delay_s", [-2.0, -1.0, -0.25, 0.0, 0.5, 2.0])
def test_a_difference_within_the_tolerance_is_network_delay_and_left_alone(delay_s: float) -> None:
    event = accepted(touchpoint(sent_at=(NOW + timedelta(seconds=delay_s)).isoformat()))
    assert event.clock_skew_ms == 0
    assert event.occurred_at == event.client_occurred_at == ELEVEN_UTC
    assert event.flags == ()


def test_the_skew_tolerance_is_configurable() -> None:
    sent_at = (NOW + timedelta(seconds=90)).isoformat()
    lenient = rules_with(clock_skew_tolerance_s=120)
    assert accepted(touchpoint(sent_at=sent_at), rules=lenient).clock_skew_ms == 0


def test_without_a_record_timestamp_there_is_no_reference_clock_and_no_correction() -> None:
    sent_at = (NOW + timedelta(hours=1)).isoformat()
    event = accepted(touchpoint(sent_at=sent_at), timestamp_ms=None)
    assert (event.clock_skew_ms, event.occurred_at) == (0, ELEVEN_UTC)


def test_a_fast_device_clock_does_not_make_its_event_look_like_the_future() -> None:
    # the device says 6 minutes from now, but its clock is 2 minutes fast
    event = accepted(
        touchpoint(
            occurred_at=(NOW + timedelta(minutes=6)).isoformat(),
            sent_at=(NOW + timedelta(minutes=2)).isoformat(),
        )
    )
    assert event.occurred_at == NOW + timedelta(minutes=4)
    assert event.flags == ("clock_skew_corrected",)


def test_events_far_in_the_future_or_past_are_flagged_not_dropped() -> None:
    future = (NOW + timedelta(hours=2)).isoformat()
    ancient = (NOW - timedelta(days=90)).isoformat()
    assert accepted(touchpoint(occurred_at=future)).flags == ("event_in_future",)
    assert accepted(touchpoint(occurred_at=ancient)).flags == ("event_too_old",)


def test_the_edges_of_the_time_window_are_inside_it() -> None:
    edge_of_future = (NOW + timedelta(seconds=300)).isoformat()
    edge_of_past = (NOW - timedelta(days=30)).isoformat()
    assert accepted(touchpoint(occurred_at=edge_of_future)).flags == ()
    assert accepted(touchpoint(occurred_at=edge_of_past)).flags == ()


def test_with_the_dead_letter_time_policy_they_are_dead_lettered() -> None:
    strict = rules_with(time_policy="dead_letter")
    future = touchpoint(occurred_at=(NOW + timedelta(hours=2)).isoformat())
    ancient = touchpoint(occurred_at=(NOW - timedelta(days=90)).isoformat())
    assert rejected(future, rules=strict).reason is Reason.EVENT_IN_FUTURE
    assert rejected(ancient, rules=strict).reason is Reason.EVENT_TOO_OLD
    assert rejected(ancient, rules=strict).event_id == "e-1"
    assert accepted(touchpoint(), rules=strict).flags == ()


def test_the_time_window_is_configurable() -> None:
    rules = rules_with(max_future_s=3600 * 3, max_age_s=86400 * 100)
    assert accepted(touchpoint(occurred_at=(NOW + timedelta(hours=2)).isoformat()), rules=rules)
    old = accepted(touchpoint(occurred_at=(NOW - timedelta(days=90)).isoformat()), rules=rules)
    assert old.flags == ()


# --- settings reach ingest -------------------------------------------------------------------


def test_configured_identifier_rules_reach_ingest() -> None:
    rules = rules_with(blocked_values=["guest"], default_phone_region="GB")
    identifiers = {"account_id": "Guest", "phone": "020 7946 0958"}
    event = accepted(touchpoint(identifiers=identifiers), rules=rules)
    assert event.identifiers == {"phone": "+442079460958"}
    assert event.rejected_identifiers == {"account_id": "blocked"}


# --- properties ------------------------------------------------------------------------------

VALID = orjson.dumps(
    touchpoint(survey={"metric": "nps", "score": 9}, sent_at=NOW_MS, context={"region": "eu"})
)


@st.composite
def mutated_valid_events(draw: st.DrawFn) -> bytes:
    """A valid event with a few bytes replaced, inserted or cut: near misses reach deep."""
    raw = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        action = draw(st.sampled_from(["replace", "insert", "cut"]))
        byte = draw(st.integers(0, 255))
        if action == "replace":
            raw[at] = byte
        elif action == "insert":
            raw.insert(at, byte)
        else:
            del raw[at : at + draw(st.integers(1, 20))]
    return bytes(raw)


@settings(max_examples=300, deadline=None)
@given(st.none() | st.binary(max_size=300) | mutated_valid_events())
def test_ingest_never_raises_and_gives_exactly_one_answer(raw: bytes | None) -> None:
    outcome = ingest(raw)
    assert isinstance(outcome, IngestedEvent) != isinstance(outcome, DeadLetter)
    if isinstance(outcome, DeadLetter):
        assert outcome.reason in set(Reason)
        assert outcome.raw == (raw or b"")
        assert outcome.reason is not Reason.PROCESSING_ERROR, outcome.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)  # fmt: skip
surveys = st.fixed_dictionaries(
    {"metric": st.sampled_from(["nps", "csat", "ces"]), "score": st.integers(-2, 12) | st.floats(-1e9, 1e9)},
    optional={"scale_max": st.integers(0, 12) | st.none()},
)  # fmt: skip
FIELDS = [*touchpoint(), "survey", "channel", "sent_at", "schema_version", "context", "interaction"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values | surveys, max_size=6))
def test_any_json_object_is_accepted_or_dead_lettered_with_a_reason_other_than_a_defect(
    document: dict[str, Any],
) -> None:
    outcome = ingest({**touchpoint(), **document})
    if isinstance(outcome, DeadLetter):
        assert outcome.reason is not Reason.PROCESSING_ERROR, outcome.detail
    else:
        assert outcome.channel == "web"


KINDS = ["valid", "valid", "repeat", "replay", "broken", "placeholder"]
plans = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 15), st.sampled_from(["web", "sms"]), st.integers(0, 2)),
    max_size=60,
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(plans)
def test_triage_accounts_for_every_record_like_a_simple_reference(
    plan: list[tuple[str, int, str, int]],
) -> None:
    """Reference: dead letters are the broken records; an accepted event_id seen again at
    other coordinates is a duplicate; the same record delivered again is not."""
    records: list[SourceRecord] = []
    next_offset: dict[tuple[str, int], int] = {}
    for kind, n, channel, partition in plan:
        topic = f"touchpoints.{channel}"
        if kind == "replay" and records:
            records.append(records[n % len(records)])
            continue
        offset = next_offset.get((topic, partition), 0)
        next_offset[(topic, partition)] = offset + 1
        if kind == "broken":
            value = b"{broken"
        elif kind == "placeholder":
            value = orjson.dumps(touchpoint(event_id=f"id-{n}", identifiers={"email": "null"}))
        else:  # a new event or a repeat of an event_id: the few ids make both likely
            value = orjson.dumps(touchpoint(event_id=f"id-{n}"))
        records.append(SourceRecord(topic, partition, offset, NOW_MS, None, value))

    first_at: dict[str, tuple[str, int, int]] = {}
    expected: list[str] = []
    for r in records:
        if r.value == b"{broken" or b'"null"' in (r.value or b""):
            expected.append("dead")
            continue
        event_id = orjson.loads(r.value or b"")["event_id"]
        first = first_at.setdefault(event_id, (r.topic, r.partition, r.offset))
        expected.append("duplicate" if first != (r.topic, r.partition, r.offset) else "accepted")

    result = triage(records, RULES, DuplicateWindow(10**12, 10**9), NOW)
    assert len(result.accepted) + len(result.duplicates) + len(result.dead_letters) == len(records)
    assert len(result.accepted) == expected.count("accepted")
    assert len(result.duplicates) == expected.count("duplicate")
    assert len(result.dead_letters) == expected.count("dead")
    # each outcome list keeps the order of the records
    outcomes = {"accepted": iter(result.accepted), "duplicate": iter(result.duplicates),
                "dead": iter(result.dead_letters)}  # fmt: skip
    for r, want in zip(records, expected, strict=True):
        outcome = next(outcomes[want])
        if isinstance(outcome, DeadLetter):
            assert (outcome.raw, outcome.source_offset) == (r.value, r.offset)
        else:
            assert outcome.source is r
