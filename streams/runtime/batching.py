"""Record batches through Faust: one Faust event per fetched run of a topic-partition.

Faust hands every message through its consumer drain loop, conductor, channel queue
and stream, with an asyncio hand-off at each step; that costs about 110 microseconds a
message whatever the agent does. Input topics here are instead delivered as
:class:`RecordBatch` values: every run of records that one fetch returns for one
topic-partition becomes a single Faust event whose offset is the run's last offset.
Faust still runs everything around it: the consumer group and rebalancing, flow
control, table changelogs and recovery, acks and offset commits.

**Offsets stay exact, by construction.** For every batched partition the consumer
keeps a *cursor* per consumer generation: the offset it was sought to after the
generation's assignment (the committed offset) and the first offset not delivered
since. It delivers a run only in order from the cursor:

* nothing before the generation's seek (records fetched while the partition was
  paused for recovery, or from a position left over by an earlier generation, are read
  again from the committed offset);
* never an offset twice within a generation;
* never past a gap: a run that starts after the cursor means records were fetched
  and not delivered (Faust drops runs of partitions it has just paused), or that no
  records exist there (transaction markers, compaction). The consumer reads the
  partition again from the cursor; a run that then still starts later proves the gap
  empty, and only then does a batch settle it.
* a run fetched and not delivered is read again at once, from the cursor (or, fetched
  before the cursor opened, from where the generation's seek put the partition): a gap
  at the end of a partition has no later run to reveal it, and its offsets would stay
  uncommitted until the next record arrived.

Acking a batch settles the offsets it covers (and a gap proven empty before it). A
commit only ever reaches the end of an unbroken run of settled offsets starting at the
committed offset (Faust's own check lets one unsettled offset through, and none at all
on a partition never committed). An ack from an earlier generation is dropped: whoever
holds the partition now reads those offsets again from the committed one.

Topics other than the batched ones (changelogs) are delivered message by message
exactly as Faust does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import faust
from aiokafka.errors import IllegalStateError
from faust.assignor import PartitionAssignor
from faust.transport.conductor import Conductor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerMessage
from faust.types.tuples import ack_lock
from mode.utils.futures import notify
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from schemas.ingested import SourceRecord

__all__ = ["BatchingApp", "RecordBatch"]

logger = logging.getLogger(__name__)


class RecordBatch:
    """The value of a batch event: consecutive records of one topic-partition, in order."""

    __slots__ = ("partition", "records", "settle_from", "topic")

    def __init__(
        self, topic: str, partition: int, records: Sequence[Any], settle_from: int | None = None
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.records = records
        #: acking the batch settles offsets settle_from..last (a gap proven empty included)
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


@dataclass(slots=True)
class _Cursor:
    """Where a batched partition stands within one consumer generation."""

    generation: int
    #: where the generation's seek put the partition (the committed offset, or the
    #: beginning of a partition nobody committed): commits count from here
    base: int
    #: the first offset not delivered yet in this generation
    next: int
    #: the consumer was sent back to ``next`` after a gap: a gap now is proven empty
    probing: bool = False


class _BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, yielding one message per run for batched topics."""

    _cursors: dict[TP, _Cursor]

    def __post_init__(self) -> None:
        super().__post_init__()
        self._cursors = {}
        #: batched partitions with runs dropped before their generation's cursor opened
        self._dropped_early: set[TP] = set()

    def _is_batched(self, topic: str) -> bool:
        return bool(getattr(self.app, "is_batched_topic", _never)(topic))

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, faust.types.Message]]:
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            self._drop(records)
            try:
                await self.perform_seek()
            except Exception as exc:
                self.log.warning("exception performing seek when flow not active %r", exc)
            return
        to_message = self._to_message
        pending = dict(records)
        for tp, run in records.items():
            del pending[tp]
            if not run:
                continue
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                self._drop({tp: run, **pending})
                break
            if not (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            ):
                # paused while the fetch was under way; the consumer has moved past it
                self._drop({tp: run}, read_again=True)
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if not self._is_batched(tp.topic):
                for record in run:
                    yield tp, to_message(tp, record)
                continue
            message = await self._admit(tp, run, generation_id)
            if message is not None:
                yield tp, message

    def _drop(self, records: Mapping[TP, Sequence[Any]], read_again: bool = False) -> None:
        """Runs fetched and not delivered: a gap they leave must be read again, never
        taken as empty.

        ``read_again``: the partition was paused within the generation. A batched one is
        read again by its cursor's gap rule; any other topic read by an agent (the
        alerts topic) is sent back to the dropped run's start, or Faust's drain loop
        would register the offsets skipped as a gap settled, and commit past them.
        Changelogs are positioned by Faust's recovery, which reads them again from the
        stores' offsets.
        """
        for tp, run in records.items():
            if not run:
                continue
            if read_again and not self._is_batched(tp.topic) and not self._is_changelog_tp(tp):
                self._seek_soon(tp, int(run[0].offset))
                continue
            if self._is_batched(tp.topic):
                self._read_again(tp, run)

    def _read_again(self, tp: TP, run: Sequence[Any]) -> None:
        """A run of a batched partition fetched and not delivered: send the consumer
        back to the cursor if the run reached it (see the module docstring)."""
        cursor = self._cursors.get(tp)
        if cursor is None or cursor.generation != self.app.consumer_generation_id:
            self._dropped_early.add(tp)  # the generation's seek is still to come
            return
        cursor.probing = False
        if int(run[-1].offset) >= cursor.next:
            logger.debug(
                "run %s[%d] %d-%d fetched and not delivered; reading from %d again",
                tp.topic,
                tp.partition,
                run[0].offset,
                run[-1].offset,
                cursor.next,
            )
            self._seek_soon(tp, cursor.next)

    def _seek_soon(self, tp: TP, offset: int) -> None:
        """Send the consumer back to ``offset`` of ``tp``, on the consumer's own thread.

        aiokafka's fetcher is not thread-safe: a seek from this thread raced its drain of
        fetched records (``KeyError`` in ``fetched_records``) and crashed the worker. A
        partition revoked before the seek runs is left to its next owner.
        """
        thread: Any = self._thread
        self._read_offset[tp] = offset or None

        def seek() -> None:
            try:
                thread.seek(tp, offset)
            except IllegalStateError:
                logger.debug("%s[%d] no longer assigned: not sought", tp.topic, tp.partition)

        thread.thread_loop.call_soon_threadsafe(seek)

    async def _admit(
        self, tp: TP, run: Sequence[Any], generation_id: int
    ) -> ConsumerMessage | None:
        """The batch to deliver from ``run``, or None (see the module docstring)."""
        cursor = self._cursors.get(tp)
        if cursor is None or cursor.generation != generation_id:
            # before this generation's seek (read again from the committed offset), or
            # fetched in an earlier generation
            self._read_again(tp, run)
            return None
        fresh = (
            run
            if int(run[0].offset) >= cursor.next
            else [r for r in run if int(r.offset) >= cursor.next]
        )
        if not fresh:
            return None
        first = int(fresh[0].offset)
        if first > cursor.next and not cursor.probing:
            logger.info(
                "%s[%d]: records %d-%d were fetched and not delivered; reading them again",
                tp.topic,
                tp.partition,
                cursor.next,
                first - 1,
            )
            cursor.probing = True
            self._seek_soon(tp, cursor.next)
            return None
        settle_from = cursor.next
        cursor.next = int(fresh[-1].offset) + 1
        cursor.probing = False
        return self._to_batch_message(tp, fresh, settle_from)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned partition to its committed offset and open the
        generation's cursors of the batched ones.

        A partition nobody has committed goes to its beginning (with ``earliest``, the
        reset policy; aiokafka would leave it at its fetch position, past the records
        Faust fetched and dropped); one committed at 0 goes to 0. A partition that
        already has a cursor in this generation (a second seek, as Faust's recovery
        makes) goes on where its deliveries left off, so nothing is delivered twice.
        Table changelogs are left alone: Faust positions them from their stores.
        """
        committed: Mapping[TP, int] = await super().seek_to_committed()
        offsets = {tp: o for tp, o in committed.items() if self._is_batched(tp.topic)}
        if not offsets:
            return committed
        generation_id = self.app.consumer_generation_id
        resume = {
            tp: cursor.next
            for tp, cursor in self._cursors.items()
            if cursor.generation == generation_id and tp in offsets
        }
        thread: Any = self._thread
        targets: dict[Any, int] = await thread.call_thread(
            self._send_to_targets, thread._ensure_consumer(), offsets, resume
        )
        for tp, target in targets.items():
            tp = _as_tp(tp)
            if tp not in resume:
                self._cursors[tp] = _Cursor(generation_id, target, target)
                if tp in self._dropped_early:
                    # a run fetched after the seek above and dropped before the cursor
                    # opened has moved the consumer past it: from the target again
                    self._seek_soon(tp, target)
        self._dropped_early.difference_update(_as_tp(tp) for tp in targets)
        return committed

    async def _send_to_targets(
        self, consumer: Any, committed: Mapping[Any, int | None], resume: Mapping[Any, int]
    ) -> dict[Any, int]:
        """On the consumer's thread: where each batched partition is read from now, and
        the consumer sent there.

        The cursor starts at the target, never at the consumer's position: the fetcher
        runs meanwhile, and a run it hands over between the seek and the cursor (and
        that is then dropped) has already moved the position on.
        """
        never = [t for t, o in committed.items() if t not in resume and (o is None or o < 0)]
        targets: dict[Any, int] = {}
        if never:
            if self.app.conf.consumer_auto_offset_reset == "earliest":
                targets.update(await consumer.beginning_offsets(never))
            else:
                targets.update(await consumer.end_offsets(never))
        for tp, offset in committed.items():
            if tp in resume:
                targets[tp] = resume[tp]
            elif offset is not None and offset >= 0:
                targets[tp] = offset
        for tp, target in targets.items():
            consumer.seek(tp, int(target))
        return {tp: int(target) for tp, target in targets.items()}

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._cursors.pop(tp, None)
            self._dropped_early.discard(tp)
        await super().on_partitions_revoked(revoked)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Gaps between batches are settled by the batches' acks, never in advance.

        The drain loop registers the offsets between two deliveries as a gap that
        includes the new message's own offset; for a batch that would let a commit pass
        it before it is acked.
        """
        if self._is_batched(tp.topic):
            return
        await super()._add_gap(tp, offset_from, offset_to)

    def ack(self, message: faust.types.Message) -> bool:
        """Ack a message; for a batch, every offset it settles is acked with it.

        An ack from an earlier consumer generation only marks the message done: its
        offsets belong to whoever holds the partition now, who reads them again.
        """
        with ack_lock:
            batch = message.value
            if not isinstance(batch, RecordBatch):
                return bool(super().ack(message))
            if getattr(message, "generation_id", None) != self.app.consumer_generation_id:
                if not message.acked:
                    message.acked = True
                    self._unacked_messages.discard(message)
                    notify(self._waiting_for_ack)
                return False
            newly = bool(super().ack(message))
            if newly:
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

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit: the end of the unbroken run of acked offsets that starts
        at the committed offset (for a batched partition; others as Faust does)."""
        if not self._is_batched(tp.topic):
            return super()._new_offset(tp)
        acked = self._acked[tp]
        if not acked:
            return None
        base = self._committed_offset[tp]
        if base is None:
            cursor = self._cursors.get(tp)
            if cursor is None or cursor.generation != self.app.consumer_generation_id:
                return None
            base = cursor.base
        acked.sort()
        index = self._acked_index[tp]
        stale = 0
        while stale < len(acked) and acked[stale] < base:
            index.discard(acked[stale])
            stale += 1
        end = base
        taken = stale
        while taken < len(acked) and acked[taken] == end:
            index.discard(end)
            end += 1
            taken += 1
        del acked[:taken]
        return end if end > base else None

    async def wait_empty(self) -> None:
        """Wait for the batches being processed to be acked, at most
        ``stream_wait_empty_timeout`` seconds, then commit what is acked.

        Faust waits without a bound: a batch that cannot finish (its rows wait for a
        ClickHouse that is down) would hold every rebalance and every shutdown. What is
        still in processing at the bound stays uncommitted; whoever holds its partition
        next reads it again, and the idempotent sinks absorb the repeat.
        """
        bound = float(getattr(self.app, "stream_wait_empty_timeout", 10.0))
        deadline = time.monotonic() + bound
        while not self.should_stop and self._unacked_messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning(
                    "%d batches still in processing after %.0f s; their offsets stay "
                    "uncommitted and are read again by whoever holds their partitions",
                    len(self._unacked_messages),
                    bound,
                )
                break
            await self.commit()
            if not self._unacked_messages:
                break
            await self._wait_for_ack(timeout=min(1.0, remaining))
            self._clean_unacked_messages()
        await self.commit_and_end_transactions()

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


def _as_tp(tp: Any) -> TP:
    return tp if isinstance(tp, TP) else TP(tp.topic, tp.partition)


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


class _ActiveFirstAssignor(PartitionAssignor):
    """Faust's assignor, except that a partition this worker holds active is never also
    its standby.

    Faust gives a worker the standby replica of a partition it holds active when the
    group has too few members for the replicas asked for (one worker alone, for one).
    After the active recovery, the standby then seeks the changelog back to where
    recovery began and applies it again, and goes on applying it: over the local writes
    the active has made since (the stitch agent writes its store first and the changelog
    once the batch's rows are stored), so state regressed to older values and later
    batches built on them.
    """

    def assigned_standbys(self) -> set[TP]:
        return set(super().assigned_standbys()) - set(self.assigned_actives())


class BatchingApp(faust.App):
    """A Faust app whose consumer delivers the topics ``is_batched_topic`` names as batches."""

    batched_topics: frozenset[str] = frozenset()
    #: seconds a rebalance or a stop waits for batches in processing (see ``wait_empty``)
    stream_wait_empty_timeout: float = 10.0

    def is_batched_topic(self, topic: str) -> bool:
        return topic in self.batched_topics

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return _TransitionFlowControl(loop=self.loop)

    @cached_property
    def assignor(self) -> Any:
        return _ActiveFirstAssignor(self, replicas=self.conf.table_standby_replicas)

    def _new_transport(self) -> Any:
        return _BatchingTransport(self.conf.broker_consumer, self)
