"""A dead letter can always be written: to Kafka (headers) and to ClickHouse (its row).

Whatever it holds: any raw bytes, any key, header values of any bytes, header names and
details that quote text with lone surrogates or NUL characters, a broker timestamp no
calendar holds. Bytes go through untouched; text comes out as valid UTF-8, changed
only where a lone surrogate makes that impossible.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.clickhouse import DEAD_LETTER_COLUMNS
from schemas.dead_letter import DLQ_HEADER_PREFIX, DeadLetter, Reason, utf8_text
from schemas.event import EARLIEST, LATEST
from sinks.rows import dead_letter_row

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
COLUMN = {name: i for i, name in enumerate(DEAD_LETTER_COLUMNS)}

any_text = st.text(st.characters(codec="utf-8") | st.characters(categories=["Cs"]), max_size=40)


def letter(**fields: object) -> DeadLetter:
    values: dict[str, object] = {
        "reason": Reason.NOT_JSON,
        "detail": "not JSON",
        "source_topic": "touchpoints.web",
        "source_partition": 1,
        "source_offset": 7,
        "source_timestamp": NOW,
        "key": b"k",
        "raw": b"{",
        "headers": (("trace", b"abc"),),
        "event_id": None,
        "received_at": NOW,
    }
    values.update(fields)
    return DeadLetter(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("plain", "plain"),
        ("é \U0010ffff \x00", "é \U0010ffff \x00"),
        ("a\ud800b", "a\\ud800b"),
        ("\udfff\U0001f600\ud83d", "\\udfff\U0001f600\\ud83d"),
    ],
)
def test_text_is_kept_unless_a_lone_surrogate_must_become_its_escape(
    text: str, written: str
) -> None:
    assert utf8_text(text) == written
    written.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_utf8_text_always_encodes_and_changes_only_lone_surrogates(text: str) -> None:
    result = utf8_text(text)
    result.encode("utf-8")
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert result == text


@settings(max_examples=200, deadline=None)
@given(
    detail=any_text,
    topic=any_text,
    event_id=st.none() | any_text,
    key=st.none() | st.binary(max_size=20),
    raw=st.binary(max_size=60),
    headers=st.lists(st.tuples(any_text, st.binary(max_size=20)), max_size=4).map(tuple),
    source_timestamp=st.none() | st.datetimes(timezones=st.just(UTC)),
)
def test_a_dead_letter_row_and_its_kafka_headers_never_fail_for_any_letter(
    detail: str,
    topic: str,
    event_id: str | None,
    key: bytes | None,
    raw: bytes,
    headers: tuple[tuple[str, bytes], ...],
    source_timestamp: datetime | None,
) -> None:
    dead = letter(
        detail=detail,
        source_topic=topic,
        event_id=event_id,
        key=key,
        raw=raw,
        headers=headers,
        source_timestamp=source_timestamp,
    )
    row = dead_letter_row(dead)
    assert len(row) == len(DEAD_LETTER_COLUMNS)
    assert (row[COLUMN["key"]], row[COLUMN["raw"]]) == (key, raw)  # bytes untouched
    assert row[COLUMN["detail"]] == utf8_text(detail)
    assert row[COLUMN["headers"]] == [(utf8_text(n), v) for n, v in headers]
    for value in row:
        if isinstance(value, str):
            value.encode("utf-8")
    stamp = row[COLUMN["source_timestamp"]]
    if source_timestamp is not None and EARLIEST <= source_timestamp <= LATEST:
        assert stamp == source_timestamp
    else:
        assert stamp is None
    kafka = dead.kafka_headers()
    assert [v for _, v in kafka[: len(headers)]] == [v for _, v in headers]
    for name, value in kafka:
        name.encode("utf-8")
        assert isinstance(value, bytes)
    assert dict(kafka)[DLQ_HEADER_PREFIX + "detail"] == utf8_text(detail[:1024]).encode()


def test_a_source_timestamp_beyond_what_clickhouse_holds_is_left_empty() -> None:
    for outside in (EARLIEST - timedelta(milliseconds=1), LATEST + timedelta(milliseconds=1)):
        assert dead_letter_row(letter(source_timestamp=outside))[COLUMN["source_timestamp"]] is None
    for inside in (EARLIEST, LATEST):
        assert (
            dead_letter_row(letter(source_timestamp=inside))[COLUMN["source_timestamp"]] == inside
        )
