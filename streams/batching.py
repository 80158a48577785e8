"""Record batches through Faust: one Faust event per fetched run of a topic-partition.

Faust hands every message through its consumer drain loop, conductor, channel queue
and stream, with an asyncio hand-off at each step; that costs about 110 microseconds a
message whatever the agent does. Input topics here are instead delivered as
:class:`RecordBatch` values: every run of records that one fetch returns for one
topic-partition becomes a single Faust event whose offset is the run's last offset.
Faust still runs everything around it: the consumer group and rebalancing, flow
control, table changelogs and recovery, acks and offset commits.

Offsets stay exact. A batch event carries its last offset; acking it acks every
offset the batch covers (and any hole before it, such as transaction markers), so
the commit reaches ``last + 1``, and never passes a batch that is not acked.

Topics other than the batched ones (changelogs, later internal topics) are delivered
message by message exactly as Faust does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar

import faust
from faust.transport.conductor import Conductor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerMessage
from faust.types.tuples import ack_lock
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from schemas.ingested import SourceRecord

__all__ = ["BatchingApp", "RecordBatch"]


class RecordBatch:
    """The value of a batch event: consecutive records of one topic-partition, in order."""

    __slots__ = ("partition", "records", "settle_from", "topic")

    def __init__(
        self, topic: str, partition: int, records: Sequence[Any], settle_from: int | None = None
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.records = records
        #: acking the batch settles offsets settle_from..last (holes between runs included)
        self.settle_from = int(records[0].offset) if settle_from is None else settle_from

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

    #: Per batched partition: the consumer generation and the last offset delivered in it.
    _delivered: dict[TP, tuple[int, int]]

    def __post_init__(self) -> None:
        super().__post_init__()
        self._delivered = {}

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
            fresh = self._undelivered(tp, run, generation_id)
            if not fresh:
                continue
            self._delivered[tp] = (generation_id, int(fresh[-1].offset))
            yield tp, self._to_batch_message(tp, fresh, self._settle_from(tp, fresh))

    def _undelivered(self, tp: TP, run: Sequence[Any], generation_id: int) -> Sequence[Any]:
        """The records of ``run`` not yet delivered in this consumer generation.

        Faust resumes the flow before it seeks the stream partitions to their committed
        offsets after a recovery; a run fetched in between is delivered, and fetched
        again after the seek. Its drain loop lets the second copy through (it accepts
        an offset equal to the read offset, which the seek sets to the committed one),
        so every record would be processed twice. Within one generation a delivered
        batch reaches its agent; a new generation drops what was delivered and not
        processed, so the guard holds only within the generation it was set in.
        """
        delivered = self._delivered.get(tp)
        if delivered is None or delivered[0] != generation_id:
            return run
        last = delivered[1]
        if int(run[-1].offset) <= last:
            return ()
        if int(run[0].offset) > last:
            return run
        return [r for r in run if int(r.offset) > last]

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned partition to its committed offset, and a partition nobody
        has committed to its beginning (with ``earliest``, the reset policy).

        Faust drops records it has fetched but may not deliver (flow stopped for a
        rebalance or recovery, the generation changed) and relies on this seek to fetch
        them again. aiokafka's ``seek_to_committed`` moves only partitions committed
        above offset 0 and leaves the others at their fetch position, past the dropped
        records: on a partition without a commit (one that a worker killed before its
        first commit held, now taken over by another) they were skipped for good. Read
        such a partition again from its beginning, as a new consumer would; the
        duplicate windows and the replay-safe sinks absorb what is read twice. Table
        changelogs are left alone: Faust positions them from their stores' offsets.
        """
        committed: Mapping[TP, int] = await super().seek_to_committed()
        # only the topics read in batches (inputs, stitch): table changelogs are
        # positioned by Faust's recovery from the offsets their stores keep
        is_batched: Callable[[str], bool] = getattr(self.app, "is_batched_topic", _never)
        offsets: Mapping[Any, int | None] = {
            tp: offset for tp, offset in committed.items() if is_batched(tp.topic)
        }
        if any(offset is None or offset <= 0 for offset in offsets.values()):
            thread: Any = self._thread
            await thread.call_thread(self._rewind_uncommitted, thread._ensure_consumer(), offsets)
        return committed

    async def _rewind_uncommitted(self, consumer: Any, committed: Mapping[Any, int | None]) -> None:
        """On the consumer's thread: partitions committed at 0 go to 0; never committed
        ones to their beginning when the reset policy is ``earliest``."""
        for tp, offset in committed.items():
            if offset == 0:
                consumer.seek(tp, 0)
        never = [tp for tp, offset in committed.items() if offset is None or offset < 0]
        if never and self.app.conf.consumer_auto_offset_reset == "earliest":
            await consumer.seek_to_beginning(*never)

    def _settle_from(self, tp: TP, run: Sequence[Any]) -> int:
        """The first offset the batch's ack settles: just after the previous delivery.

        That includes holes between runs (transaction markers, compacted records).
        The read offset itself is left to Faust's drain loop, which moves it only once
        a message is delivered: moving it earlier would make Faust drop, as already
        read, the records it fetches again after a seek (recovery, rebalance).
        """
        previous = self._read_offset[tp]
        first = int(run[0].offset)
        return first if previous is None else min(first, previous + 1)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Gaps between batches are settled by the batches' acks, never in advance.

        The drain loop registers the offsets between two deliveries as a gap that
        includes the new message's own offset; for a batch that would let a commit pass
        it before it is acked.
        """
        if getattr(self.app, "is_batched_topic", _never)(tp.topic):
            return
        await super()._add_gap(tp, offset_from, offset_to)

    def ack(self, message: faust.types.Message) -> bool:
        """Ack a message; for a batch, every offset it settles is acked with it.

        Offsets are settled only when the batch is acked, never when it is fetched:
        a commit stops at the first batch that is not acked, however many later
        batches of the partition are.
        """
        with ack_lock:
            newly = bool(super().ack(message))
            batch = message.value
            if newly and isinstance(batch, RecordBatch):
                tp = message.tp
                committed = self._committed_offset[tp]
                index = self._acked_index[tp]
                acked = self._acked[tp]
                start = (
                    batch.settle_from if committed is None else max(batch.settle_from, committed)
                )
                for offset in range(start, batch.last_offset):
                    if offset not in index:
                        index.add(offset)
                        acked.append(offset)
                self._n_acked += max(0, batch.last_offset - start)
            return newly

    def _to_batch_message(self, tp: TP, run: Sequence[Any], settle_from: int) -> ConsumerMessage:
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
            RecordBatch(tp.topic, tp.partition, run, settle_from),  # type: ignore[arg-type]
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


class _TransitionFlowControl(FlowControlEvent):
    """Clears the stream queues only when flow really resumes after a suspension.

    Faust calls ``resume()`` again when recovery ends, even when recovery had already
    resumed flow to read changelogs; records fetched after recovery's seek were then
    wiped from the queues and, the consumer being past them, never fetched again: the
    worker went on without them. A resume of flow that is already running clears
    nothing.
    """

    def resume(self) -> None:
        if self.is_active():
            self._resume.set()
            return
        super().resume()


class BatchingApp(faust.App):
    """A Faust app whose consumer delivers the topics ``is_batched_topic`` names as batches."""

    batched_topics: frozenset[str] = frozenset()

    def is_batched_topic(self, topic: str) -> bool:
        return topic in self.batched_topics

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return _TransitionFlowControl(loop=self.loop)

    def _new_transport(self) -> Any:
        return _BatchingTransport(self.conf.broker_consumer, self)
