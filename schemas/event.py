"""The v1 touchpoint event: the shape other services publish to ``touchpoints.<channel>``.

These models are the executable form of the public contract (the event format the
README and ``touchpoint schema`` describe). They check the *shape* of an event: types,
required fields, score ranges, bounds of every number that is stored, sizes.
Normalising identifiers (e-mail case, E.164 phones, blocked values) and correcting
clock skew are decisions of the stream processor and live in ``streams.domain.ingest``.

Types are strict: a JSON value must have the type the schema names, nothing is coerced
(``"9"`` is not a score, ``1`` is not ``true``). An integer stands for a number, as in
JSON Schema. Validate JSON with ``model_validate_json``; that is what the bounds and the
strictness are written for.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "CHANNEL_PATTERN",
    "EARLIEST",
    "EARLIEST_MS",
    "EPOCH_MS_MINIMUM",
    "IDENTIFIER_KINDS",
    "KNOWN_CHANNELS",
    "LATEST",
    "LATEST_MS",
    "MAX_AMOUNT",
    "MAX_DEPTH",
    "MAX_DURATION_S",
    "MAX_IDENTIFIERS",
    "MAX_STRING_CHARS",
    "SCHEMA_VERSION",
    "Commerce",
    "Interaction",
    "Survey",
    "TouchpointEvent",
    "event_json_schema",
    "is_identifier_kind",
    "parse_timestamp",
]

SCHEMA_VERSION = 1
MAX_STRING_CHARS = 4096
MAX_IDENTIFIERS = 20
#: Objects and arrays nest at most this deep, the event object counting as the first level.
MAX_DEPTH = 32
#: Largest ``wait_seconds`` and ``handle_seconds``: 30 days. A longer wait is a data error,
#: and one such value would outweigh every real contact in the effort sums.
MAX_DURATION_S = 30 * 86400
#: Largest ``commerce.amount`` in absolute value; below it cents stay exact in a Float64.
MAX_AMOUNT = 10**12

#: The first and last instants ClickHouse ``DateTime64(3, 'UTC')`` holds; event times
#: outside them are refused, since ClickHouse would store them wrapped or clamped.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
EARLIEST_MS = -2_208_988_800_000
LATEST_MS = 10_413_791_999_999
#: Integer timestamps start here (1973-03-03T09:46:40Z): a smaller integer is read as
#: epoch seconds sent by mistake (every epoch-seconds value until the year 5138 is one),
#: never as a time in the early 1970s.
EPOCH_MS_MINIMUM = 100_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Integer timestamps above this look like microseconds (year 5138 in milliseconds).
_EPOCH_US_MINIMUM = 100_000_000_000_000
CHANNEL_PATTERN = r"^[a-z0-9_]+$"
_CHANNEL_RE = re.compile(CHANNEL_PATTERN)
_CUSTOM_KIND_RE = re.compile(r"^x_[a-z0-9_]{1,64}$")
_SNAKE_RE = re.compile(r"^[a-z][a-z0-9_]*$")

#: Identifier kinds the contract names; ``x_<name>`` adds custom kinds.
IDENTIFIER_KINDS: frozenset[str] = frozenset(
    {"email", "phone", "anonymous_id", "device_id", "account_id", "crm_id", "loyalty_id"}
)

#: The open set of channels the contract names; any other ``[a-z0-9_]+`` channel is accepted too.
KNOWN_CHANNELS: frozenset[str] = frozenset(
    {
        "web",
        "mobile_app",
        "email",
        "sms",
        "push",
        "call_center",
        "chat",
        "social",
        "store",
        "survey",
        "billing",
        "support",
        "product",
    }
)


def parse_timestamp(value: object) -> datetime:
    """Read an event timestamp: RFC 3339 text with an offset, or integer epoch milliseconds.

    Returns an aware UTC datetime between :data:`EARLIEST` and :data:`LATEST`. Text
    without an offset is refused: a naive time means a producer that does not know its
    own timezone, and guessing would shift every score by hours. An integer below
    :data:`EPOCH_MS_MINIMUM` is refused as epoch seconds in disguise: read as
    milliseconds it would land silently in January 1970.
    """
    if isinstance(value, bool):
        raise PydanticCustomError("invalid_timestamp", "a boolean is not a timestamp")
    if isinstance(value, int):
        if value < EPOCH_MS_MINIMUM:
            raise PydanticCustomError(
                "invalid_timestamp",
                "{value} looks like epoch seconds, not milliseconds (integer timestamps "
                "are epoch milliseconds from {minimum}, 1973-03-03): multiply by 1000",
                {"value": value, "minimum": EPOCH_MS_MINIMUM},
            )
        if value > LATEST_MS:
            unit = "microseconds or nanoseconds" if value >= _EPOCH_US_MINIMUM else "milliseconds"
            raise PydanticCustomError(
                "invalid_timestamp",
                "{value} is after 2299-12-31T23:59:59.999Z, the last instant stored; "
                "it looks like epoch {unit}",
                {"value": value, "unit": unit},
            )
        return _EPOCH + timedelta(milliseconds=value)  # exact; value / 1000 is not
    if isinstance(value, str):
        if len(value) > 64 or "T" not in value.upper():
            raise PydanticCustomError(
                "invalid_timestamp",
                "expected RFC 3339 date-time with offset or epoch milliseconds, got '{value}'",
                {"value": value[:64]},
            )
        text = value[:-1] + "+00:00" if value[-1:] in ("z", "Z") else value
        try:
            parsed = datetime.fromisoformat(text.replace("t", "T", 1) if "t" in text else text)
        except ValueError as exc:
            raise PydanticCustomError(
                "invalid_timestamp",
                "expected RFC 3339 date-time with offset or epoch milliseconds, got '{value}'",
                {"value": value[:64]},
            ) from exc
        if parsed.tzinfo is None:
            raise PydanticCustomError(
                "invalid_timestamp", "timestamp '{value}' has no UTC offset", {"value": value}
            )
        try:
            instant: datetime | None = parsed.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            instant = None
        if instant is None or not EARLIEST <= instant <= LATEST:
            raise PydanticCustomError(
                "invalid_timestamp",
                "timestamp '{value}' is outside 1900-01-01T00:00:00Z..2299-12-31T23:59:59.999Z, "
                "the instants stored",
                {"value": value},
            )
        return instant
    raise PydanticCustomError(
        "invalid_timestamp",
        "expected RFC 3339 date-time with offset or epoch milliseconds",
    )


class _Model(BaseModel):
    # Unknown fields are ignored rather than refused: producers may add fields
    # before this processor learns them (forward compatibility).
    # String lengths are checked once over the raw document by the processor, with the
    # configured limit (``MAX_STRING_CHARS`` by default), not per field here.
    # Strict: a producer that sends "9" or true for a score has a bug worth hearing about;
    # coercing would store a wrong answer silently.
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False, strict=True)


class Survey(_Model):
    """A survey answer. Ranges: NPS integer 0..10, CSAT 1..scale_max (default 5), CES 1..7."""

    metric: Literal["nps", "csat", "ces"]
    score: float
    scale_max: int | None = Field(default=None, ge=2, le=100)
    comment: str | None = None

    @model_validator(mode="after")
    def _score_in_range(self) -> Survey:
        score = self.score
        if self.metric == "nps":
            low, high, integral = 0, 10, True
            if self.scale_max not in (None, 10):
                raise PydanticCustomError("score_out_of_range", "NPS is always on a 0..10 scale")
        elif self.metric == "csat":
            low, high, integral = 1, self.scale_max or 5, False
        else:
            low, high, integral = 1, 7, False
            if self.scale_max not in (None, 7):
                raise PydanticCustomError("score_out_of_range", "CES is always on a 1..7 scale")
        if not low <= score <= high:  # also false for NaN
            raise PydanticCustomError(
                "score_out_of_range",
                "{metric} score {score} outside {low}..{high}",
                {"metric": self.metric, "score": score, "low": low, "high": high},
            )
        if integral and not float(score).is_integer():
            raise PydanticCustomError(
                "score_out_of_range", "{metric} score must be an integer", {"metric": self.metric}
            )
        return self


class Interaction(_Model):
    """An assisted or automated contact: direction, queue, agent, durations in seconds
    (0 to :data:`MAX_DURATION_S`)."""

    direction: Literal["inbound", "outbound"] | None = None
    queue: str | None = None
    agent_id: str | None = None
    wait_seconds: float | None = Field(default=None, ge=0, le=MAX_DURATION_S)
    handle_seconds: float | None = Field(default=None, ge=0, le=MAX_DURATION_S)
    transferred: bool | None = None
    escalated: bool | None = None
    resolved: bool | None = None


class Commerce(_Model):
    """An order reference with its amount in ``currency`` (ISO 4217 code); a negative
    amount is a refund. At most :data:`MAX_AMOUNT` either way."""

    order_id: str | None = None
    amount: float | None = Field(default=None, ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$")] | None = None


class TouchpointEvent(_Model):
    """One touchpoint, as published by another service (contract v1).

    ``occurred_at`` and ``sent_at`` accept RFC 3339 with an offset or integer epoch
    milliseconds (see :func:`parse_timestamp` for the range) and are held as aware UTC
    datetimes. ``channel`` is optional here; that it matches the topic is checked by the
    processor, which knows the topic. ``properties`` holds any JSON object; the processor
    bounds its nesting (:data:`MAX_DEPTH`) and refuses integers no 64-bit row can hold.
    """

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    occurred_at: datetime
    type: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_SNAKE_RE.pattern)]
    identifiers: dict[str, str] = Field(min_length=1)
    channel: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    sent_at: datetime | None = None
    schema_version: int = SCHEMA_VERSION
    source: str | None = None
    session_id: str | None = None
    case_id: str | None = None
    survey: Survey | None = None
    interaction: Interaction | None = None
    commerce: Commerce | None = None
    context: dict[str, str] = Field(default_factory=dict)
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at", mode="plain")
    @classmethod
    def _timestamp(cls, value: object) -> datetime:
        return parse_timestamp(value)

    @field_validator("sent_at", mode="plain")
    @classmethod
    def _optional_timestamp(cls, value: object) -> datetime | None:
        return None if value is None else parse_timestamp(value)

    @field_validator("schema_version", mode="after")
    @classmethod
    def _supported_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise PydanticCustomError(
                "unsupported_schema_version",
                "schema_version {value} is not supported (this processor reads {supported})",
                {"value": value, "supported": SCHEMA_VERSION},
            )
        return value

    @field_validator("channel", mode="after")
    @classmethod
    def _channel_syntax(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL_RE.fullmatch(value):
            raise PydanticCustomError(
                "invalid_channel", "channel '{value}' is not [a-z0-9_]+", {"value": value}
            )
        return value

    @field_validator("identifiers", mode="after")
    @classmethod
    def _identifier_count(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_IDENTIFIERS:
            raise PydanticCustomError(
                "too_many_identifiers",
                "{count} identifiers, at most {limit} allowed",
                {"count": len(value), "limit": MAX_IDENTIFIERS},
            )
        return value


def is_identifier_kind(kind: str) -> bool:
    """True for a contract identifier kind or a custom ``x_<name>`` kind."""
    return kind in IDENTIFIER_KINDS or bool(_CUSTOM_KIND_RE.fullmatch(kind))


def event_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a v1 touchpoint event; ``touchpoint schema`` prints it."""
    schema = TouchpointEvent.model_json_schema(mode="validation")
    timestamp = {
        "anyOf": [
            {
                "type": "string",
                "format": "date-time",
                "description": "RFC 3339 with offset, "
                "from 1900-01-01T00:00:00Z to 2299-12-31T23:59:59.999Z",
            },
            {
                "type": "integer",
                "minimum": EPOCH_MS_MINIMUM,
                "maximum": LATEST_MS,
                "description": "epoch milliseconds, from 1973-03-03T09:46:40Z "
                "(a smaller integer is epoch seconds by mistake) to 2299-12-31T23:59:59.999Z",
            },
        ]
    }
    props = schema["properties"]
    props["occurred_at"] = {**timestamp, "title": "Occurred At", "description": "event time"}
    props["sent_at"] = {
        "anyOf": [*timestamp["anyOf"], {"type": "null"}],
        "default": None,
        "title": "Sent At",
        "description": "producer clock at send time; corrects device clock skew",
    }
    props["schema_version"]["const"] = SCHEMA_VERSION
    props["identifiers"]["maxProperties"] = MAX_IDENTIFIERS
    props["identifiers"]["propertyNames"] = {
        "anyOf": [
            {"enum": sorted(IDENTIFIER_KINDS)},
            {"pattern": _CUSTOM_KIND_RE.pattern},
        ]
    }
    props["channel"]["anyOf"][0]["pattern"] = CHANNEL_PATTERN
    props["properties"]["description"] = (
        f"any JSON object, stored as JSON; objects and arrays nest at most {MAX_DEPTH} "
        "levels deep (the event counting as the first), integers lie within "
        "-2^63..2^64-1"
    )
    survey = schema["$defs"]["Survey"]
    survey["description"] = (
        "NPS: integer 0..10. CSAT: 1..scale_max (default 5). CES: 1..7 (7 = easy)."
    )
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://touchpoint-streams.dev/schemas/touchpoint-event-v1.json"
    schema["title"] = "TouchpointEvent"
    return schema
