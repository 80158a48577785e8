"""Counters of the worker, exposed at ``/metrics`` (Prometheus text) and in log lines.

Accounting holds at every moment: ``consumed = accepted + duplicates + dead_lettered``.
All four move together, in one step per batch with no await in between.

What only grows is a counter (exported with the ``_total`` suffix), what goes up and
down is a gauge. Values another object owns (the ClickHouse sink's statistics, the
consumer lag sampled from the broker) are read when Prometheus scrapes, so a scrape
never sees a counter that was copied late. The process collector adds the worker's
resident memory, CPU seconds and open file descriptors (``process_*``).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sinks.clickhouse import SinkStats

__all__ = ["Accounting", "WorkerMetrics"]

# ``*_created`` samples (when each series was first seen) double the exposition and are
# no use to a dashboard; the process start time is in process_start_time_seconds
disable_created_metrics()  # type: ignore[no-untyped-call]


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

    def __init__(self, *, process: bool = True) -> None:
        """``process``: add the process collector (``process_*``; Linux only)."""
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
        self.dedup_held = Gauge(
            "touchpoint_dedup_ids", "Event ids in the duplicate window", registry=r
        )
        self.forwarded = Counter(
            "touchpoint_events_forwarded", "Accepted events forwarded to the resolver", registry=r
        )
        self.stitched = Counter(
            "touchpoint_events_stitched", "Events given a customer by the resolver", registry=r
        )
        self.stitch_replayed = Counter(
            "touchpoint_events_stitch_replayed",
            "Events of a resolve record routed before a restart (not routed again)",
            registry=r,
        )
        self.stitch_duplicates = Counter(
            "touchpoint_events_stitch_duplicate",
            "Events whose event_id was resolved before from another record (not counted again)",
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
            "touchpoint_stitch_batch_seconds", "Time to resolve the last resolve batch", registry=r
        )
        self.customer_events = Counter(
            "touchpoint_customer_events",
            "Events applied to journeys by the customer partitions this worker holds",
            registry=r,
        )
        self.customer_batch_seconds = Histogram(
            "touchpoint_customer_batch_seconds",
            "Time to process a batch of a customers partition",
            registry=r,
        )
        self.handovers = Counter(
            "touchpoint_handovers",
            "Merged customers handed over between partitions (sent, combined, forwarded)",
            ["outcome"],
            registry=r,
        )
        self.unaccounted = Gauge(
            "touchpoint_unaccounted_offsets",
            "Offsets below the committed offset of an input partition this worker holds that "
            "no batch read (a loss; must stay 0; touchpoint verify shows where)",
            ["topic", "partition"],
            registry=r,
        )
        self.alerts_fired = Counter(
            "touchpoint_alerts_fired",
            "Alerts fired by the customer partitions and the detector",
            ["type"],
            registry=r,
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
        self.ready = Gauge(
            "touchpoint_ready",
            "1 while the worker is ready (the /ready checks pass), else 0",
            registry=r,
        )
        self.loop_lag = Gauge(
            "touchpoint_event_loop_lag_seconds",
            "How late the event loop's last heartbeat ran (a blocked loop shows here)",
            registry=r,
        )
        self._totals = Tally[str]()
        self._sink: SinkStats | None = None
        #: (topic, partition) -> records behind; replaced whole by each sample
        self._lag: dict[tuple[str, int], int] = {}
        r.register(_SinkCollector(self))
        r.register(_LagCollector(self))
        if process:
            ProcessCollector(registry=r)

    def watch_sink(self, stats: SinkStats) -> None:
        """Export the sink's statistics (read at every scrape; the sink updates them)."""
        self._sink = stats

    def set_consumer_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Replace the consumer lag: records behind, per topic-partition this worker holds.

        Partitions that left this worker leave the exposition with the next sample."""
        self._lag = dict(lag)

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


class _SinkCollector(Collector):
    """The ClickHouse sink's statistics, read at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        stats = self._metrics._sink
        inserted = CounterMetricFamily(
            "touchpoint_sink_inserted_rows", "Rows inserted into ClickHouse", labels=["table"]
        )
        inserts = CounterMetricFamily(
            "touchpoint_sink_inserts", "Inserts into ClickHouse that succeeded (all tables)"
        )
        errors = CounterMetricFamily(
            "touchpoint_sink_insert_errors", "Failed ClickHouse insert attempts (each is retried)"
        )
        pending = GaugeMetricFamily("touchpoint_sink_pending_rows", "Rows queued for ClickHouse")
        oldest = GaugeMetricFamily(
            "touchpoint_sink_oldest_pending_seconds",
            "Age of the oldest row not yet stored in ClickHouse (in flight included); 0 when "
            "every row is stored",
        )
        if stats is not None:
            for table, rows in sorted(stats.inserted.items()):
                inserted.add_metric([table], rows)
            inserts.add_metric([], stats.inserts)
            errors.add_metric([], stats.insert_errors)
            pending.add_metric([], stats.pending_rows)
            since = stats.oldest_pending_at
            oldest.add_metric([], 0.0 if since is None else max(0.0, time.monotonic() - since))
        yield from (inserted, inserts, errors, pending, oldest)

    def describe(self) -> Iterator[Metric]:
        return self.collect()


class _LagCollector(Collector):
    """The consumer lag of the last sample, per topic-partition."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "touchpoint_consumer_lag",
            "Records in a partition this worker holds that its consumer group has not "
            "committed (end offset minus committed offset), sampled from the broker",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(self._metrics._lag.items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag

    def describe(self) -> Iterator[Metric]:
        return self.collect()
