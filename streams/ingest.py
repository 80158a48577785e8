"""From raw Kafka record to accepted event or dead letter: parse, validate, normalise.

Pure: no Faust, no I/O; the wall clock comes in as ``now``. Every record gets exactly
one answer, an :class:`IngestedEvent` or a :class:`DeadLetter` with a reason from
:class:`schemas.dead_letter.Reason`; an unexpected exception becomes
``processing_error`` rather than escaping, so one odd message never stops a partition.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.dead_letter import DeadLetter, Reason
from schemas.event import TouchpointEvent
from schemas.ingested import IngestedEvent, SourceRecord
from streams.dedup import DuplicateWindow
from streams.identifiers import IdentifierPolicy, normalise_identifiers

__all__ = ["IngestRules", "Triage", "channel_of_topic", "ingest", "triage"]

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


@dataclass(frozen=True)
class IngestRules:
    """What ingest checks, with the configured limits.

    Times are in seconds. ``time_policy`` is ``flag`` (accept and flag events outside
    ``[now - max_age, now + max_future]``) or ``dead_letter``.
    """

    identifiers: IdentifierPolicy
    max_event_bytes: int = 65536
    max_string_chars: int = 4096
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
    """Validate and normalise one record; never raises for anything in the record."""
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
    _check_strict_json(raw, rules.max_string_chars)
    try:
        event = TouchpointEvent.model_validate_json(raw)
    except ValidationError as exc:
        raise _explain(exc, raw) from None
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

    return IngestedEvent(
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


def _correct_skew(
    event: TouchpointEvent, record_ms: int | None, tolerance_s: float
) -> tuple[datetime, int]:
    """Shift occurred_at by the producer clock's error, measured as sent_at minus record time.

    The Kafka record timestamp is the reference clock. A difference within the tolerance
    is network and batching delay, not skew, and is left alone.
    """
    if event.sent_at is None or record_ms is None:
        return event.occurred_at, 0
    reference = datetime.fromtimestamp(record_ms / 1000, tz=UTC)
    skew = event.sent_at - reference
    if abs(skew.total_seconds()) <= tolerance_s:
        return event.occurred_at, 0
    skew_ms = round(skew.total_seconds() * 1000)
    return event.occurred_at - timedelta(milliseconds=skew_ms), skew_ms


def _first_long_string(value: Any, limit: int, path: str) -> str | None:
    """The path of the first string (key or value) longer than ``limit``, or None."""
    if isinstance(value, str):
        return path if len(value) > limit else None
    if isinstance(value, dict):
        for key, item in value.items():
            if len(key) > limit:
                return path
            found = _first_long_string(item, limit, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_long_string(item, limit, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _check_strict_json(raw: bytes, limit: int) -> None:
    """Refuse what is not strict JSON (pydantic reads NaN and Infinity) or holds long strings.

    A decoded JSON string is never longer than its encoding, so only a document larger
    than the limit needs the walk over its strings.
    """
    try:
        document = orjson.loads(raw)  # strict JSON: NaN and Infinity are not JSON
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf:
            raise _Rejected(Reason.NOT_UTF8, f"not UTF-8 at byte {utf.start}") from None
        raise _Rejected(Reason.NOT_JSON, f"not JSON: {exc}") from None
    if len(raw) <= limit:
        return
    too_long = _first_long_string(document, limit, "")
    if too_long is not None:
        event_id = document.get("event_id") if isinstance(document, dict) else None
        valid_id = event_id if isinstance(event_id, str) and len(event_id) <= 128 else None
        raise _Rejected(
            Reason.STRING_TOO_LONG,
            f"{too_long or '(key)'}: string longer than {limit} chars",
            valid_id,
        )


def _explain(exc: ValidationError, raw: bytes) -> _Rejected:
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
    try:
        event_id = orjson.loads(raw).get("event_id")
    except (orjson.JSONDecodeError, AttributeError):
        event_id = None
    if not isinstance(event_id, str) or len(event_id) > 128:
        event_id = None
    return _Rejected(reason, detail, event_id)


def _dead_letter(
    record: SourceRecord, reason: Reason, detail: str, event_id: str | None, now: datetime
) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=detail,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp=(
            datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC)
            if record.timestamp_ms is not None
            else None
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
