"""Why a message was dead-lettered, and the envelope it travels in.

A dead-lettered message keeps its original bytes, key and headers; the reason
and the source coordinates travel as extra headers (the Kafka Connect convention,
so any consumer can route on them without parsing the value) and as columns of
ClickHouse ``dead_letters``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

__all__ = ["DLQ_HEADER_PREFIX", "DeadLetter", "Reason", "utf8_text"]

#: Every header the processor adds to a dead letter starts with this.
DLQ_HEADER_PREFIX = "touchpoint.dlq."


class Reason(StrEnum):
    """The one vocabulary of dead-letter reasons. Values are stable: alerting keys on them."""

    NOT_UTF8 = "not_utf8"
    """The value is not valid UTF-8."""
    NOT_JSON = "not_json"
    """The value is not JSON."""
    NOT_OBJECT = "not_object"
    """The value is JSON but not an object."""
    EMPTY_VALUE = "empty_value"
    """The message has no value (null or zero bytes)."""
    TOO_LARGE = "too_large"
    """The value is larger than the configured limit (64 KiB by default)."""
    MISSING_FIELD = "missing_field"
    """A required field (event_id, occurred_at, type, identifiers) is absent."""
    INVALID_FIELD = "invalid_field"
    """A field has the wrong type or format."""
    INVALID_TIMESTAMP = "invalid_timestamp"
    """occurred_at or sent_at is not RFC 3339 with offset nor epoch milliseconds."""
    STRING_TOO_LONG = "string_too_long"
    """A string is longer than the configured limit (4096 chars by default)."""
    TOO_MANY_IDENTIFIERS = "too_many_identifiers"
    """More identifiers than the contract allows (20)."""
    SCORE_OUT_OF_RANGE = "score_out_of_range"
    """A survey score outside its metric's scale."""
    CHANNEL_MISMATCH = "channel_mismatch"
    """The channel field differs from the topic's channel."""
    CHANNEL_REQUIRED = "channel_required"
    """A message on touchpoints.all without a channel field."""
    INVALID_CHANNEL = "invalid_channel"
    """The channel is not [a-z0-9_]+."""
    NO_USABLE_IDENTIFIER = "no_usable_identifier"
    """Every identifier was blocked or malformed."""
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    """schema_version is not one this processor reads."""
    EVENT_TOO_OLD = "event_too_old"
    """occurred_at is older than the configured age (only when the time policy dead-letters)."""
    EVENT_IN_FUTURE = "event_in_future"
    """occurred_at is too far ahead (only when the time policy dead-letters)."""
    TOO_DEEP = "too_deep"
    """Objects and arrays nested deeper than the limit (32 levels, the event counting as one)."""
    SCHEMA_REGISTRY_FRAMING = "schema_registry_framing"
    """The value starts with a Schema Registry header (a zero byte, a 4-byte schema id)."""
    PROCESSING_ERROR = "processing_error"
    """An unexpected error while processing this message; the detail says which."""


def utf8_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by its ``\\udXXX`` escape, so that it
    encodes as UTF-8 (Kafka headers, ClickHouse strings); other text is returned as is.

    A lone surrogate cannot come from valid UTF-8 JSON, but a detail may quote anything,
    and a dead letter must never fail to be written.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected message with everything needed to inspect, fix and replay it."""

    reason: Reason
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: datetime | None
    key: bytes | None
    raw: bytes
    headers: tuple[tuple[str, bytes], ...]
    event_id: str | None
    received_at: datetime

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """The original headers followed by the reason and source coordinates.

        Header names and the detail are made valid UTF-8 (:func:`utf8_text`); the detail
        is cut to 1024 characters.
        """
        extra = [
            ("reason", self.reason.value),
            ("detail", utf8_text(self.detail[:1024])),
            ("source_topic", self.source_topic),
            ("source_partition", str(self.source_partition)),
            ("source_offset", str(self.source_offset)),
            ("received_at", self.received_at.isoformat()),
        ]
        original = [(utf8_text(name), value) for name, value in self.headers]
        return [*original, *((DLQ_HEADER_PREFIX + k, utf8_text(v).encode()) for k, v in extra)]
