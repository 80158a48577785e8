"""The resolver's batches persist all or none, whatever prefix of their writes a crash
leaves in the changelog (``streams.runtime.journal``).

A crash between two changelog records leaves a prefix of a batch's writes; the
partition's next owner restores the store from it, completes the batch from its
journal, and resolves the uncommitted records again. Checked here on the journal
alone (every prefix of two batches in a row) and on the resolver's owner itself, the
object the worker runs: a crash at every point of a batch's writes gives the same
items downstream and the same identity state as a run without the crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.dedup import DuplicateWindow
from streams.domain.identity import IdentityRules
from streams.runtime.app import create_worker
from streams.runtime.journal import HEAD, PART_PREFIX, journaled, recover
from streams.runtime.owners import PartitionStore
from streams.runtime.resolver import ResolverOwner
from streams.runtime.state import write_local
from streams.settings import Settings
from tests.test_resolve import T0, TOPIC, WEEK, event_row

Write = tuple[str, bytes | None]


def apply(store: dict[str, bytes], writes: Sequence[Write]) -> None:
    for key, value in writes:
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def data(store: dict[str, Any]) -> dict[str, Any]:
    """The store without the journal's keys."""
    return {k: v for k, v in store.items() if not k.startswith("j/")}


def recovered(store: dict[str, bytes]) -> dict[str, bytes]:
    """The store as the next owner leaves it after recovering the journal."""
    out = dict(store)
    found = recover(out.get, [k for k in sorted(out) if k.startswith(PART_PREFIX)])
    apply(out, found.writes)
    return out


# --- the journal alone -------------------------------------------------------------------------

keys = st.sampled_from([f"c/{i}" for i in range(6)] + [f"n/{i}" for i in range(6)])
values = st.one_of(st.none(), st.binary(min_size=1, max_size=40).map(lambda b: b.hex().encode()))
batches = st.lists(st.tuples(keys, values), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(first=batches, second=batches, part_bytes=st.integers(20, 200))
def test_every_prefix_of_a_journaled_batch_recovers_to_all_of_it_or_none(
    first: list[Write], second: list[Write], part_bytes: int
) -> None:
    store: dict[str, bytes] = {}
    writes, held = journaled(first, 0, part_bytes, batch="one")
    apply(store, writes)
    before = dict(store)
    after = dict(store)
    apply(after, second)

    writes, now_held = journaled(second, held, part_bytes, batch="two")
    assert [k for k, _ in writes[-len(second) :]] == [k for k, _ in second]
    head = next(i for i, (k, _) in enumerate(writes) if k == HEAD)
    for cut in range(len(writes) + 1):
        store = dict(before)
        apply(store, writes[:cut])
        expected = after if cut > head else before
        assert data(recovered(store)) == data(expected), f"cut after {cut} of {len(writes)}"
    # the parts the store holds are the ones the last journal wrote: none left behind
    parts = sorted(k for k in store if k.startswith(PART_PREFIX))
    assert len(parts) == now_held


def test_a_journal_part_holds_at_most_its_bytes_and_a_large_write_alone() -> None:
    writes: list[Write] = [(f"c/{i}", b"x" * 100) for i in range(10)] + [("c/big", b"y" * 5000)]
    out, held = journaled(writes, 0, 1000, batch="b")
    parts = [v for k, v in out if k.startswith(PART_PREFIX) and v is not None]
    assert held == len(parts) >= 3
    assert all(len(p) < 1100 for p in parts[:-1])
    assert orjson.loads(parts[-1])["w"] == [["c/big", "y" * 5000]]


def test_no_head_or_a_part_missing_recovers_nothing() -> None:
    writes, _ = journaled([("c/a", b"1"), ("c/b", b"2")], 0, 1 << 19, batch="b")
    store: dict[str, bytes] = {}
    apply(store, writes)
    assert recover(store.get, []).writes == [("c/a", b"1"), ("c/b", b"2")]
    assert recover({}.get, []).writes == []
    del store[f"{PART_PREFIX}00000"]
    assert recover(store.get, []).writes == []


# --- the resolver's owner ----------------------------------------------------------------------

RULES = IdentityRules(limits={"phone": 2}, unique_kinds=("account_id",))
PARTITIONS = 4


class MemoryTable(dict[str, Any]):
    """One partition of a table as the memory store holds it (the owners' test path)."""

    name = "resolver"
    data = object()  # not RocksDB: reads and writes go to the dict


async def _no_crash(exc: BaseException) -> None:
    raise AssertionError(f"crashed: {exc}")


def owner_on(table: Any) -> ResolverOwner:
    """A new owner of the resolve partition, as the worker builds it on assignment."""
    return ResolverOwner(
        table,
        0,
        spawn=asyncio.ensure_future,
        crash=_no_crash,
        revoke_wait_s=1.0,
        rules=RULES,
        topic=TOPIC,
        partitions=PARTITIONS,
        window=DuplicateWindow(window_ms=WEEK, max_ids_per_partition=1_000_000),
        grace_s=7 * 86_400,
        idle_s=60,
    )


Records = list[tuple[int, list[list[Any]]]]


@st.composite
def resolve_topics(draw: st.DrawFn) -> list[Records]:
    """Batches of resolve records whose events share identifiers: merges, refusals
    (phone limit, one account per customer) and repeated event ids."""
    n = draw(st.integers(2, 30))
    kinds = ("email", "phone", "account_id", "device_id")
    rows = []
    for i in range(n):
        chosen = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3, unique=True))
        identifiers = {k: f"{k}-{draw(st.integers(0, 4))}" for k in chosen}
        event_id = f"e{draw(st.integers(0, n))}"  # some ids repeat
        rows.append(event_row(event_id, T0 + i * 1000, identifiers, source=("in", 0, i)))
    records: Records = []
    offset, i = 0, 0
    while i < n:
        size = draw(st.integers(1, 3))
        records.append((offset, rows[i : i + size]))
        offset, i = offset + 1, i + size
    out: list[Records] = []
    j = 0
    while j < len(records):
        size = draw(st.integers(1, 3))
        out.append(records[j : j + size])
        j += size
    return out


def copy_records(records: Records) -> Records:
    return [(offset, [list(row) for row in rows]) for offset, rows in records]


def items_sent(resolved: Any) -> dict[tuple[int, int], Any]:
    return {(p, item[1]): item for p, items in resolved.output.items.items() for item in items}


def run(batches: list[Records], crash: tuple[int, int] | None = None) -> tuple[dict, dict]:
    """Resolve every batch with the owner, persisting its writes; with ``crash`` =
    (batch, cut), that batch persists only its first ``cut`` writes, and a new owner
    takes over from the store and resolves it again. Returns what customer partitions
    received (first item per sequence number: a partition skips what it applied) and
    the table without the journal."""
    table = MemoryTable()
    owner = owner_on(table)
    received: dict[tuple[int, int], Any] = {}
    number = 0
    while number < len(batches):
        now = T0 + number * 1000
        resolved = owner.resolve(copy_records(batches[number]), now)
        sent = items_sent(resolved)  # items go out before the state does
        for key, item in sent.items():
            received.setdefault(key, item)
            # a batch resolved again after a crash decides as the first time
            assert received[key] == item, f"item {key} decided differently"
        if crash is not None and crash[0] == number:
            apply(table, resolved.state[: crash[1]])
            crash = None
            owner = owner_on(table)  # the next owner; the batch was not committed
            continue
        apply(table, resolved.state)
        number += 1
    return received, data(table)


@settings(max_examples=60, deadline=None)
@given(batches=resolve_topics(), where=st.integers(0, 100), cut=st.integers(0, 10_000))
def test_a_crash_anywhere_in_a_resolver_batchs_writes_changes_nothing(
    batches: list[Records], where: int, cut: int
) -> None:
    reference_items, reference_state = run(batches)
    number = where % len(batches)
    # how many writes that batch persists, as the uncrashed run computes them
    table = MemoryTable()
    owner = owner_on(table)
    for b in batches[:number]:
        apply(table, owner.resolve(copy_records(b), T0).state)
    total = len(owner.resolve(copy_records(batches[number]), T0).state)
    items, state = run(batches, (number, cut % (total + 1)))
    assert items == reference_items
    assert state == reference_state


def test_every_cut_of_a_batch_that_merges_and_refuses() -> None:
    """One batch merges three customers and refuses a second account: a crash after each
    of its writes, in turn."""
    first: Records = [
        (0, [event_row("e1", T0, {"email": "a"}, source=("in", 0, 1))]),
        (1, [event_row("e2", T0 + 1, {"phone": "p"}, source=("in", 0, 2))]),
        (2, [event_row("e3", T0 + 2, {"device_id": "d", "account_id": "x"}, source=("in", 0, 3))]),
        (3, [event_row("e4", T0 + 3, {"account_id": "y"}, source=("in", 0, 4))]),
    ]
    second: Records = [
        (4, [event_row("e5", T0 + 4, {"email": "a", "phone": "p"}, source=("in", 0, 5))]),
        (5, [event_row("e6", T0 + 5, {"phone": "p", "device_id": "d"}, source=("in", 0, 6))]),
        (6, [event_row("e7", T0 + 6, {"device_id": "d", "account_id": "y"}, source=("in", 0, 7))]),
    ]
    batches = [first, second]
    reference_items, reference_state = run(batches)
    merges = [i for i in reference_items.values() if i[0] == "m"]
    assert len(merges) == 2
    table = MemoryTable()
    apply(table, owner_on(table).resolve(copy_records(first), T0).state)
    total = len(owner_on(table).resolve(copy_records(second), T0 + 1000).state)
    assert total > 6
    for cut in range(total + 1):
        items, state = run(batches, (1, cut))
        assert items == reference_items, cut
        assert state == reference_state, cut


# --- on RocksDB, as a worker holds the table -----------------------------------------------


def test_a_batch_cut_short_is_completed_on_rocksdb_beside_fausts_offset_key(
    tmp_path: Path,
) -> None:
    """The store Faust restores: the keys of a batch's first writes, and Faust's own
    record of the changelog offset (a key the table's codec cannot read; a worker once
    crashed on it when a cut-short batch left no key after the window's)."""
    worker = create_worker(Settings(data_dir=tmp_path), ("touchpoints.web",))
    table = worker.resolver_table
    store = table.data
    records: Records = [
        (0, [event_row("e1", T0, {"email": "a", "phone": "p"}, source=("in", 0, 1))]),
        (1, [event_row("e2", T0 + 1, {"phone": "p", "device_id": "d"}, source=("in", 0, 2))]),
    ]
    first = owner_on(table)
    resolved = first.resolve(copy_records(records), T0)
    head = next(i for i, (k, _) in enumerate(resolved.state) if k == HEAD)
    write_local(table, 0, resolved.state[: head + 2])  # the journal and one write
    store._db_for_partition(0).put(store.offset_key, b"7")
    assert list(PartitionStore(table, 0).keys("w/")) == []

    second = owner_on(table)
    again = second.resolve(copy_records(records), T0 + 1000)
    assert again.output.replayed == 2  # the window's chunk was completed: nothing twice
    assert again.output.items == {}
    for key, value in resolved.state[head + 1 :]:
        assert PartitionStore(table, 0).get(key) == value, key


def test_a_store_with_only_earlier_keys_and_the_offset_key_lists_no_later_keys(
    tmp_path: Path,
) -> None:
    worker = create_worker(Settings(data_dir=tmp_path), ("touchpoints.web",))
    table = worker.resolver_table
    write_local(table, 0, [("c/x", b"{}")])
    table.data._db_for_partition(0).put(table.data.offset_key, b"3")
    assert list(PartitionStore(table, 0).keys("d/")) == []
    assert list(PartitionStore(table, 0).keys("c/")) == ["c/x"]
