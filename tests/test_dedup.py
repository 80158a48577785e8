"""The duplicate window, as its docstring states it, against a simple reference and across restarts.

A repeated ``event_id`` is a duplicate when it arrives at other coordinates (topic,
partition, offset) than its first occurrence; the same coordinates again are a replay
of the same message and are processed again. Each batch seals into one chunk per input
partition; chunks expire by age and by a bound on ids per partition; loading the
persisted chunks rebuilds a window that answers the same.
"""

from __future__ import annotations

import copy
import tracemalloc

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from streams.domain.dedup import Chunk, DuplicateWindow, chunk_partition

HOUR_MS = 3_600_000
Coordinates = tuple[str, int, int]


def window(window_ms: int = 24 * HOUR_MS, max_ids: int = 1_000_000) -> DuplicateWindow:
    return DuplicateWindow(window_ms=window_ms, max_ids_per_partition=max_ids)


def persisted(chunk: Chunk) -> Chunk:
    """The chunk as a changelogged table gives it back: its key and its JSON value."""
    return Chunk.from_value(chunk.key, orjson.loads(orjson.dumps(chunk.to_value())))


def restarted(table: dict[str, Chunk], like: DuplicateWindow) -> DuplicateWindow:
    """A new window loaded, partition by partition, from the persisted chunks."""
    fresh = window(like.window_ms, like.max_ids_per_partition)
    for partition in sorted({c.partition for c in table.values()}):
        fresh.load(partition, [persisted(c) for c in table.values() if c.partition == partition])
    return fresh


# --- spec ----------------------------------------------------------------------------------


def test_an_event_id_again_at_other_coordinates_is_a_duplicate() -> None:
    w = window()
    assert not w.seen("e1", "touchpoints.web", 0, 10)
    assert w.seen("e1", "touchpoints.web", 0, 11)  # other offset
    assert w.seen("e1", "touchpoints.web", 1, 10)  # other partition
    assert w.seen("e1", "touchpoints.sms", 0, 10)  # other topic


def test_the_same_message_delivered_again_is_a_replay_not_a_duplicate() -> None:
    w = window()
    assert not w.seen("e1", "touchpoints.web", 0, 10)
    assert not w.seen("e1", "touchpoints.web", 0, 10)
    assert w.seen("e1", "touchpoints.web", 0, 11)
    assert not w.seen("e1", "touchpoints.web", 0, 10)  # still its first occurrence


def test_a_new_event_id_is_never_a_duplicate() -> None:
    w = window()
    assert [w.seen(f"e{i}", "t", 0, i) for i in range(5)] == [False] * 5


def test_sealing_a_batch_writes_one_chunk_with_its_accepted_ids() -> None:
    w = window()
    for offset, event_id in enumerate(["a", "b", "a", "c"]):
        w.seen(event_id, "touchpoints.web", 1, offset)
    sealed = w.seal("touchpoints.web", 1, now_ms=1000)
    assert sealed.write is not None
    assert sealed.write.key == "1/touchpoints.web/0/3"
    assert chunk_partition(sealed.write.key) == 1
    assert (sealed.write.topic, sealed.write.partition, sealed.write.created_ms) == (
        "touchpoints.web", 1, 1000,
    )  # fmt: skip
    assert sealed.write.ids == [("a", 0), ("b", 1), ("c", 3)]  # the duplicate is not remembered
    assert sealed.delete == ()
    assert w.held(1) == 3


def test_a_batch_with_nothing_new_writes_nothing() -> None:
    w = window()
    w.seen("a", "t", 0, 0)
    assert w.seal("t", 0, now_ms=1).write is not None
    assert w.seal("t", 0, now_ms=2).write is None
    w.seen("a", "t", 0, 1)  # a duplicate
    w.seen("a", "t", 0, 0)  # a replay
    assert w.seal("t", 0, now_ms=3).write is None


def test_each_topic_of_a_partition_seals_its_own_chunk() -> None:
    w = window()
    w.seen("a", "touchpoints.web", 0, 7)
    w.seen("b", "touchpoints.sms", 0, 7)
    web = w.seal("touchpoints.web", 0, now_ms=1).write
    assert web is not None and web.ids == [("a", 7)]
    sms = w.seal("touchpoints.sms", 0, now_ms=1).write
    assert sms is not None and sms.ids == [("b", 7)]
    assert web.key != sms.key
    assert w.held(0) == 2


def test_a_chunk_value_survives_a_json_changelog() -> None:
    w = window()
    w.seen("a", "touchpoints.web", 3, 100)
    w.seen("b", "touchpoints.web", 3, 105)
    chunk = w.seal("touchpoints.web", 3, now_ms=42).write
    assert chunk is not None
    assert persisted(chunk) == chunk


def test_chunks_expire_after_the_window_and_their_ids_are_forgotten() -> None:
    w = window(window_ms=HOUR_MS)
    w.seen("old", "t", 0, 0)
    old = w.seal("t", 0, now_ms=0).write
    w.seen("new", "t", 0, 1)
    sealed = w.seal("t", 0, now_ms=HOUR_MS + 1)
    assert old is not None and sealed.delete == (old.key,)
    assert w.held(0) == 1
    assert not w.seen("old", "t", 0, 5)  # remembered no longer
    assert w.seen("new", "t", 0, 6)


def test_a_chunk_exactly_the_window_old_is_still_held() -> None:
    w = window(window_ms=HOUR_MS)
    w.seen("a", "t", 0, 0)
    w.seal("t", 0, now_ms=0)
    assert w.seal("t", 0, now_ms=HOUR_MS).delete == ()
    assert w.seen("a", "t", 0, 9)


def test_expiry_happens_when_a_partition_seals_even_without_new_ids() -> None:
    w = window(window_ms=HOUR_MS)
    w.seen("a", "t", 0, 0)
    first = w.seal("t", 0, now_ms=0).write
    assert first is not None
    sealed = w.seal("t", 0, now_ms=2 * HOUR_MS)
    assert (sealed.write, sealed.delete) == (None, (first.key,))
    assert w.held(0) == 0


def test_the_oldest_chunks_expire_when_a_partition_holds_too_many_ids() -> None:
    w = window(max_ids=1000)
    keys = []
    for batch in range(3):
        for i in range(500):
            w.seen(f"{batch}-{i}", "t", 0, batch * 500 + i)
        sealed = w.seal("t", 0, now_ms=batch)
        assert sealed.write is not None
        keys.append(sealed.write.key)
        assert sealed.delete == ((keys[0],) if batch == 2 else ())
    assert w.held(0) == 1000
    assert not w.seen("0-1", "t", 0, 9999)
    assert w.seen("1-1", "t", 0, 9999)


def test_the_chunk_a_batch_just_wrote_never_expires_with_it() -> None:
    w = window(window_ms=HOUR_MS, max_ids=2)
    for i in range(5):
        w.seen(f"e{i}", "t", 0, i)
    sealed = w.seal("t", 0, now_ms=0)
    assert sealed.write is not None and sealed.delete == ()
    assert w.held(0) == 5
    assert w.seen("e4", "t", 0, 99)


def test_the_bounds_of_one_partition_leave_other_partitions_alone() -> None:
    w = window(max_ids=1)
    w.seen("p0", "t", 0, 0)
    w.seal("t", 0, now_ms=0)
    w.seen("p1-a", "t", 1, 0)
    w.seal("t", 1, now_ms=1)
    w.seen("p1-b", "t", 1, 1)
    w.seal("t", 1, now_ms=2)
    assert (w.held(0), w.held(1)) == (1, 1)
    assert w.seen("p0", "t", 0, 5)


def test_a_window_loaded_from_persisted_chunks_classifies_the_same() -> None:
    before = window()
    table: dict[str, Chunk] = {}
    for offset, event_id in enumerate(["a", "b", "a", "c"]):
        before.seen(event_id, "t", 2, offset)
    written = before.seal("t", 2, now_ms=5).write
    assert written is not None
    table[written.key] = written

    after = restarted(table, before)
    assert after.is_loaded(2)
    assert after.held(2) == before.held(2) == 3
    assert after.seen("a", "t", 2, 99)
    assert not after.seen("a", "t", 2, 0)  # its own first delivery, replayed
    assert after.seen("c", "t", 5, 3)
    assert not after.seen("d", "t", 2, 100)


def test_a_loaded_window_expires_the_loaded_chunks_by_their_own_age() -> None:
    w = window(window_ms=HOUR_MS)
    old = Chunk.of("0/t/0/0", "t", 0, 0, [("old", 0)])
    new = Chunk.of("0/t/1/1", "t", 0, HOUR_MS, [("new", 1)])
    w.load(0, [new, old])
    assert w.seal("t", 0, now_ms=HOUR_MS + HOUR_MS // 2).delete == ("0/t/0/0",)
    assert not w.seen("old", "t", 0, 9)
    assert w.seen("new", "t", 0, 9)


def test_ids_not_yet_sealed_are_lost_in_a_crash_and_the_replay_accepts_them() -> None:
    before = window()
    before.seen("a", "t", 0, 0)
    written = before.seal("t", 0, now_ms=1).write
    assert written is not None
    before.seen("b", "t", 0, 1)  # the worker dies before sealing this batch

    after = restarted({written.key: written}, before)
    assert not after.seen("b", "t", 0, 1)  # redelivered: accepted again, not lost
    assert after.seen("a", "t", 0, 2)


def test_forgetting_a_partition_drops_its_ids_only() -> None:
    w = window()
    w.seen("p0", "t", 0, 0)
    w.seen("p1", "t", 1, 0)
    w.seal("t", 0, 1)
    w.seal("t", 1, 1)
    w.forget([0])
    assert not w.is_loaded(0)
    assert w.held(0) == 0
    assert not w.seen("p0", "t", 1, 5)
    assert w.seen("p1", "t", 1, 7)


def test_forgetting_a_partition_drops_its_ids_not_yet_sealed_too() -> None:
    w = window()
    w.seen("pending", "t", 0, 0)  # revoked before the batch was sealed
    w.forget([0])
    assert w.seal("t", 0, now_ms=1).write is None
    assert not w.seen("pending", "t", 1, 5)


# --- against a reference -------------------------------------------------------------------

TOPICS = ("touchpoints.web", "touchpoints.sms")
PARTITIONS = (0, 1, 2)
EVENT_IDS = "abcdefgh"


class WindowAgainstReference(RuleBasedStateMachine):
    """Bounds large enough never to expire: the window must answer like a plain dict of
    event id -> first coordinates, where only sealed ids survive a restart."""

    @initialize()
    def start(self) -> None:
        self.window = window()
        self.table: dict[str, Chunk] = {}
        self.committed: dict[str, Coordinates] = {}  # reference: sealed first coordinates
        self.pending: dict[str, Coordinates] = {}  # reference: first coordinates not yet sealed
        self.delivered: list[tuple[str, Coordinates]] = []
        self.next_offset: dict[tuple[str, int], int] = {}
        self.clock_ms = 0

    def _deliver(self, event_id: str, at: Coordinates) -> None:
        first = self.committed.get(event_id) or self.pending.get(event_id)
        expected = first is not None and first != at
        if first is None:
            self.pending[event_id] = at
        assert self.window.seen(event_id, *at) == expected

    @rule(
        event_id=st.sampled_from(EVENT_IDS),
        topic=st.sampled_from(TOPICS),
        partition=st.sampled_from(PARTITIONS),
    )
    def deliver(self, event_id: str, topic: str, partition: int) -> None:
        offset = self.next_offset.get((topic, partition), 0)
        self.next_offset[(topic, partition)] = offset + 1
        self.delivered.append((event_id, (topic, partition, offset)))
        self._deliver(event_id, (topic, partition, offset))

    @precondition(lambda self: bool(self.delivered))
    @rule(pick=st.integers(0, 10**6))
    def redeliver(self, pick: int) -> None:
        event_id, at = self.delivered[pick % len(self.delivered)]
        self._deliver(event_id, at)

    @rule(
        topic=st.sampled_from(TOPICS),
        partition=st.sampled_from(PARTITIONS),
        elapsed_ms=st.integers(0, 1000),
    )
    def seal(self, topic: str, partition: int, elapsed_ms: int) -> None:
        self.clock_ms += elapsed_ms
        sealed = self.window.seal(topic, partition, now_ms=self.clock_ms)
        assert sealed.delete == ()
        sealing = {e: at for e, at in self.pending.items() if at[:2] == (topic, partition)}
        if sealed.write is None:
            assert not sealing
            return
        assert sealed.write.key not in self.table
        assert dict(sealed.write.ids) == {e: at[2] for e, at in sealing.items()}
        self.table[sealed.write.key] = sealed.write
        for event_id, at in sealing.items():
            self.committed[event_id] = at
            del self.pending[event_id]

    @rule()
    def restart(self) -> None:
        self.window = restarted(self.table, self.window)
        self.pending.clear()

    @rule(partition=st.sampled_from(PARTITIONS))
    def rebalance(self, partition: int) -> None:
        """The partition moves to another worker and back, between batches.

        (A partition revoked with ids not yet sealed: see the spec test above.)
        """
        if any(at[1] == partition for at in self.pending.values()):
            return
        self.window.forget([partition])
        assert self.window.held(partition) == 0
        chunks = [persisted(c) for c in self.table.values() if c.partition == partition]
        self.window.load(partition, chunks)

    @invariant()
    def holds_what_was_sealed(self) -> None:
        for partition in PARTITIONS:
            expected = sum(1 for at in self.committed.values() if at[1] == partition)
            assert self.window.held(partition) == expected


TestWindowAgainstReference = WindowAgainstReference.TestCase
TestWindowAgainstReference.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)


batches = st.lists(
    st.tuples(
        st.sampled_from(TOPICS),
        st.sampled_from(PARTITIONS),
        st.lists(st.tuples(st.sampled_from(EVENT_IDS + "ijklmnop"), st.none() | st.integers(0, 100)), min_size=1, max_size=6),
        st.integers(1, 3 * HOUR_MS),
    ),
    max_size=15,
)  # fmt: skip


def answers(w: DuplicateWindow, probes: list[tuple[str, Coordinates]]) -> list[bool]:
    """What a copy of ``w`` says to each probe in turn (probes of unknown ids teach it them,
    so two windows that agree so far have learnt the same)."""
    probed = copy.deepcopy(w)
    return [probed.seen(event_id, *at) for event_id, at in probes]


@settings(max_examples=100, deadline=None)
@given(
    batches=batches,
    window_ms=st.sampled_from([HOUR_MS, 4 * HOUR_MS]),
    max_ids=st.integers(1, 8),
)
def test_with_any_bounds_a_restart_from_the_chunks_answers_like_the_live_window(
    batches: list[tuple[str, int, list[tuple[str, int | None]], int]], window_ms: int, max_ids: int
) -> None:
    """After every sealed batch, a window rebuilt from the persisted chunks (written
    minus deleted) holds as many ids and gives the same answers."""
    live = window(window_ms, max_ids)
    table: dict[str, Chunk] = {}
    offsets: dict[tuple[str, int], int] = {}
    history: list[tuple[str, Coordinates]] = []
    clock_ms = 0
    for topic, partition, deliveries, elapsed_ms in batches:
        clock_ms += elapsed_ms
        for event_id, again in deliveries:
            if again is not None and history:  # an earlier message of this partition once more
                event_id, at = history[again % len(history)]
                if at[:2] != (topic, partition):
                    continue
            else:
                offset = offsets.get((topic, partition), 0)
                offsets[(topic, partition)] = offset + 1
                at = (topic, partition, offset)
                history.append((event_id, at))
            live.seen(event_id, *at)
        sealed = live.seal(topic, partition, now_ms=clock_ms)
        if sealed.write is not None:
            table[sealed.write.key] = sealed.write
        for key in sealed.delete:
            del table[key]

        rebuilt = restarted(table, live)
        assert [rebuilt.held(p) for p in PARTITIONS] == [live.held(p) for p in PARTITIONS]
        probes: list[tuple[str, Coordinates]] = [
            *((e, ("touchpoints.probe", 9, 10**6)) for e in EVENT_IDS + "ijklmnop"),
            *history,
        ]
        assert answers(rebuilt, probes) == answers(live, probes)


def test_an_origin_is_kept_with_the_first_occurrence_and_survives_a_restart() -> None:
    w = window()
    w.load(0, [])
    assert not w.seen("e1", "stitch", 0, 10, origin=111)
    assert w.seen("e1", "stitch", 0, 11, origin=222)  # a repeat keeps the first origin
    assert w.origin_of("e1") == 111
    sealed = w.seal("stitch", 0, 1000)
    assert sealed.write is not None
    again = restarted({sealed.write.key: sealed.write}, w)
    assert again.origin_of("e1") == 111
    assert again.seen("e1", "stitch", 0, 12, origin=333)


def test_chunks_written_without_origins_still_load() -> None:
    chunk = Chunk.from_value("0/stitch/5/6", {"topic": "stitch", "t": 1, "ids": [["e1", 5]]})
    w = window()
    w.load(0, [chunk])
    assert w.origin_of("e1") is None
    assert w.seen("e1", "stitch", 0, 9)


@pytest.mark.parametrize("origins", [False, True], ids=["ingest", "resolver"])
def test_a_remembered_id_costs_about_a_hundred_bytes_besides_the_id(origins: bool) -> None:
    """A window holds every id of a week: at a million events, tuples per id (the first
    layout) cost 200 to 280 MB per window; packed, about 100."""
    n = 20_000
    ids = [f"{i:08d}-4b9e-8a55-5d2c1f0e9a7b" for i in range(n)]
    tracemalloc.start()
    try:
        w = window(max_ids=10**9)
        for i, event_id in enumerate(ids):
            w.seen(event_id, "touchpoints.web", i % 4, 10**9 + i, (i << 40) if origins else None)
            if i % 500 == 499:
                for partition in range(4):
                    w.seal("touchpoints.web", partition, now_ms=i)
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(w.held(p) for p in range(4)) == n
    assert held / n < 130, held / n
