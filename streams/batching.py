"""Record batches through Faust: one Faust event per fetched run of a topic-partition.

Faust hands every message through its consumer drain loop, conductor, channel queue
and stream, with an asyncio hand-off at each step; that costs about 110 microseconds a
message whatever the agent does. Input topics here are instead delivered as
:class:`RecordBatch` values: every run of records that one fetch returns for one
topic-partition becomes a single Faust event whose offset is the run's last offset.
Faust still runs everything around it: the consumer group and rebalancing, flow
control, table changelogs and recovery, acks and offset commits.

Offsets stay exact. Before a batch is handed on, the offsets it covers except the
last are registered as a *gap* (Faust's own mechanism for offsets that carry no
message, such as transaction markers), so acking the batch event commits
``last + 1`` and nothing beyond an un-acked batch is ever committed.

Topics other than the batched ones (changelogs, later internal topics) are delivered
message by message exactly as Faust does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

import faust
from faust.transport.conductor import Conductor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerMessage

from schemas.ingested import SourceRecord

__all__ = ["BatchingApp", "RecordBatch"]


class RecordBatch:
    """The value of a batch event: consecutive records of one topic-partition, in order."""

    __slots__ = ("partition", "records", "topic")

    def __init__(self, topic: str, partition: int, records: Sequence[Any]) -> None:
        self.topic = topic
        self.partition = partition
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    @property
    def first_offset(self) -> int:
        return int(self.records[0].offset)

    @property
    def last_offset(self) -> int:
        return int(self.records[-1].offset)

    def source_records(self) -> list[SourceRecord]:
        """The records as :class:`SourceRecord` values (headers as a tuple of pairs)."""
        topic, partition = self.topic, self.partition
        return [
            SourceRecord(
                topic,
                partition,
                r.offset,
                r.timestamp,
                r.key,
                r.value,
                tuple((k, bytes(v or b"")) for k, v in r.headers) if r.headers else (),
            )
            for r in self.records
        ]

    def __repr__(self) -> str:
        return f"<RecordBatch {self.topic}[{self.partition}] {len(self)} records>"


class _BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, yielding one message per run for batched topics."""

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, faust.types.Message]]:
        is_batched: Callable[[str], bool] = getattr(self.app, "is_batched_topic", _never)
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as exc:
                self.log.warning("exception performing seek when flow not active %r", exc)
            return
        to_message = self._to_message
        for tp, run in records.items():
            if not run:
                continue
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if not (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            ):
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if not is_batched(tp.topic):
                for record in run:
                    yield tp, to_message(tp, record)
                continue
            await self._settle_with_batch(tp, run[0].offset, run[-1].offset)
            yield tp, self._to_batch_message(tp, run)

    async def _settle_with_batch(self, tp: TP, first: int, last: int) -> None:
        """Let the ack of offset ``last`` settle every offset read since the previous one.

        Offsets from just after the previous read (or ``first``) to ``last - 1`` become a
        gap; that includes holes between runs (transaction markers, compacted records).
        The read offset is set to ``last`` before the batch is handed on, so the drain
        loop adds no gap of its own: its gaps include the new offset itself, which would
        let a commit pass a batch that is not acked yet.
        """
        previous = self._read_offset[tp]
        start = first if previous is None else min(first, previous + 1)
        if last > start:
            await self._add_gap(tp, start, last - 1)
        self._read_offset[tp] = last

    def _to_batch_message(self, tp: TP, run: Sequence[Any]) -> ConsumerMessage:
        last = run[-1]
        timestamp: Any = last.timestamp / 1000.0 if last.timestamp is not None else None
        size = sum(r.serialized_value_size for r in run)
        return ConsumerMessage(
            tp.topic,
            tp.partition,
            last.offset,
            timestamp,
            last.timestamp_type,
            [],
            None,
            RecordBatch(tp.topic, tp.partition, run),  # type: ignore[arg-type]
            None,
            0,
            size,
            tp,
            generation_id=self.app.consumer_generation_id,
        )


def _never(topic: str) -> bool:
    return False


class _PromptConductor(Conductor):
    """Resubscribes a few seconds after the topic list changes (Faust waits 45 s).

    New input topics are discovered at run time; the short coalescing delay keeps a
    burst of new topics in one rebalance without leaving a new channel unread for long.
    """

    _resubscribe_sleep_lock_seconds = 3.0


class _BatchingTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type] = _BatchingConsumer
    Conductor: ClassVar[type] = _PromptConductor


class BatchingApp(faust.App):
    """A Faust app whose consumer delivers the topics ``is_batched_topic`` names as batches."""

    batched_topics: frozenset[str] = frozenset()

    def is_batched_topic(self, topic: str) -> bool:
        return topic in self.batched_topics

    def _new_transport(self) -> Any:
        return _BatchingTransport(self.conf.broker_consumer, self)
