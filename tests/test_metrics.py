"""The worker's metrics: what only grows is a counter, what waits has an age."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import pytest

from sinks.clickhouse import ClickHouseSink, SinkStats
from streams.runtime.metrics import WorkerMetrics
from tests.metric_names import exported_families, sample_names


def exposition(metrics: WorkerMetrics) -> str:
    return metrics.exposition().decode()


def value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in the exposition")


def test_the_sinks_cumulative_numbers_are_counters_read_at_scrape_time() -> None:
    metrics = WorkerMetrics(process=False)
    stats = SinkStats()
    metrics.watch_sink(stats)
    stats.inserted["events_store"] = 10
    stats.inserts = 2
    stats.insert_errors = 1
    text = exposition(metrics)
    families = exported_families(text)
    assert families["touchpoint_sink_inserted_rows"] == "counter"
    assert families["touchpoint_sink_insert_errors"] == "counter"
    assert families["touchpoint_sink_inserts"] == "counter"
    assert value(text, 'touchpoint_sink_inserted_rows_total{table="events_store"}') == 10
    stats.inserted["events_store"] = 25  # the sink counts on; the next scrape sees it
    assert (
        value(exposition(metrics), 'touchpoint_sink_inserted_rows_total{table="events_store"}')
        == 25
    )


def test_the_sink_backlog_is_its_pending_rows_and_the_age_of_the_oldest() -> None:
    metrics = WorkerMetrics(process=False)
    stats = SinkStats(pending_rows=300)
    metrics.watch_sink(stats)
    assert value(exposition(metrics), "touchpoint_sink_oldest_pending_seconds") == 0.0
    stats.oldest_pending_at = time.monotonic() - 42
    text = exposition(metrics)
    assert value(text, "touchpoint_sink_pending_rows") == 300
    assert value(text, "touchpoint_sink_oldest_pending_seconds") == pytest.approx(42, abs=1)
    assert exported_families(text)["touchpoint_sink_oldest_pending_seconds"] == "gauge"


def test_consumer_lag_is_per_topic_partition_and_each_sample_replaces_the_last() -> None:
    metrics = WorkerMetrics(process=False)
    metrics.set_consumer_lag({("touchpoints.web", 0): 12, ("touchpoints.web", 1): 0})
    text = exposition(metrics)
    assert value(text, 'touchpoint_consumer_lag{partition="0",topic="touchpoints.web"}') == 12
    metrics.set_consumer_lag({("touchpoints.web", 1): 3})  # partition 0 moved elsewhere
    text = exposition(metrics)
    assert 'partition="0"' not in text
    assert value(text, 'touchpoint_consumer_lag{partition="1",topic="touchpoints.web"}') == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process metrics read /proc")
def test_process_memory_cpu_and_open_files_are_exported() -> None:
    names = sample_names(exposition(WorkerMetrics()))
    assert {
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
    } <= names


def test_no_family_is_a_gauge_that_only_grows() -> None:
    """Gauges are levels (pending, lag, held ids, last durations), never running totals."""
    families = exported_families(exposition(WorkerMetrics(process=False)))
    gauges = {name for name, kind in families.items() if kind == "gauge"}
    assert gauges == {
        "touchpoint_dedup_ids",
        "touchpoint_event_time_watermark_seconds",
        "touchpoint_stitch_batch_seconds",
        "touchpoint_alert_queue",
        "touchpoint_ready",
        "touchpoint_event_loop_lag_seconds",
        "touchpoint_sink_pending_rows",
        "touchpoint_sink_oldest_pending_seconds",
        "touchpoint_consumer_lag",
        # a level per partition the worker holds now (it leaves with the partition)
        "touchpoint_unaccounted_offsets",
    }


class HeldInserts:
    """A ClickHouse client double whose inserts wait until released (a slow server)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def insert(
        self,
        table: str,
        data: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        database: str,
        column_oriented: bool,
        settings: dict[str, Any],
    ) -> None:
        self.started.set()
        await self.release.wait()

    async def command(self, cmd: str, parameters: Any = None, settings: Any = None) -> None:
        return None


async def test_the_sink_reports_its_oldest_row_until_it_is_stored_in_flight_included() -> None:
    client = HeldInserts()
    sink = ClickHouseSink(client, "db", batch_rows=1, linger_s=0.0)
    await sink.start()
    try:
        assert sink.stats.oldest_pending_at is None
        before = time.monotonic()
        stored = asyncio.Event()
        row = ("k", "v", "c1", 1, 1, 0)
        await sink.add({"customer_aliases_store": [row]}, stored.set, "t1")
        await client.started.wait()  # the row is in flight now
        queued_at = sink.stats.oldest_pending_at
        assert queued_at is not None and queued_at >= before
        await sink.add({"customer_aliases_store": [row]}, lambda: None, "t2")
        assert sink.stats.oldest_pending_at == queued_at  # still the first row's age
        assert sink.stats.last_stored_at is None
        client.release.set()
        await stored.wait()
        await sink.flush()
        assert sink.stats.oldest_pending_at is None
        assert sink.stats.last_stored_at is not None
    finally:
        client.release.set()
        await sink.stop()
