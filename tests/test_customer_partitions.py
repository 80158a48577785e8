"""One customers partition's batch, as ``streams.domain.customers`` states it.

Items from the resolver are applied once (the partition's high-water mark, and each
customer's own sequence number when a batch's state was persisted only in part); a
merge hands the absorbed customer over to the survivor's partition, which combines it
once; a hand-over that finds its survivor gone follows the marker, or is dropped when
the survivor was erased; journeys, stages, score rows, effort rows and the rolling
view's tallies come out of each batch.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.clickhouse import CUSTOMER_COLUMNS, EVENT_COLUMN, SCORE_COLUMNS
from schemas.customer import Customer
from streams.domain.customers import (
    CustomerBook,
    Handover,
    PartitionOutput,
    PartitionRules,
    ScoreRules,
    batch_version,
    process_records,
    state_writes,
)
from streams.domain.effort import EffortRules
from streams.domain.journey import JourneyRules
from streams.domain.resolve import FLAG_LATE, partition_of
from tests.test_handover_properties import PartitionState
from tests.test_resolve import event_row

MINUTE = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE
COLUMN = EVENT_COLUMN
SCORE = {name: i for i, name in enumerate(SCORE_COLUMNS)}
RULES = PartitionRules(JourneyRules(), EffortRules(), ScoreRules(MINUTE, ("region",)), partitions=4)


def customer_in(partition: int, n: int = 0) -> str:
    """The ``n``-th of the ids ``c_0``, ``c_1``, ... that the customers topic puts in
    ``partition``."""
    found = [f"c_{i}" for i in range(200) if partition_of(f"c_{i}", RULES.partitions) == partition]
    return found[n]


A, S, T = customer_in(0), customer_in(1), customer_in(2)
S2 = customer_in(1, 1)  # another customer of S's partition


class Partition:
    """A customers partition without Kafka: its log, persisted state and position."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.state = PartitionState()
        self.now = T0

    def send(self, *items: list[Any], complete_to: int | None = None) -> None:
        self.state.log.append(orjson.dumps([complete_to, list(items)]))

    def run(self, *, persist: int | None = None, crash_at: str | None = None) -> PartitionOutput:
        """Process every record not read yet; persist all the state (or its first
        ``persist`` writes only, or those before the first key ``crash_at`` of its kind
        (``k/``, ``g/``, ``c/``, ``p/``) whose value is removed (``crash_at="-k/"``) or
        set: as a crash in the middle leaves it, and read the records again next time)."""
        state = self.state
        records = [
            (offset, orjson.loads(state.log[offset]))
            for offset in range(state.position, len(state.log))
        ]
        hwm, previous = state.mark()
        book, cases = state.books()
        self.now += 1000
        version = batch_version(records, previous, self.now)
        out, hwm = process_records(records, book, cases, RULES, hwm, version, self.now)
        writes = state_writes(book, cases, "p/", hwm, version)
        if crash_at is not None:
            removed, kind = crash_at.startswith("-"), crash_at.lstrip("-")
            persist = next(
                i
                for i, (key, value) in enumerate(writes)
                if key.startswith(kind) and (value is None) == removed
            )
        for key, value in writes if persist is None else writes[:persist]:
            if value is None:
                state.store.pop(key, None)
            else:
                state.store[key] = value
        if persist is None:
            state.position = len(state.log)
        return out

    def keys(self) -> list[str]:
        return sorted(self.state.store)

    def customer(self, customer_id: str) -> Customer | None:
        return self.state.books()[0].customer(customer_id)

    def gone(self, customer_id: str) -> Any:
        return self.state.books()[0].gone(customer_id)

    def deliver(self, out: PartitionOutput, to: dict[int, Partition]) -> None:
        """The hand-overs ``out`` sent, into the logs of their partitions."""
        for target, item in out.handovers:
            to[target].send(item)


def ev(
    seq: int, customer_id: str, event_id: str, at: int = T0, snapshot: Any = None, **kw: Any
) -> list[Any]:
    row = event_row(event_id, at, {"email": event_id}, **kw)
    row[COLUMN["customer_id"]] = customer_id
    return ["e", seq, row, snapshot]


def touches(customer: Customer | None) -> int:
    assert customer is not None
    return sum(customer.journey.touchpoints.values())


# --- the high-water mark ------------------------------------------------------------------------


def test_items_at_or_below_the_high_water_mark_are_skipped() -> None:
    """The resolver sends the same items again after a restart: applied once."""
    p = Partition(0)
    p.send(ev(10, A, "e1"), ev(11, A, "e2"))
    first = p.run()
    assert (first.applied, first.replayed) == (2, 0)
    p.send(ev(10, A, "e1"), ev(11, A, "e2"), ev(12, A, "e3"))
    again = p.run()
    assert (again.applied, again.replayed) == (1, 2)
    assert touches(p.customer(A)) == 3
    assert p.state.mark()[0] == 12


def test_a_batch_whose_state_was_persisted_in_part_counts_nothing_twice() -> None:
    """The customer was written, the high-water mark was not (a crash between two
    changelog record batches): the events come again and are not counted again, while
    their rows are written again (the record's score row replaces the first one)."""
    p = Partition(0)
    p.send(ev(1, A, "e1", survey=("nps", 9.0)), ev(2, A, "e2"))
    writes = state_writes(*p.state.books(), "p/", -1, 0)
    assert writes[-1][0] == "p/"  # the mark comes last
    first = p.run(persist=-1)  # everything but the mark
    again = p.run()
    assert touches(p.customer(A)) == 2
    assert again.replayed == 2
    # the same score row (but for the time it was written): it replaces the first
    assert [r[:2] + r[3:] for r in again.rows["scores_store"]] == [
        r[:2] + r[3:] for r in first.rows["scores_store"]
    ]
    assert again.rows["events_store"] == []  # the first run's rows stand


def test_the_state_writes_put_cases_before_customers_and_the_mark_last() -> None:
    p = Partition(0)
    contact = {
        "channel": "chat",
        "type_": "chat",
        "case_id": "k1",
        "interaction": {"wait_seconds": 0},
    }
    p.send(ev(1, A, "e1", **contact))
    p.run(persist=0)
    book, cases = p.state.books()
    hwm = -1
    out, hwm = process_records([(0, orjson.loads(p.state.log[0]))], book, cases, RULES, hwm, 1, T0)
    keys = [k for k, _ in state_writes(book, cases, "p/", hwm, 1)]
    assert keys == [f"k/{A}/k1", f"c/{A}", "p/"]
    assert out.applied == 1


CONTACT: dict[str, Any] = {
    "channel": "chat",
    "type_": "chat",
    "case_id": "k1",
    "interaction": {"wait_seconds": 0},
}


def test_a_customer_handed_over_by_a_batch_persisted_in_part_is_not_created_again() -> None:
    """The crash came after A's marker and removal were written, before its cases were
    removed and the mark moved on: the batch again neither creates A anew with the
    events it had (an empty case, wrong signals) nor hands it over again, and removes
    the cases A took along."""
    p = Partition(0)
    p.send(ev(1, A, "a1", **CONTACT))
    p.run()
    p.send(ev(2, A, "a2", at=T0 + MINUTE, **CONTACT), ["m", 3, A, S])
    first = p.run(crash_at="-k/")
    assert first.handed_over == 1
    assert p.keys() == [f"g/{A}", f"k/{A}/k1", "p/"]
    again = p.run()
    assert (again.applied, again.replayed, again.handed_over) == (0, 1, 0)
    assert again.rows["effort_store"] == []  # the first run's rows stand
    assert again.rows["events_store"] == []
    assert p.keys() == [f"g/{A}", "p/"]


def test_a_customer_erased_by_a_batch_persisted_in_part_stays_erased() -> None:
    p = Partition(0)
    p.send(ev(1, A, "a1", **CONTACT))
    p.run()
    p.send(ev(2, A, "a2", at=T0 + MINUTE, **CONTACT), ["x", 3, {"customer_id": A}])
    p.run(crash_at="-k/")
    again = p.run()
    assert (again.applied, again.replayed) == (0, 1)
    assert p.keys() == [f"g/{A}", "p/"]
    assert again.erasures == [{"customer_id": A}]  # its rows are deleted again


def test_a_survivor_that_combined_a_hand_over_in_a_batch_persisted_in_part() -> None:
    """The survivor's cases were written, the survivor (which notes the hand-over as
    combined) was not: the hand-over is combined again, idempotently."""
    ps = partitions()
    ps[0].send(ev(1, A, "a1", **CONTACT), ["m", 2, A, S])
    ps[0].deliver(ps[0].run(), ps)
    ps[1].send(ev(3, S, "s1", at=T0 + MINUTE, **CONTACT))
    ps[1].run(crash_at="c/")
    assert ps[1].keys() == [f"k/{S}/k1"]
    ps[1].run()
    survivor = ps[1].customer(S)
    assert survivor is not None and touches(survivor) == 2
    contacts = orjson.loads(ps[1].state.store[f"k/{S}/k1"])
    assert [(c[0], c[10]) for c in contacts] == [("a1", False), ("s1", True)]


# --- merges -------------------------------------------------------------------------------------


def partitions() -> dict[int, Partition]:
    return {n: Partition(n) for n in range(RULES.partitions)}


def test_a_merge_hands_the_customer_over_and_the_survivor_combines_it_once() -> None:
    ps = partitions()
    ps[0].send(
        ev(1, A, "a1", channel="chat", type_="chat", case_id="k1", interaction={"wait_seconds": 0})
    )
    ps[1].send(
        ev(
            2,
            S,
            "s1",
            at=T0 + MINUTE,
            channel="call_center",
            type_="call",
            case_id="k1",
            interaction={"wait_seconds": 0},
        )
    )
    ps[1].run()
    ps[0].send(["m", 3, A, S])
    out = ps[0].run()
    assert out.handed_over == 1
    (target, item) = out.handovers[0]
    assert target == 1 and item[0] == "h"
    handover = Handover.from_item(item)
    assert (handover.source, handover.into, handover.seq) == (A, S, 3)
    assert [c.event_id for c in handover.cases["k1"]] == ["a1"]
    assert ps[0].customer(A) is None and ps[0].gone(A) == (S, 3, ["k1"])
    assert ps[0].state.store.get(f"k/{A}/k1") is None  # its case went with it
    ps[0].deliver(out, ps)
    ps[1].deliver(out, ps)  # sent twice (the sender replayed its batch)
    combined = ps[1].run()
    assert combined.combined == 1
    survivor = ps[1].customer(S)
    assert survivor is not None
    assert touches(survivor) == 2 and survivor.merged_in == {A: 3}
    # s1 follows a1 in their case now: a repeat, on another channel; its row is rewritten
    (row,) = combined.rows["effort_store"]
    assert row[0] == "s1" and row[7:9] == (True, True)
    assert row[-1] > handover.version  # newer than any row A's partition wrote


def test_a_hand_over_that_finds_its_survivor_merged_on_follows_it() -> None:
    """A into S, then S into T; S's partition hands S over before A's hand-over arrives:
    that one follows the marker to T, which ends up with both, once."""
    ps = partitions()
    ps[0].send(ev(1, A, "a1"))
    ps[1].send(ev(2, S, "s1"))
    ps[2].send(ev(3, T, "t1"))
    ps[0].send(["m", 4, A, S])
    ps[1].send(["m", 5, S, T])
    ps[2].run()
    ps[1].deliver(ps[1].run(), ps)  # S goes to T first
    handover_a = ps[0].run()
    assert ps[1].gone(S) == (T, 5, [])
    ps[0].deliver(handover_a, ps)
    forwarded = ps[1].run()
    assert forwarded.forwarded == 1 and forwarded.combined == 0
    (target, item) = forwarded.handovers[0]
    assert target == 2 and Handover.from_item(item).hops == 1
    ps[1].deliver(forwarded, ps)
    ps[2].run()
    survivor = ps[2].customer(T)
    assert survivor is not None and touches(survivor) == 3
    assert set(survivor.merged_in) == {A, S}


def test_a_chain_combined_on_the_way_and_sent_again_is_combined_once() -> None:
    """A into S (combined there), S into T: T gets both in S's hand-over; A's hand-over
    sent again later (A's partition replayed) follows S's marker to T and is dropped."""
    ps = partitions()
    ps[0].send(ev(1, A, "a1"))
    ps[1].send(ev(2, S, "s1"))
    ps[0].send(["m", 3, A, S])
    sent_a = ps[0].run()
    ps[0].deliver(sent_a, ps)
    ps[1].send(["m", 4, S, T])
    sent_s = ps[1].run()
    assert sent_s.combined == 1 and sent_s.handed_over == 1
    ps[1].deliver(sent_s, ps)
    ps[2].run()
    ps[0].deliver(sent_a, ps)  # again
    again = ps[1].run()
    assert again.forwarded == 1
    ps[1].deliver(again, ps)
    last = ps[2].run()
    assert last.combined == 0
    survivor = ps[2].customer(T)
    assert survivor is not None and touches(survivor) == 2
    assert set(survivor.merged_in) == {A, S}


# --- erasure --------------------------------------------------------------------------------------


def test_an_erased_customer_is_removed_and_a_hand_over_into_it_is_dropped() -> None:
    ps = partitions()
    ps[0].send(ev(1, A, "a1"))
    ps[1].send(
        ev(2, S, "s1", channel="chat", type_="chat", case_id="k1", interaction={"wait_seconds": 0})
    )
    ps[0].send(["m", 3, A, S])
    request = {"request_id": "r1", "customer_id": S, "ids": [S, A]}
    ps[1].send(["x", 4, request])
    erased = ps[1].run()
    assert erased.erasures == [request]
    assert ps[1].customer(S) is None and ps[1].gone(S) == ("", 4, ["k1"])
    assert ps[1].state.store.get(f"k/{S}/k1") is None
    (row,) = erased.rows["customer_360_store"]
    assert row[0] == S and row[CUSTOMER_COLUMNS.index("deleted")] == 1
    ps[0].deliver(ps[0].run(), ps)
    late = ps[1].run()
    assert (late.combined, late.forwarded) == (0, 0)
    assert ps[1].customer(S) is None


def test_a_customer_created_again_after_its_erasure_starts_afresh() -> None:
    p = Partition(1)
    p.send(ev(1, S, "s1"), ["x", 2, {"request_id": "r", "customer_id": S}], ev(3, S, "s2"))
    p.run()
    assert touches(p.customer(S)) == 1
    assert p.gone(S) is None


# --- identity snapshots ---------------------------------------------------------------------------


def test_identity_items_and_snapshots_set_the_customers_identifiers() -> None:
    p = Partition(0)
    p.send(
        ev(1, A, "a1", snapshot=[{"email": ["a1"]}, []]),
        ["i", 2, A, [{"email": ["a1", "b"]}, ["c_x"]]],
    )
    p.run()
    customer = p.customer(A)
    assert customer is not None
    assert (customer.identifiers, customer.absorbed) == ({"email": ["a1", "b"]}, ["c_x"])


# --- compaction -----------------------------------------------------------------------------------


def test_a_compaction_request_calls_the_hook_outside_the_sequence() -> None:
    p = Partition(0)
    seen: list[int] = []

    def compact(book: CustomerBook, now_ms: int) -> int:
        seen.append(now_ms)
        return 3

    p.send(ev(5, A, "a1"), ["c"], ev(6, A, "a2"))
    book, cases = p.state.books()
    records = [(0, orjson.loads(p.state.log[0]))]
    out, hwm = process_records(records, book, cases, RULES, -1, 1, T0, compact=compact)
    assert seen == [T0] and out.compacted == 3
    assert hwm == 6 and out.applied == 2
    out, _ = process_records(records, book, cases, RULES, -1, 1, T0)  # no hook: ignored
    assert out.compacted == 0


# --- rows -----------------------------------------------------------------------------------------


def test_each_record_with_answers_gets_one_score_row_with_the_stage_of_its_customer() -> None:
    p = Partition(0)
    p.send(
        ev(1, A, "a", type_="ticket_opened", channel="chat", case_id="k1", context={"region": "eu"})
    )
    p.send(
        ev(
            2,
            A,
            "b",
            at=T0 + 1000,
            type_="survey_response",
            survey=("nps", 9.0),
            context={"region": "eu"},
        ),
        ev(
            3,
            A,
            "c",
            at=T0 + 61_000,
            type_="survey_response",
            survey=("nps", 3.0),
            context={"region": "eu"},
        ),
    )
    out = p.run()
    (score_row,) = out.rows["scores_store"]
    assert score_row[SCORE["stitch_offset"]] == 1
    assert score_row[SCORE["first_event_id"]] == "b"
    keys = zip(
        *(score_row[SCORE[c]] for c in ("bucket_start", "segment_kind", "segment_value", "metric")),
        strict=True,
    )
    responses = dict(zip(keys, score_row[SCORE["responses"]], strict=True))
    assert responses[(T0, "all", "all", "nps")] == 1
    assert responses[(T0 + MINUTE, "all", "all", "nps")] == 1
    assert responses[(T0, "journey_stage", "support", "nps")] == 1
    assert responses[(T0, "region", "eu", "nps")] == 1
    stages = {r[0]: r[COLUMN["journey_stage"]] for r in out.rows["events_store"]}
    assert stages == {"a": "support", "b": "support", "c": "support"}
    # the rolling view: the contact of record 0, the answers of record 1
    metrics = [(offset, sorted({k[3] for k in t})) for offset, t in out.tallies]
    assert metrics == [(0, ["effort"]), (1, ["nps"])]


def test_late_events_are_in_the_rows_and_out_of_the_rolling_view() -> None:
    p = Partition(0)
    late = ev(2, A, "late", survey=("nps", 0.0))
    late[2][COLUMN["flags"]] = [FLAG_LATE]
    p.send(ev(1, A, "now", survey=("nps", 10.0)), late)
    out = p.run()
    assert out.late == 1
    (score_row,) = out.rows["scores_store"]
    kinds = score_row[SCORE["segment_kind"]]
    assert (
        sum(n for k, n in zip(kinds, score_row[SCORE["responses"]], strict=True) if k == "all") == 2
    )
    ((_offset, tallies),) = out.tallies
    assert sum(t.responses for k, t in tallies.items() if k[1] == "all") == 1
    assert [a.event_id for a in out.answers] == ["now", "late"]


def test_a_late_earlier_contact_rewrites_its_successor() -> None:
    p = Partition(0)

    def contact(seq: int, event_id: str, at: int, channel: str, **kw: Any) -> list[Any]:
        return ev(
            seq,
            A,
            event_id,
            at=at,
            channel=channel,
            type_="call",
            case_id="k1",
            interaction={"wait_seconds": 0, **kw},
        )

    p.send(contact(1, "a", T0, "chat"), contact(2, "c", T0 + 2000, "chat"))
    first = {r[0]: r for r in p.run().rows["effort_store"]}
    assert first["c"][7:9] == (True, False) and first["c"][13] == 30
    p.send(contact(3, "b", T0 + 1000, "call_center", escalated=True))
    out = p.run()
    rows = {r[0]: r for r in out.rows["effort_store"]}
    assert set(rows) == {"b", "c"}
    assert rows["c"][7:9] == (True, True) and rows["c"][13] == 45
    assert rows["b"][13] == 10 + 20 + 15 + 15
    ((_offset, tallies),) = out.tallies
    effort = tallies[(T0, "all", "all", "effort")]
    assert (effort.responses, effort.score_milli) == (1, (60 + 15) * 1000)
    assert out.cases == {
        (A, "k1"): (("all", "all"), ("channel", "chat"), ("journey_stage", "support"))
    }


def test_batch_version_is_above_the_previous_and_every_hand_overs() -> None:
    handover = Handover(A, S, 1, Customer(A), {}, T0 + 5000).to_item()
    records = [(0, [None, [handover]])]
    assert batch_version(records, 0, T0) == T0 + 5001
    assert batch_version([], T0 + 10, T0) == T0 + 11
    assert batch_version([], 0, T0) == T0


def test_a_contacts_row_written_after_its_hand_over_outranks_its_former_partitions() -> None:
    """A's partition crashes after handing A over; S's partition combines A and rewrites
    a1's row; A's partition then does the batch again, later by the clock: its row of a1
    (signals as A alone had them) must not win."""
    ps = partitions()
    ps[1].send(ev(1, S, "s1", at=T0 - MINUTE, **CONTACT))
    ps[1].run()
    ps[0].send(ev(2, A, "a1", **CONTACT), ["m", 3, A, S])
    crashed = ps[0].run(persist=0)
    ps[0].deliver(crashed, ps)
    (combined,) = ps[1].run().rows["effort_store"]
    ps[0].now += 3_600_000
    again = ps[0].run()
    (stale,) = [r for r in again.rows["effort_store"] if r[0] == "a1"]
    assert combined[0] == "a1" and combined[7] is True and stale[7] is False
    assert combined[-1] > stale[-1]


def test_the_last_record_of_a_batch_is_always_reported_to_the_detector() -> None:
    p = Partition(0)
    p.send(ev(1, A, "a1", survey=("nps", 9.0)))
    p.send(ev(2, A, "a2"))
    out = p.run()
    assert [(offset, bool(t)) for offset, t in out.tallies] == [(0, True), (1, False)]
