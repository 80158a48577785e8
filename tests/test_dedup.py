"""The duplicate window, checked against a simple reference and across restarts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.dedup import Chunk, DuplicateWindow

HOUR_MS = 3_600_000


def window(**kwargs: int) -> DuplicateWindow:
    return DuplicateWindow(window_ms=kwargs.get("window_ms", 24 * HOUR_MS),
                           max_ids_per_partition=kwargs.get("max_ids", 1_000_000))  # fmt: skip


def test_an_event_id_again_at_other_coordinates_is_a_duplicate() -> None:
    w = window()
    assert not w.seen("e1", "touchpoints.web", 0, 10)
    assert w.seen("e1", "touchpoints.web", 0, 11)
    assert w.seen("e1", "touchpoints.sms", 3, 10)


def test_the_same_message_delivered_again_is_a_replay_not_a_duplicate() -> None:
    w = window()
    assert not w.seen("e1", "touchpoints.web", 0, 10)
    assert not w.seen("e1", "touchpoints.web", 0, 10)


def test_sealing_a_batch_writes_one_chunk_with_its_ids() -> None:
    w = window()
    for offset, event_id in enumerate(["a", "b", "c"]):
        w.seen(event_id, "touchpoints.web", 1, offset)
    sealed = w.seal("touchpoints.web", 1, now_ms=1000)
    assert sealed.write is not None
    assert sealed.write.key == "1/touchpoints.web/0/2"
    assert sealed.write.ids == [("a", 0), ("b", 1), ("c", 2)]
    assert sealed.delete == ()
    assert w.seal("touchpoints.web", 1, now_ms=2000).write is None  # nothing new


def test_chunks_expire_after_the_window_and_their_ids_are_forgotten() -> None:
    w = window(window_ms=HOUR_MS)
    w.seen("old", "t", 0, 0)
    old = w.seal("t", 0, now_ms=0).write
    w.seen("new", "t", 0, 1)
    sealed = w.seal("t", 0, now_ms=2 * HOUR_MS)
    assert old is not None and sealed.delete == (old.key,)
    assert not w.seen("old", "t", 0, 5)  # remembered no longer


def test_the_oldest_chunks_expire_when_a_partition_holds_too_many_ids() -> None:
    w = window(max_ids=1000)
    for batch in range(3):
        for i in range(500):
            w.seen(f"{batch}-{i}", "t", 0, batch * 500 + i)
        w.seal("t", 0, now_ms=batch)
    assert w.held(0) == 1000
    assert not w.seen("0-1", "t", 0, 9999)


def test_a_window_loaded_from_persisted_chunks_answers_the_same() -> None:
    before = window()
    chunks: dict[str, Chunk] = {}
    for offset, event_id in enumerate(["a", "b", "a", "c"]):
        before.seen(event_id, "t", 2, offset)
    written = before.seal("t", 2, now_ms=5).write
    assert written is not None
    chunks[written.key] = Chunk.from_value(written.key, written.to_value())

    after = window()
    after.load(2, chunks.values())
    assert after.seen("a", "t", 2, 99)
    assert not after.seen("a", "t", 2, 0)  # its own first delivery, replayed
    assert not after.seen("d", "t", 2, 100)


def test_forgetting_a_partition_drops_its_ids_only() -> None:
    w = window()
    w.seen("p0", "t", 0, 0)
    w.seen("p1", "t", 1, 0)
    w.seal("t", 0, 1)
    w.seal("t", 1, 1)
    w.forget([0])
    assert not w.is_loaded(0)
    assert not w.seen("p0", "t", 1, 5)
    assert w.seen("p1", "t", 1, 7)


deliveries = st.lists(
    st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 3)), min_size=1, max_size=8),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(batches=deliveries, restart_after=st.integers(0, 12))
def test_answers_match_a_reference_even_across_a_restart(
    batches: list[list[tuple[str, int]]], restart_after: int
) -> None:
    """Reference: an unbounded dict of event id -> first coordinates."""
    reference: dict[str, tuple[str, int, int]] = {}
    w = window()
    table: dict[str, Chunk] = {}
    offsets = [0, 0, 0, 0]
    for number, batch in enumerate(batches):
        if number == restart_after:  # rebuild from what was persisted
            w = window()
            for partition in range(4):
                w.load(partition, [c for c in table.values() if c.partition == partition])
        touched = set()
        for event_id, partition in batch:
            offset = offsets[partition]
            offsets[partition] += 1
            first = reference.setdefault(event_id, ("t", partition, offset))
            expected = first != ("t", partition, offset)
            assert w.seen(event_id, "t", partition, offset) == expected
            touched.add(partition)
        for partition in touched:
            sealed = w.seal("t", partition, now_ms=number)
            if sealed.write is not None:
                table[sealed.write.key] = sealed.write
            for key in sealed.delete:
                del table[key]
