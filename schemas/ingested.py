"""An accepted touchpoint after validation and normalisation: what the sinks store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.event import TouchpointEvent

__all__ = ["IngestedEvent", "SourceRecord"]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A Kafka record as consumed: coordinates, broker timestamp (ms), key, value, headers."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class IngestedEvent:
    """A valid event with normalised identifiers and skew-corrected event time.

    ``occurred_at`` is the corrected event time that windows use; ``client_occurred_at``
    is what the producer sent. ``flags`` name what is unusual but not wrong (for example
    ``event_in_future``). ``customer_id`` is empty until identity stitching assigns one.
    ``row`` is the event's ``events_store`` row serialised as a JSON array (customer and
    journey stage still empty), built by ingest once the event is accepted: what the
    ingest agent forwards to stitching, byte for byte. It is derived from the other
    fields and left out of comparisons.
    """

    event: TouchpointEvent
    channel: str
    occurred_at: datetime
    client_occurred_at: datetime
    clock_skew_ms: int
    received_at: datetime
    identifiers: dict[str, str]
    rejected_identifiers: dict[str, str]
    flags: tuple[str, ...]
    source: SourceRecord
    customer_id: str = ""
    row: bytes = field(default=b"", compare=False, repr=False)
