"""Reconciliation: what the consumer group committed, what was accounted, what is stored.

For every input partition: the group's committed offset and the log's start (Kafka),
and the ledger and outcome rows (ClickHouse, :mod:`sinks.ledger`). Two numbers must be
zero, always:

* **unread**: offsets below the committed one that no ingest batch read (nor proved to
  hold no record): the group moved past messages nothing processed;
* **missing**: offsets a batch read that hold a record but have no outcome row (event,
  dead letter, duplicate): something processed and acknowledged that ClickHouse does
  not hold. Meaningful once the stitch topic is committed to its end (the event rows
  of accepted messages are written by the stitch agent); before that the report says
  *pending*.

``touchpoint verify`` prints the report (and exits non-zero on a difference); every
worker exports the unread count of the partitions it holds as
``touchpoint_unaccounted_offsets`` (:class:`LedgerWatch`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sinks.ledger import holes, ledger_ranges, ledger_start, missing_outcomes, span
from streams.runtime.topics import discover_input_topics, internal_topics, uncommitted
from streams.settings import Settings

__all__ = ["LedgerWatch", "PartitionCheck", "Reconciliation", "reconcile"]

logger = logging.getLogger(__name__)

#: At most this many unaccounted ranges of one partition are read back from Kafka.
MAX_PROBES = 200


@dataclass
class PartitionCheck:
    """One input partition: its offsets and what is accounted of them."""

    topic: str
    partition: int
    start: int
    committed: int
    end: int
    read: int = 0
    unread: list[tuple[int, int]] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)

    @property
    def difference(self) -> int:
        return span(self.unread) + span(self.missing)


@dataclass
class Reconciliation:
    """The report of :func:`reconcile`."""

    partitions: list[PartitionCheck]
    #: stitch records not yet committed: accepted events may not be stored yet
    pending: int = 0

    @property
    def unread(self) -> int:
        return sum(span(p.unread) for p in self.partitions)

    @property
    def missing(self) -> int:
        return sum(span(p.missing) for p in self.partitions)

    @property
    def difference(self) -> int:
        return self.unread + self.missing

    def lines(self) -> list[str]:
        total_committed = sum(p.committed - p.start for p in self.partitions)
        out = [
            f"{len(self.partitions)} input partitions, {total_committed:,} offsets committed, "
            f"{sum(p.read for p in self.partitions):,} read",
            f"  unread (committed, never read): {self.unread:,}",
            f"  missing (read, not stored):     {self.missing:,}"
            + ("" if not self.pending else f"  (pending: {self.pending:,} stitch records)"),
        ]
        for p in self.partitions:
            if p.difference:
                out.append(
                    f"  {p.topic}[{p.partition}] committed {p.committed}: unread {p.unread[:5]}"
                    f" missing {p.missing[:5]}"
                )
        return out


async def _kafka_offsets(
    settings: Settings, topics: Iterable[str]
) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(topic, partition) -> (log start, committed by the group, log end)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    options = settings.kafka_client_options()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **options)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
        **options,
    )
    await admin.start()
    await consumer.start()
    try:
        parts = [
            TopicPartition(t["topic"], p["partition"])
            for t in await admin.describe_topics(list(topics))
            for p in t["partitions"]
        ]
        starts = await consumer.beginning_offsets(parts)
        ends = await consumer.end_offsets(parts)
        found = {}
        for tp in parts:
            start = int(starts[tp])
            committed = await consumer.committed(tp)
            found[(tp.topic, tp.partition)] = (start, int(committed or start), int(ends[tp]))
        return found
    finally:
        await consumer.stop()
        await admin.close()


async def _holding_records(
    settings: Settings, topic: str, partition: int, ranges: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The parts of ``ranges`` that hold records (read back from the partition)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if not ranges:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        **settings.kafka_client_options(),
    )
    await consumer.start()
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    found: list[tuple[int, int]] = []
    try:
        for first, last in ranges[:MAX_PROBES]:
            consumer.seek(tp, first)
            offsets: list[int] = []
            while True:
                batch = await consumer.getmany(tp, timeout_ms=2000, max_records=500)
                records = batch.get(tp, [])
                if not records:
                    break
                offsets += [r.offset for r in records if r.offset <= last]
                if records[-1].offset >= last:
                    break
            found += _runs(offsets)
        found += ranges[MAX_PROBES:]  # not probed: counted as holding records
    finally:
        await consumer.stop()
    return found


def _runs(offsets: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for offset in sorted(offsets):
        if runs and runs[-1][1] + 1 == offset:
            runs[-1] = (runs[-1][0], offset)
        else:
            runs.append((offset, offset))
    return runs


async def reconcile(settings: Settings, client: Any) -> Reconciliation:
    """Reconcile every input partition of the deployment ``settings`` names."""
    found = await discover_input_topics(settings)
    offsets = await _kafka_offsets(settings, found.usable)
    behind = await uncommitted(
        settings.kafka_bootstrap,
        settings.app_id,
        list(internal_topics(settings)),
        **settings.kafka_client_options(),
    )
    pending = sum(end - at for at, end in behind.values())
    report = Reconciliation([], pending)
    for (topic, partition), (start, committed, end) in sorted(offsets.items()):
        check = PartitionCheck(topic, partition, start, committed, end)
        report.partitions.append(check)
        # offsets committed before the ledger began (an upgrade) are not checked: the
        # first batch of every partition reads from where the group stood then
        began = await ledger_start(client, settings.clickhouse_database, topic, partition)
        if began is None or committed <= max(start, began):
            continue
        start = max(start, began)
        ranges = await ledger_ranges(
            client, settings.clickhouse_database, topic, partition, start, committed
        )
        gaps = holes(ranges, start, committed)
        # an uncovered gap with no record in it (a marker, compaction) is not a loss
        check.unread = await _holding_records(settings, topic, partition, gaps)
        covered = holes(gaps, start, committed)  # the complement: what batches read
        check.read = span(covered)
        if not pending:
            candidates = await missing_outcomes(
                client, settings.clickhouse_database, topic, partition, covered
            )
            check.missing = await _holding_records(settings, topic, partition, candidates)
    return report


class LedgerWatch:
    """The unread offsets of the partitions one worker holds, kept up to date cheaply.

    Each check reads only the ledger rows since the offset verified last, so its cost
    follows the traffic, not the history. Holes found stay counted: a loss does not
    heal. A partition this worker takes over is checked from its log start once.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        #: (topic, partition) -> (verified up to, unread offsets found below it)
        self._state: dict[tuple[str, int], tuple[int, int]] = {}

    def keep(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Forget every partition but these (the ones this worker holds now)."""
        held = set(partitions)
        for key in [k for k in self._state if k not in held]:
            del self._state[key]

    async def check(
        self, client: Any, positions: Mapping[tuple[str, int], tuple[int, int]]
    ) -> dict[tuple[str, int], int]:
        """``positions``: (topic, partition) -> (log start, committed offset); returns
        the unread offsets of each."""
        unread: dict[tuple[str, int], int] = {}
        for key, (start, committed) in positions.items():
            if key not in self._state:
                began = await ledger_start(client, self.database, key[0], key[1])
                if began is None:  # nothing read since the ledger began
                    unread[key] = 0
                    continue
                self._state[key] = (max(start, began), 0)
            verified, found = self._state[key]
            verified = max(verified, start)
            if committed > verified:
                ranges = await ledger_ranges(
                    client, self.database, key[0], key[1], verified, committed
                )
                missing = span(holes(ranges, verified, committed))
                if missing:
                    logger.error(
                        "%s[%d]: %d offsets below the committed %d were never read; see "
                        "touchpoint verify",
                        key[0],
                        key[1],
                        missing,
                        committed,
                    )
                found += missing
                verified = committed
            self._state[key] = (verified, found)
            unread[key] = found
        return unread
