"""Offset bookkeeping of batched partitions: nothing committed that was not delivered.

The consumer is the real one (``streams.runtime.batching``) inside a real Faust app; only the
broker side is a double: what a fetch returns, where a seek goes, what is committed
(the consumer thread and aiokafka, outside our control). The scenario of the trust
issue's finding 3 is replayed step by step: a worker that just took a partition over
has records fetched and dropped while the partition is paused for recovery, a later run
arrives before Faust's seek to the committed offset, and the records in between must
still be delivered before any commit passes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from faust.types import TP

from streams.runtime.batching import BatchingApp, RecordBatch

TOPIC = "touchpoints.web"
TP0 = TP(TOPIC, 0)


class FakeKafka:
    """The consumer thread and the aiokafka consumer behind it: positions and seeks."""

    def __init__(self, committed: int | None, beginning: int = 0) -> None:
        self.committed = committed
        self.beginning = beginning
        self.position_of: dict[Any, int] = {}
        self.seeks: list[tuple[Any, int]] = []

    # -- the Faust consumer thread -------------------------------------------------------
    async def seek_to_committed(self) -> Mapping[Any, int | None]:
        if self.committed:
            self.position_of[TP0] = self.committed
        return {TP0: self.committed}

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        return await fun(*args)

    def _ensure_consumer(self) -> FakeKafka:
        return self

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.position_of[tp] = offset

    def highwater(self, tp: Any) -> int:
        return 0

    # -- the aiokafka consumer -----------------------------------------------------------
    def sync_seek(self, tp: Any, offset: int) -> None:
        self.position_of[tp] = offset

    async def beginning_offsets(self, tps: Any) -> dict[Any, int]:
        return dict.fromkeys(tps, self.beginning)


class _Aiokafka:
    """The aiokafka consumer the thread holds (seeks made through it are not the
    consumer's own re-reads, so they are not recorded as such)."""

    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka

    def seek(self, tp: Any, offset: int) -> None:
        self.kafka.sync_seek(tp, offset)

    async def beginning_offsets(self, tps: Any) -> dict[Any, int]:
        return await self.kafka.beginning_offsets(tps)


def _records(first: int, last: int) -> list[Any]:
    return [
        SimpleNamespace(
            offset=o,
            timestamp=1_700_000_000_000 + o,
            timestamp_type=0,
            key=None,
            value=b"{}",
            headers=[],
            serialized_value_size=2,
        )
        for o in range(first, last + 1)
    ]


class Harness:
    """A consumer of one batched partition, driven fetch by fetch."""

    def __init__(self, committed: int | None, beginning: int = 0) -> None:
        self.app = BatchingApp(
            "offsets-test",
            broker="kafka://127.0.0.1:1",
            store="memory://",
            web_enabled=False,
            loop=asyncio.get_running_loop(),
        )
        self.app.batched_topics = frozenset([TOPIC])
        topic = self.app.topic(TOPIC, acks=True, value_serializer="raw")
        self.app.topics.add(topic)
        self.app.consumer_generation_id = 1
        self.kafka = FakeKafka(committed, beginning)
        consumer: Any = self.app.consumer
        thread = SimpleNamespace(
            seek_to_committed=self.kafka.seek_to_committed,
            call_thread=self.kafka.call_thread,
            _ensure_consumer=lambda: _Aiokafka(self.kafka),
            seek=self.kafka.seek,
            highwater=self.kafka.highwater,
            # the consumer thread's loop: seeks run there, after the current step
            thread_loop=asyncio.get_running_loop(),
        )
        # the consumer made its own thread and loop for a broker; this test has none
        consumer._thread.thread_loop.close()
        consumer._thread = thread
        self.consumer = consumer
        self._next: dict[TP, Sequence[Any]] = {}

        #: the partitions not paused while a fetch is under way
        self.active: set[TP] = {TP0}

        async def fetched(timeout: float) -> tuple[dict[TP, Sequence[Any]], set[TP]]:
            records, self._next = self._next, {}
            return records, set(self.active)

        consumer._wait_next_records = fetched

    async def fetch(self, first: int, last: int) -> list[Any]:
        """One fetch returning records first..last; the batch messages delivered from it."""
        self._next = {TP0: _records(first, last)}
        delivered = [message async for _tp, message in self.consumer.getmany(1.0)]
        await asyncio.sleep(0)  # the seeks it asked for run on the consumer's thread
        return delivered

    async def drop(self, records: Mapping[TP, Sequence[Any]]) -> None:
        """Runs fetched and not delivered (a pause, a rebalance under way)."""
        self.consumer._drop(records)
        await asyncio.sleep(0)

    async def seek(self) -> None:
        """Faust's seek to the committed offsets (recovery, rebalance)."""
        await self.app.topics._update_indices()  # which topics take acks
        await self.consumer.perform_seek()
        await asyncio.sleep(0)

    def ack(self, message: Any) -> None:
        self.consumer.ack(message)

    def commit_offset(self) -> int | None:
        offset: int | None = self.consumer._new_offset(TP0)
        return offset


def _offsets(messages: Sequence[Any]) -> list[int]:
    batches: list[RecordBatch] = [m.value for m in messages]
    return [int(r.offset) for b in batches for r in b.records]


async def test_a_run_fetched_before_the_seek_is_not_delivered_and_the_gap_is_read() -> None:
    """Finding 3: records 100-104 were fetched and dropped while the partition was
    paused; a run 105-109 arrives before the seek. Nothing may be delivered before the
    seek, and 100-104 must be delivered before a commit can pass them."""
    h = Harness(committed=100)
    assert await h.fetch(105, 109) == []  # before this generation's seek
    await h.seek()
    delivered = await h.fetch(100, 109)
    assert _offsets(delivered) == list(range(100, 110))
    for batch in delivered:
        h.ack(batch)
    assert h.commit_offset() == 110


async def test_a_run_handed_over_during_the_seek_leaves_the_cursor_at_the_committed_offset() -> (
    None
):
    """The fetcher runs while Faust seeks: a run read from the committed offset can be
    handed over (and dropped, no cursor yet) before the cursor is opened, and the
    consumer's position is then past it. The cursor starts at the committed offset
    anyway, and the dropped run is read again."""
    h = Harness(committed=100)
    await h.seek()
    h.kafka.position_of[TP0] = 150  # as if 100-149 had been consumed meanwhile
    assert await h.fetch(150, 159) == []
    assert h.kafka.seeks[-1] == (TP0, 100)
    delivered = await h.fetch(100, 159)
    assert _offsets(delivered) == list(range(100, 160))
    for message in delivered:
        h.ack(message)
    assert h.commit_offset() == 160


async def test_a_gap_after_the_cursor_is_read_again_not_settled() -> None:
    h = Harness(committed=100)
    await h.seek()
    first = await h.fetch(100, 104)
    assert _offsets(first) == list(range(100, 105))
    # 105-109 were fetched and never delivered (say, the partition was paused):
    # the next run starts at 110
    assert await h.fetch(110, 114) == []
    assert h.kafka.seeks[-1] == (TP0, 105)  # read again from the first undelivered offset
    again = await h.fetch(105, 114)
    assert _offsets(again) == list(range(105, 115))
    for batch in first + again:
        h.ack(batch)
    assert h.commit_offset() == 115


async def test_a_gap_that_holds_no_records_is_settled_after_reading_it_again() -> None:
    """Transaction markers take offsets no record has: after reading from the cursor
    again the broker still starts later, so the gap is empty and is settled."""
    h = Harness(committed=100)
    await h.seek()
    first = await h.fetch(100, 104)
    assert await h.fetch(106, 108) == []  # offset 105 is a marker
    after = await h.fetch(106, 108)
    assert _offsets(after) == [106, 107, 108]
    assert after[0].value.settle_from == 105
    for batch in first + after:
        h.ack(batch)
    assert h.commit_offset() == 109


async def test_a_run_dropped_after_the_probe_does_not_prove_the_gap_empty() -> None:
    h = Harness(committed=100)
    await h.seek()
    await h.fetch(100, 104)
    assert await h.fetch(110, 114) == []  # gap 105-109: read again
    # the re-read run is fetched but dropped before delivery (partition paused again)
    await h.drop({TP0: _records(105, 109)})  # sends the consumer back at once
    assert await h.fetch(110, 114) == []  # still a gap: read again, never settled
    assert h.kafka.seeks.count((TP0, 105)) == 3


async def test_a_run_dropped_at_the_end_of_a_partition_is_read_again_without_a_later_run() -> None:
    """No record comes after it, so no later run reveals the gap: the drop itself sends
    the consumer back (a restarted worker's commits once stayed behind for good)."""
    h = Harness(committed=100)
    await h.seek()
    await h.fetch(100, 104)
    h.active = set()  # the partition is paused while 105-109 are fetched
    assert await h.fetch(105, 109) == []
    assert h.kafka.seeks[-1] == (TP0, 105)
    h.active = {TP0}
    again = await h.fetch(105, 109)
    assert _offsets(again) == list(range(105, 110))


async def test_a_run_dropped_before_the_cursor_opened_is_read_from_the_target_again() -> None:
    """The fetcher runs while Faust seeks: a run fetched from the committed offset and
    dropped before the generation's cursor opens moved the consumer past it."""
    h = Harness(committed=100)
    await h.drop({TP0: _records(100, 109)})  # no cursor yet
    await h.seek()
    assert h.kafka.seeks[-1] == (TP0, 100)
    delivered = await h.fetch(100, 109)
    assert _offsets(delivered) == list(range(100, 110))


async def test_nothing_is_delivered_twice_within_a_generation() -> None:
    h = Harness(committed=100)
    await h.seek()
    first = await h.fetch(100, 109)
    await h.seek()  # recovery seeks again within the generation
    second = await h.fetch(100, 119)
    assert _offsets(first) + _offsets(second) == list(range(100, 120))


async def test_the_commit_never_passes_an_offset_that_was_not_acked() -> None:
    """Faust lets a commit pass one unacked offset at the committed one (its check is
    off by one) and any number on a partition never committed; ours does not."""
    h = Harness(committed=100)
    await h.seek()
    first, second = await h.fetch(100, 104), await h.fetch(105, 109)
    h.ack(second[0])
    assert h.commit_offset() is None
    h.ack(first[0])
    assert h.commit_offset() == 110


async def test_a_partition_nobody_committed_commits_from_its_beginning() -> None:
    h = Harness(committed=None, beginning=40)
    await h.seek()
    first, second = await h.fetch(40, 44), await h.fetch(45, 49)
    h.ack(second[0])
    assert h.commit_offset() is None
    h.ack(first[0])
    assert h.commit_offset() == 50


async def test_an_ack_from_an_earlier_generation_commits_nothing() -> None:
    h = Harness(committed=100)
    await h.seek()
    (batch,) = await h.fetch(100, 109)
    h.app.consumer_generation_id = 2  # a rebalance: the partition may be someone else's
    h.ack(batch)
    assert h.commit_offset() is None


@pytest.mark.parametrize("reads", [[(0, 9)], [(0, 4), (5, 9)], [(0, 2), (3, 5), (6, 9)]])
async def test_acked_batches_commit_to_the_end(reads: list[tuple[int, int]]) -> None:
    h = Harness(committed=None)
    await h.seek()
    batches = [b for first, last in reads for b in await h.fetch(first, last)]
    for batch in reversed(batches):
        h.ack(batch)
    assert h.commit_offset() == 10


async def test_a_partition_held_active_is_not_also_a_standby_of_the_same_worker() -> None:
    """Faust makes a lone worker the standby of what it holds active; the standby would
    re-apply the changelog over the active's newer local writes."""
    from faust.assignor.client_assignment import ClientAssignment

    app = BatchingApp(
        "assignor-test",
        broker="kafka://127.0.0.1:1",
        store="memory://",
        web_enabled=False,
        loop=asyncio.get_running_loop(),
    )
    assignor: Any = app.assignor
    assignor._assignment = ClientAssignment(
        actives={"app-identity-changelog": [0], "app-dedup-changelog": [1]},
        standbys={"app-identity-changelog": [0], "app-dedup-changelog": [0, 1, 2]},
    )
    assert assignor.assigned_standbys() == {
        TP("app-dedup-changelog", 0),
        TP("app-dedup-changelog", 2),
    }
    assert TP("app-identity-changelog", 0) in assignor.assigned_actives()


async def test_a_run_of_an_agent_topic_dropped_while_paused_is_read_again() -> None:
    """A topic read message by message (the alerts topic): Faust would register the
    offsets of a run dropped for a paused partition as a settled gap at its next
    delivery, and commit past them. The consumer is sent back to read them again."""
    h = Harness(committed=100)
    alerts = TP("touchpoints.alerts", 3)
    h._next = {alerts: _records(40, 44)}  # fetched; the partition is not active
    delivered = [message async for _tp, message in h.consumer.getmany(1.0)]
    await asyncio.sleep(0)
    assert delivered == []
    assert h.kafka.seeks == [(alerts, 40)]


async def test_seeks_run_on_the_consumer_thread_and_skip_a_partition_revoked_meanwhile() -> None:
    """aiokafka's fetcher is not thread-safe: a seek made from the event loop's thread
    while the consumer thread drained fetched records crashed a worker (``KeyError`` in
    ``fetched_records``). Seeks wait for the consumer thread's loop; one that finds its
    partition revoked by then is dropped, not raised."""
    h = Harness(committed=100)
    await h.seek()
    await h.fetch(100, 104)
    seeks = len(h.kafka.seeks)
    h.consumer._drop({TP0: _records(105, 109)})
    assert len(h.kafka.seeks) == seeks  # not from this thread
    await asyncio.sleep(0)
    assert h.kafka.seeks[-1] == (TP0, 105)

    def revoked(tp: Any, offset: int) -> None:
        raise IllegalStateError(f"No current assignment for partition {tp}")

    h.kafka.seek = revoked  # type: ignore[method-assign]
    h.consumer._thread.seek = revoked
    await h.drop({TP0: _records(105, 109)})  # no error escapes
