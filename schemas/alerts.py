"""Alerts as they leave the stream: the Kafka message, the webhook body, stable ids.

The ``touchpoints.alerts`` topic carries one JSON object per alert (key: the alert id)::

    {"id": "msg_...", "type": "customer.detractor", "subject": "<customer id>",
     "customer_id": "<customer id>", "fired_at": <epoch ms>,
     "segments": ["channel:web", ...], "data": {...}}

and every webhook endpoint receives ``{"type", "timestamp", "data"}`` (CONTRACT section 4)
with the id in the ``webhook-id`` header.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["Alert", "alert_id", "iso"]


def alert_id(alert_type: str, *parts: object) -> str:
    """A stable id from what fired the alert (``msg_`` and 32 hex digits)."""
    text = "\x1f".join([alert_type, *(str(p) for p in parts)])
    return "msg_" + hashlib.sha256(text.encode()).hexdigest()[:32]


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC timestamp."""
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: what the Kafka topic, ClickHouse and every endpoint receive."""

    id: str
    type: str
    subject: str
    fired_at: int  # epoch ms, wall clock
    segments: tuple[str, ...]
    data: Mapping[str, Any]
    customer_id: str = ""

    def body(self) -> bytes:
        """The webhook body (CONTRACT section 4): type, timestamp, data."""
        return orjson.dumps({"type": self.type, "timestamp": iso(self.fired_at), "data": self.data})

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "type": self.type,
                "subject": self.subject,
                "customer_id": self.customer_id,
                "fired_at": self.fired_at,
                "segments": list(self.segments),
                "data": self.data,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Alert:
        value = orjson.loads(raw)
        return cls(
            id=value["id"],
            type=value["type"],
            subject=value["subject"],
            fired_at=int(value["fired_at"]),
            segments=tuple(value["segments"]),
            data=value["data"],
            customer_id=value.get("customer_id", ""),
        )
