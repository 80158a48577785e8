"""Counters of the worker, exposed at ``/metrics`` (Prometheus text) and in log lines.

Accounting holds at every moment: ``consumed = accepted + duplicates + dead_lettered``.
All four move together, in one step per batch with no await in between.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Accounting", "WorkerMetrics"]


@dataclass(frozen=True)
class Accounting:
    """Totals since the worker started."""

    consumed: int
    accepted: int
    duplicates: int
    dead_lettered: int

    @property
    def balanced(self) -> bool:
        return self.consumed == self.accepted + self.duplicates + self.dead_lettered

    def __str__(self) -> str:
        return (
            f"consumed={self.consumed} accepted={self.accepted} "
            f"duplicates={self.duplicates} dead_lettered={self.dead_lettered}"
        )


class WorkerMetrics:
    """The worker's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._consumed = Counter(
            "touchpoint_messages_consumed", "Messages read from input topics", ["topic"], registry=r
        )
        self._accepted = Counter(
            "touchpoint_events_accepted", "Valid, first-seen events", ["channel"], registry=r
        )
        self._duplicates = Counter(
            "touchpoint_events_duplicate", "Repeats of an accepted event_id", ["topic"], registry=r
        )
        self._dead_lettered = Counter(
            "touchpoint_messages_dead_lettered", "Messages sent to the DLQ", ["reason"], registry=r
        )
        self._flagged = Counter(
            "touchpoint_events_flagged", "Accepted events with a flag", ["flag"], registry=r
        )
        self.batch_size = Histogram(
            "touchpoint_batch_records",
            "Records per input batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        self.sink_pending = Gauge(
            "touchpoint_sink_pending_rows", "Rows waiting for ClickHouse", registry=r
        )
        self.sink_inserted = Gauge(
            "touchpoint_sink_inserted_rows", "Rows inserted into ClickHouse", ["table"], registry=r
        )
        self.sink_errors = Gauge(
            "touchpoint_sink_insert_errors", "Failed ClickHouse insert attempts", registry=r
        )
        self.dedup_held = Gauge(
            "touchpoint_dedup_ids", "Event ids in the duplicate window", registry=r
        )
        self.forwarded = Counter(
            "touchpoint_events_forwarded", "Accepted events forwarded to stitching", registry=r
        )
        self.stitched = Counter(
            "touchpoint_events_stitched", "Events given a customer by the stitch agent", registry=r
        )
        self.stitch_replayed = Counter(
            "touchpoint_events_stitch_replayed",
            "Events of a replayed stitch batch already held by the journey (not counted again)",
            registry=r,
        )
        self.stitch_duplicates = Counter(
            "touchpoint_events_stitch_duplicate",
            "Events whose event_id was stitched before from another record (not counted again)",
            registry=r,
        )
        self.merges = Counter(
            "touchpoint_identity_merges", "Customers merged into another", ["reason"], registry=r
        )
        self.refusals = Counter(
            "touchpoint_identity_refusals", "Links refused by a guard", ["reason"], registry=r
        )
        self.compacted = Counter(
            "touchpoint_customers_compacted", "Idle customers compacted in hot state", registry=r
        )
        self.erasures = Counter("touchpoint_erasures", "Erasure requests carried out", registry=r)
        self.late = Counter(
            "touchpoint_events_late",
            "Events more than the grace behind their partition's watermark (left out of the "
            "stream's rolling views; ClickHouse counts them in their buckets)",
            registry=r,
        )
        self.watermark = Gauge(
            "touchpoint_event_time_watermark_seconds",
            "Event time (epoch s) of the least advanced input partition",
            registry=r,
        )
        self.stitch_lag = Gauge(
            "touchpoint_stitch_batch_seconds", "Time to stitch the last stitch record", registry=r
        )
        self.unaccounted = Gauge(
            "touchpoint_unaccounted_offsets",
            "Offsets below the committed offset of an input partition this worker holds that "
            "no batch read (a loss; must stay 0; touchpoint verify shows where)",
            ["topic", "partition"],
            registry=r,
        )
        self.alerts_fired = Counter(
            "touchpoint_alerts_fired", "Alerts fired by the stitch agent", ["type"], registry=r
        )
        self.alert_deliveries = Counter(
            "touchpoint_alert_deliveries",
            "Alert deliveries settled, by endpoint and outcome (delivered, dead)",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.alert_attempts = Counter(
            "touchpoint_alert_attempts",
            "Webhook requests, by endpoint and result (2xx, 4xx, 5xx, 429, timeout, error)",
            ["endpoint", "result"],
            registry=r,
        )
        self.alert_queue = Gauge(
            "touchpoint_alert_queue",
            "Alerts waiting for, or in delivery to, an endpoint (back-pressure)",
            ["endpoint"],
            registry=r,
        )
        self.alert_latency = Histogram(
            "touchpoint_alert_delivery_seconds",
            "From the alert firing to the endpoint's 2xx answer",
            ["endpoint"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        self._totals = Tally[str]()

    def count_batch(
        self,
        topic: str,
        consumed: int,
        accepted: Tally[str],
        duplicates: int,
        dead_lettered: Tally[str],
        flags: Tally[str],
    ) -> None:
        """Count one batch: accepted per channel, dead letters per reason, flags per flag."""
        self._consumed.labels(topic).inc(consumed)
        for channel, n in accepted.items():
            self._accepted.labels(channel).inc(n)
        if duplicates:
            self._duplicates.labels(topic).inc(duplicates)
        for reason, n in dead_lettered.items():
            self._dead_lettered.labels(reason).inc(n)
        for flag, n in flags.items():
            self._flagged.labels(flag).inc(n)
        self.batch_size.observe(consumed)
        self._totals.update(
            consumed=consumed,
            accepted=accepted.total(),
            duplicates=duplicates,
            dead_lettered=dead_lettered.total(),
        )

    def accounting(self) -> Accounting:
        t = self._totals
        return Accounting(t["consumed"], t["accepted"], t["duplicates"], t["dead_lettered"])

    def exposition(self, refresh: Callable[[], None] | None = None) -> bytes:
        """Prometheus text format; ``refresh`` updates gauges first."""
        if refresh is not None:
            refresh()
        return bytes(generate_latest(self.registry))
