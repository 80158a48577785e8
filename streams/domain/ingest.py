"""From raw Kafka record to accepted event or dead letter: parse, validate, normalise.

Pure: no Faust, no I/O; the wall clock comes in as ``now``. Every record gets exactly
one answer, an :class:`IngestedEvent` or a :class:`DeadLetter` with a reason from
:class:`schemas.dead_letter.Reason`; an unexpected exception becomes
``processing_error`` rather than escaping, so one odd message never stops a partition.

Every step a message needs before it leaves ingest runs here, inside that isolation:
parsing, validation, normalisation and building its ``events_store`` row, serialised
(``IngestedEvent.row``). The ingest agent forwards those bytes as they are, so a value
that no row can hold costs its own message a dead letter, never its neighbours.

Each value is parsed twice: once by orjson, strictly (NaN and Infinity are not JSON),
for the string-length and depth checks, and once by pydantic for validation. The two
agree where it matters: with a repeated key the last value wins in both, and the row is
built from what pydantic validated, so the stored row is what was checked. Integers
orjson reads as floats (beyond 64 bits) are found when the row is serialised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.dead_letter import DeadLetter, Reason
from schemas.event import EARLIEST, EARLIEST_MS, LATEST, LATEST_MS, MAX_DEPTH, TouchpointEvent
from schemas.ingested import IngestedEvent, SourceRecord
from sinks.rows import event_row
from streams.domain.dedup import DuplicateWindow
from streams.domain.identifiers import IdentifierPolicy, normalise_identifiers

__all__ = [
    "IngestRules",
    "Triage",
    "channel_of_topic",
    "chunk_rows",
    "ingest",
    "triage",
]

FLAG_IN_FUTURE = "event_in_future"
FLAG_TOO_OLD = "event_too_old"
FLAG_SKEW_CORRECTED = "clock_skew_corrected"

#: Pydantic error types that map to their own reason; all others are ``invalid_field``.
_ERROR_REASONS: dict[str, Reason] = {
    "missing": Reason.MISSING_FIELD,
    "invalid_timestamp": Reason.INVALID_TIMESTAMP,
    "too_many_identifiers": Reason.TOO_MANY_IDENTIFIERS,
    "score_out_of_range": Reason.SCORE_OUT_OF_RANGE,
    "unsupported_schema_version": Reason.UNSUPPORTED_SCHEMA_VERSION,
    "invalid_channel": Reason.INVALID_CHANNEL,
    "string_too_long": Reason.STRING_TOO_LONG,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The integers orjson writes: signed and unsigned 64 bits.
_SMALLEST_INT, _LARGEST_INT = -(2**63), 2**64 - 1


@dataclass(frozen=True)
class IngestRules:
    """What ingest checks, with the configured limits.

    Times are in seconds. ``time_policy`` is ``flag`` (accept and flag events outside
    ``[now - max_age, now + max_future]``) or ``dead_letter``. ``max_depth`` counts
    the levels of objects and arrays, the event object being the first.
    """

    identifiers: IdentifierPolicy
    max_event_bytes: int = 65536
    max_string_chars: int = 4096
    max_depth: int = MAX_DEPTH
    clock_skew_tolerance_s: float = 2.0
    max_future_s: float = 300.0
    max_age_s: float = 30 * 86400.0
    time_policy: str = "flag"


class _Rejected(Exception):
    def __init__(self, reason: Reason, detail: str, event_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.event_id = event_id


def channel_of_topic(topic: str) -> str:
    """The channel a topic carries: the part after the last dot (``touchpoints.web`` -> web)."""
    return topic.rsplit(".", 1)[-1]


def ingest(record: SourceRecord, rules: IngestRules, now: datetime) -> IngestedEvent | DeadLetter:
    """Validate and normalise one record and build its row; never raises for anything in
    the record (value, key, headers or timestamp)."""
    try:
        return _ingest(record, rules, now)
    except _Rejected as rejected:
        return _dead_letter(record, rejected.reason, rejected.detail, rejected.event_id, now)
    except Exception as exc:  # a defect must not stop the partition; it is dead-lettered
        detail = f"{type(exc).__name__}: {exc}"
        return _dead_letter(record, Reason.PROCESSING_ERROR, detail, None, now)


def _ingest(record: SourceRecord, rules: IngestRules, now: datetime) -> IngestedEvent:
    raw = record.value
    if not raw:
        raise _Rejected(Reason.EMPTY_VALUE, "the message has no value")
    if len(raw) > rules.max_event_bytes:
        raise _Rejected(
            Reason.TOO_LARGE, f"{len(raw)} bytes, at most {rules.max_event_bytes} allowed"
        )
    if raw[0] == 0 and len(raw) >= 5:  # JSON never starts with a zero byte
        _refuse_framing(raw)
    document = _read_strict_json(raw, rules)
    try:
        event = TouchpointEvent.model_validate_json(raw)
    except ValidationError as exc:
        raise _explain(exc, raw, document) from None
    except (OverflowError, ValueError) as exc:  # numbers beyond float range, for one
        raise _Rejected(Reason.INVALID_FIELD, f"unreadable value: {exc}") from None

    topic_channel = channel_of_topic(record.topic)
    if topic_channel == "all":
        if event.channel is None:
            raise _Rejected(
                Reason.CHANNEL_REQUIRED,
                "events on touchpoints.all must name their channel",
                event.event_id,
            )
        channel = event.channel
    else:
        if event.channel is not None and event.channel != topic_channel:
            raise _Rejected(
                Reason.CHANNEL_MISMATCH,
                f"channel {event.channel!r} on topic {record.topic!r}",
                event.event_id,
            )
        channel = topic_channel

    normalised = normalise_identifiers(event.identifiers, rules.identifiers)
    if not normalised.kept:
        removed = ", ".join(f"{k}: {v}" for k, v in sorted(normalised.rejected.items()))
        raise _Rejected(
            Reason.NO_USABLE_IDENTIFIER,
            f"every identifier was removed ({removed})",
            event.event_id,
        )

    flags: list[str] = []
    occurred_at, skew_ms = _correct_skew(event, record.timestamp_ms, rules.clock_skew_tolerance_s)
    if skew_ms:
        flags.append(FLAG_SKEW_CORRECTED)
        if not EARLIEST <= occurred_at <= LATEST:
            raise _Rejected(
                Reason.INVALID_TIMESTAMP,
                f"sent_at says the producer clock is off by {skew_ms} ms; corrected by that, "
                f"occurred_at would leave 1900-01-01..2299-12-31: check the producer's clock",
                event.event_id,
            )
    if occurred_at > now + timedelta(seconds=rules.max_future_s):
        if rules.time_policy == "dead_letter":
            raise _Rejected(
                Reason.EVENT_IN_FUTURE,
                f"occurred_at {occurred_at.isoformat()} is ahead of "
                f"{now.isoformat()} by more than {rules.max_future_s:g} s",
                event.event_id,
            )
        flags.append(FLAG_IN_FUTURE)
    elif occurred_at < now - timedelta(seconds=rules.max_age_s):
        if rules.time_policy == "dead_letter":
            raise _Rejected(
                Reason.EVENT_TOO_OLD,
                f"occurred_at {occurred_at.isoformat()} is older than {rules.max_age_s:g} s",
                event.event_id,
            )
        flags.append(FLAG_TOO_OLD)

    ingested = IngestedEvent(
        event=event,
        channel=channel,
        occurred_at=occurred_at,
        client_occurred_at=event.occurred_at,
        clock_skew_ms=skew_ms,
        received_at=now,
        identifiers=normalised.kept,
        rejected_identifiers=normalised.rejected,
        flags=tuple(flags),
        source=record,
    )
    # The row is derived from the event it belongs to, so it is set once here, before
    # anyone sees the event (rebuilding the frozen instance would cost more than the row).
    object.__setattr__(ingested, "row", _serialise_row(ingested))
    return ingested


def _serialise_row(ingested: IngestedEvent) -> bytes:
    """The ``events_store`` row as a JSON array; an integer no row holds is the event's fault."""
    try:
        # an exact-size copy: the row waits for its insert, and orjson's output keeps a
        # buffer of at least 4 KiB whatever its length
        return bytes(memoryview(orjson.dumps(event_row(ingested))))
    except orjson.JSONEncodeError:
        found = _integer_beyond_64_bits(ingested.event.properties)
        if found is None:
            raise
        raise _Rejected(
            Reason.INVALID_FIELD,
            f"{found}: integer outside the 64-bit range (-2^63..2^64-1) that rows hold: "
            "send it as a string",
            ingested.event.event_id,
        ) from None


def _integer_beyond_64_bits(properties: dict[str, Any]) -> str | None:
    """The path of the first integer outside -2^63..2^64-1 in document order, or None."""
    stack: list[tuple[Any, str]] = [(properties, "properties")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, int) and not _SMALLEST_INT <= value <= _LARGEST_INT:
            return path
        if isinstance(value, dict):
            stack.extend((item, f"{path}.{key}") for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in reversed(list(enumerate(value))))
    return None


def _refuse_framing(raw: bytes) -> None:
    """Refuse a value in the Schema Registry wire format: a zero byte, a 4-byte big-endian
    schema id, then the payload. The processor reads plain JSON and no schema registry."""
    schema_id = int.from_bytes(raw[1:5], "big")
    try:
        orjson.loads(raw[5:])
        payload = "a JSON document"
    except orjson.JSONDecodeError:
        payload = f"{len(raw) - 5} bytes that are not JSON (Avro or Protobuf?)"
    raise _Rejected(
        Reason.SCHEMA_REGISTRY_FRAMING,
        f"Schema Registry framing (magic byte 0, schema id {schema_id}) before {payload}: "
        "produce plain JSON values (a string or byte-array serializer); to replay, "
        "drop the first 5 bytes",
    )


def _correct_skew(
    event: TouchpointEvent, record_ms: int | None, tolerance_s: float
) -> tuple[datetime, int]:
    """Shift occurred_at by the producer clock's error, measured as sent_at minus record time.

    The Kafka record timestamp is the reference clock. A difference within the tolerance
    is network and batching delay, not skew, and is left alone. A record timestamp no
    calendar holds (producers may set any 64-bit value) is no reference at all.
    """
    if event.sent_at is None or record_ms is None or not EARLIEST_MS <= record_ms <= LATEST_MS:
        return event.occurred_at, 0
    reference = _EPOCH + timedelta(milliseconds=record_ms)
    skew = event.sent_at - reference
    if abs(skew.total_seconds()) <= tolerance_s:
        return event.occurred_at, 0
    skew_ms = round(skew.total_seconds() * 1000)
    return event.occurred_at - timedelta(milliseconds=skew_ms), skew_ms


def _first_excess(
    value: Any, string_limit: int | None, depth_limit: int | None
) -> _Rejected | None:
    """The first string (key or value) longer than ``string_limit`` or container nested
    deeper than ``depth_limit`` (None: not checked), in document order; iterative, so no
    depth of nesting can exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if string_limit is not None and len(item) > string_limit:
                return _Rejected(
                    Reason.STRING_TOO_LONG,
                    f"{path or '(event)'}: string longer than {string_limit} chars",
                )
            continue
        if not isinstance(item, dict | list):
            continue
        if depth_limit is not None and depth > depth_limit:
            return _Rejected(
                Reason.TOO_DEEP,
                f"{path}: objects and arrays nested deeper than {depth_limit} levels",
            )
        children: list[tuple[Any, str, int]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                if string_limit is not None and len(key) > string_limit:
                    return _Rejected(
                        Reason.STRING_TOO_LONG,
                        f"{path or '(event)'}: key longer than {string_limit} chars",
                    )
                children.append((child, f"{path}.{key}" if path else key, depth + 1))
        else:
            children = [(child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item)]
        stack.extend(reversed(children))
    return None


def _read_strict_json(raw: bytes, rules: IngestRules) -> Any:
    """Parse strictly (pydantic reads NaN and Infinity; orjson does not) and refuse long
    strings and deep nesting.

    Both walks are skipped when they cannot find anything, which is almost always: a
    decoded JSON string is never longer than its encoding, and a document cannot nest
    deeper than the number of ``{`` and ``[`` bytes it holds.
    """
    try:
        document = orjson.loads(raw)  # strict JSON: NaN and Infinity are not JSON
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf:
            raise _Rejected(Reason.NOT_UTF8, f"not UTF-8 at byte {utf.start}") from None
        if "depth limit" in str(exc):  # orjson stops at 1024 levels (tested: a test pins it)
            raise _Rejected(
                Reason.TOO_DEEP,
                f"objects and arrays nested deeper than {rules.max_depth} levels",
            ) from None
        raise _Rejected(Reason.NOT_JSON, f"not JSON: {exc}") from None
    check_strings = len(raw) > rules.max_string_chars
    check_depth = raw.count(b"{") + raw.count(b"[") > rules.max_depth
    if check_strings or check_depth:
        excess = _first_excess(
            document,
            rules.max_string_chars if check_strings else None,
            rules.max_depth if check_depth else None,
        )
        if excess is not None:
            excess.event_id = _valid_event_id(document)
            raise excess
    return document


def _valid_event_id(document: Any) -> str | None:
    """The document's event_id if it is one the contract allows, for the dead letter."""
    event_id = document.get("event_id") if isinstance(document, dict) else None
    return event_id if isinstance(event_id, str) and 0 < len(event_id) <= 128 else None


def _explain(exc: ValidationError, raw: bytes, document: Any) -> _Rejected:
    """The rejection for a validation error: its reason, and every error as ``where: what``."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf:
            return _Rejected(Reason.NOT_UTF8, f"not UTF-8 at byte {utf.start}")
        return _Rejected(Reason.NOT_JSON, f"not JSON: {first['msg']}")
    if first["type"] == "model_type" and not first["loc"]:
        return _Rejected(Reason.NOT_OBJECT, "JSON value is not an object")
    reason = _ERROR_REASONS.get(first["type"], Reason.INVALID_FIELD)
    detail = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in errors[:5]
    )
    return _Rejected(reason, detail, _valid_event_id(document))


def _dead_letter(
    record: SourceRecord, reason: Reason, detail: str, event_id: str | None, now: datetime
) -> DeadLetter:
    timestamp_ms = record.timestamp_ms
    return DeadLetter(
        reason=reason,
        detail=detail,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp=(
            _EPOCH + timedelta(milliseconds=timestamp_ms)
            if timestamp_ms is not None and EARLIEST_MS <= timestamp_ms <= LATEST_MS
            else None  # producers may set any 64-bit timestamp; none is better than a crash
        ),
        key=record.key,
        raw=record.value or b"",
        headers=record.headers,
        event_id=event_id,
        received_at=now,
    )


@dataclass(frozen=True, slots=True)
class Triage:
    """Every record of a batch, accounted for: accepted, duplicate or dead-lettered.

    ``len(accepted) + len(duplicates) + len(dead_letters)`` equals the records given.
    """

    accepted: list[IngestedEvent]
    duplicates: list[IngestedEvent]
    dead_letters: list[DeadLetter]


def triage(
    records: Iterable[SourceRecord],
    rules: IngestRules,
    window: DuplicateWindow,
    now: datetime,
) -> Triage:
    """Ingest each record and separate repeats of an already accepted ``event_id``."""
    accepted: list[IngestedEvent] = []
    duplicates: list[IngestedEvent] = []
    dead_letters: list[DeadLetter] = []
    for record in records:
        outcome = ingest(record, rules, now)
        if isinstance(outcome, DeadLetter):
            dead_letters.append(outcome)
        elif window.seen(outcome.event.event_id, record.topic, record.partition, record.offset):
            duplicates.append(outcome)
        else:
            accepted.append(outcome)
    return Triage(accepted, duplicates, dead_letters)


def chunk_rows(encoded: Sequence[bytes], max_bytes: int) -> list[bytes]:
    """Join JSON-encoded rows into JSON arrays of at most ``max_bytes`` each (one row
    larger than that gets an array of its own)."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 2
    for item in encoded:
        if current and size + len(item) + 1 > max_bytes:
            chunks.append(b"[" + b",".join(current) + b"]")
            current, size = [], 2
        current.append(item)
        size += len(item) + 1
    if current:
        chunks.append(b"[" + b",".join(current) + b"]")
    return chunks
