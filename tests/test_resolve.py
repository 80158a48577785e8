"""The resolver's batch, as ``streams.domain.resolve`` states it: identity only, routing.

Every event row is routed, as an ``e`` item with its customer id, to the partition of
the customers topic that holds that customer; merges send an ``m`` item to the absorbed
customer's partition, identity changes of other customers an ``i`` item. Sequence
numbers grow along the resolve topic and are the same when a record is resolved again;
a repeat of an ``event_id`` links identifiers but is not routed; a record already
resolved (the window holds its events at its own coordinates) is skipped; events behind
their input partition's watermark by more than the grace are flagged late.

The resolver's state lives in dicts here (:class:`IdentityStore`), persisted between
batches in the order the resolver's owner writes it: live customers, nodes, deletions,
then the duplicate window's chunk.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from schemas.clickhouse import EVENT_COLUMN, EVENT_COLUMNS
from streams.domain.dedup import Chunk, DuplicateWindow
from streams.domain.identity import Identity, IdentityRules, Resolver, customer_id_for
from streams.domain.resolve import (
    FLAG_LATE,
    ResolveOutput,
    partition_of,
    resolve_records,
    seq_of,
)
from streams.domain.scores import Watermarks

COLUMN = EVENT_COLUMN
TOPIC = "app-resolve"
MINUTE = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE
WEEK = 7 * 86_400_000


def event_row(
    event_id: str,
    at: int,
    identifiers: Mapping[str, str],
    *,
    channel: str = "web",
    type_: str = "page_view",
    case_id: str | None = None,
    survey: tuple[str, float] | None = None,
    interaction: Mapping[str, Any] | None = None,
    context: Mapping[str, str] | None = None,
    source: tuple[str, int, int] = ("touchpoints.web", 0, 0),
) -> list[Any]:
    """An ``events_store`` row as ingest forwards it (``EVENT_COLUMNS`` order)."""
    row: list[Any] = [None] * len(EVENT_COLUMNS)
    values: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": at,
        "client_occurred_at": at,
        "received_at": at,
        "channel": channel,
        "type": type_,
        "customer_id": "",
        "identifiers": dict(identifiers),
        "rejected_identifiers": {},
        "schema_version": "1.0",
        "source": "test",
        "case_id": case_id,
        "context": dict(context or {}),
        "properties": "{}",
        "flags": [],
        "source_topic": source[0],
        "source_partition": source[1],
        "source_offset": source[2],
        "journey_stage": "",
    }
    if survey is not None:
        metric, score = survey
        values |= {
            "survey_metric": metric,
            "survey_score": score,
            "survey_scale_max": {"nps": 10, "csat": 5, "ces": 7}[metric],
        }
    if interaction is not None:
        values |= {k: interaction.get(k) for k in ("wait_seconds", "transferred", "escalated")}
        values["resolved"] = interaction.get("resolved")
        values["interaction_direction"] = "inbound"
    for name, value in values.items():
        row[COLUMN[name]] = value
    return row


@dataclass
class IdentityStore:
    """The resolver's table: nodes, identities (as stored JSON), window chunks, marks."""

    nodes: dict[str, str] = field(default_factory=dict)
    identities: dict[str, bytes] = field(default_factory=dict)
    chunks: dict[str, dict[str, Any]] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)

    def resolver(self, rules: IdentityRules) -> Resolver:
        def read_identity(customer_id: str) -> Identity | None:
            value = self.identities.get(customer_id)
            return None if value is None else Identity.from_json(customer_id, value)

        return Resolver(rules, self.nodes.get, read_identity)

    def live(self) -> dict[str, Identity]:
        return {k: Identity.from_json(k, v) for k, v in self.identities.items()}

    def window(self) -> DuplicateWindow:
        """The duplicate window as a new owner loads it."""
        window = DuplicateWindow(window_ms=WEEK, max_ids_per_partition=1_000_000)
        window.load(0, [Chunk.from_value(k, v) for k, v in self.chunks.items()])
        return window

    def watermarks(self, grace_ms: int) -> Watermarks:
        return Watermarks(grace_ms, self.marks)

    def writes(
        self, resolver: Resolver, window: DuplicateWindow, watermarks: Watermarks, now_ms: int
    ) -> list[tuple[str, Any]]:
        """The batch's writes in the owner's order: live customers, nodes, deletions, the
        window's chunk (it vouches for everything before it), the watermarks."""
        changes = resolver.changes()
        out: list[tuple[str, Any]] = [
            (f"c/{k}", i.to_json()) for k, i in changes.identities.items() if i is not None
        ]
        out += [(f"n/{k}", owner) for k, owner in changes.nodes.items()]
        out += [(f"c/{k}", None) for k, i in changes.identities.items() if i is None]
        sealed = window.seal(TOPIC, 0, now_ms)
        out += [(f"d/{key}", None) for key in sealed.delete]
        if sealed.write is not None:
            out.append((f"d/{sealed.write.key}", sealed.write.to_value()))
        out.append(("w/", dict(watermarks.marks)))
        return out

    def apply(self, writes: Sequence[tuple[str, Any]]) -> None:
        for key, value in writes:
            kind, name = key[:2], key[2:]
            table: dict[str, Any] = {
                "c/": self.identities,
                "n/": self.nodes,
                "d/": self.chunks,
            }.get(kind, {})
            if kind == "w/":
                self.marks = dict(value)
            elif value is None:
                table.pop(name, None)
            else:
                table[name] = value


class Resolving:
    """The resolver partition's loop without Kafka: resolve a batch, persist, repeat."""

    def __init__(
        self, rules: IdentityRules | None = None, partitions: int = 4, grace_ms: int = WEEK
    ) -> None:
        self.rules = rules or IdentityRules()
        self.partitions = partitions
        self.grace_ms = grace_ms
        self.store = IdentityStore()
        self.window = self.store.window()
        self.now_ms = T0

    def batch(
        self, records: Sequence[tuple[int, list[list[Any]]]], *, persist: bool = True
    ) -> ResolveOutput:
        """Resolve ``records`` (copies: the resolver fills rows in) and persist the state,
        or (``persist=False``) crash before anything was persisted: the next owner loads
        the window from the store."""
        resolver = self.store.resolver(self.rules)
        watermarks = self.store.watermarks(self.grace_ms)
        self.now_ms += 1000
        out = resolve_records(
            copy.deepcopy(records),
            resolver,
            self.window,
            TOPIC,
            self.partitions,
            watermarks,
            self.now_ms,
        )
        if persist:
            self.store.apply(self.store.writes(resolver, self.window, watermarks, self.now_ms))
        else:
            self.window = self.store.window()
        return out


def items_of(out: ResolveOutput) -> list[tuple[int, list[Any]]]:
    """Every item with its partition, in sequence order."""
    return sorted(((p, i) for p, items in out.items.items() for i in items), key=lambda x: x[1][1])


A, B = customer_id_for("email", "a@x"), customer_id_for("phone", "p")


# --- routing ----------------------------------------------------------------------------------


def test_each_event_goes_to_its_customers_partition_with_the_customer_id_filled_in() -> None:
    resolving = Resolving(partitions=8)
    out = resolving.batch(
        [
            (0, [event_row("e1", T0, {"email": "a@x"})]),
            (1, [event_row("e2", T0, {"phone": "p"}), event_row("e3", T0, {"email": "a@x"})]),
        ]
    )
    routed = [
        (p, item[0], item[2][COLUMN["event_id"]], item[2][COLUMN["customer_id"]])
        for p, item in items_of(out)
    ]
    assert routed == [
        (partition_of(A, 8), "e", "e1", A),
        (partition_of(B, 8), "e", "e2", B),
        (partition_of(A, 8), "e", "e3", A),
    ]
    assert out.routed == 3 and out.merges == []
    # the event that created (changed) its customer's identity carries the snapshot
    snapshots = [item[3] for _p, item in items_of(out)]
    assert snapshots == [[{"email": ["a@x"]}, []], [{"phone": ["p"]}, []], None]


def test_partition_of_is_stable_and_spreads_customers() -> None:
    ids = [customer_id_for("email", f"{i}@x") for i in range(400)]
    assert [partition_of(c, 8) for c in ids] == [partition_of(c, 8) for c in ids]
    counts = [sum(partition_of(c, 8) == p for c in ids) for p in range(8)]
    assert min(counts) > 25, counts  # 50 expected each
    assert {partition_of(c, 1) for c in ids} == {0}


def test_a_merge_tells_the_absorbed_customers_partition_after_its_events() -> None:
    """``m`` goes to the absorbed customer's partition; the event, with the survivor's new
    identity, to the survivor's; sequence numbers in the order the resolver decided."""
    resolving = Resolving(partitions=8)
    out = resolving.batch(
        [
            (0, [event_row("e1", T0, {"email": "a@x"})]),
            (1, [event_row("e2", T0 + 1, {"phone": "p"})]),
            (2, [event_row("e3", T0 + 2, {"email": "a@x", "phone": "p"})]),
        ]
    )
    items = items_of(out)
    kinds = [(p, i[0]) for p, i in items]
    assert kinds == [
        (partition_of(A, 8), "e"),
        (partition_of(B, 8), "e"),
        (partition_of(B, 8), "m"),
        (partition_of(A, 8), "e"),
    ]
    merge = items[2][1]
    assert merge[2:] == [B, A]  # B (seen later) merged into A
    last = items[3][1]
    assert last[2][COLUMN["customer_id"]] == A
    assert last[3] == [{"email": ["a@x"], "phone": ["p"]}, [B]]
    assert [m.merged_from for m in out.merges] == [B]


def test_a_refused_identifier_starts_a_customer_whose_partition_is_told() -> None:
    one = Resolving(IdentityRules(limits={"phone": 0}), partitions=8)
    out = one.batch([(0, [event_row("e1", T0, {"email": "a@x", "phone": "p"})])])
    assert out.refusals == {"limit:phone": 1}
    items = items_of(out)
    assert [(p, i[0], i[2] if i[0] == "i" else None) for p, i in items] == [
        (partition_of(B, 8), "i", B),
        (partition_of(A, 8), "e", None),
    ]
    assert items[0][1][3] == [{"phone": ["p"]}, []]


# --- sequence numbers ---------------------------------------------------------------------------


def test_seq_of_grows_with_offset_row_and_item() -> None:
    assert seq_of(1, 0, 0) > seq_of(0, 65_535, 255) > seq_of(0, 1, 0) > seq_of(0, 0, 255)
    assert seq_of(2**39 - 1, 65_535, 255) < 2**63


def _records(n: int) -> list[tuple[int, list[list[Any]]]]:
    ids = ({"email": "a@x"}, {"phone": "p"}, {"email": "a@x", "phone": "p"}, {"device_id": "d"})
    return [
        (
            offset,
            [event_row(f"e{offset}-{r}", T0 + offset, ids[(offset + r) % 4]) for r in range(2)],
        )
        for offset in range(n)
    ]


def test_sequence_numbers_grow_per_partition_and_are_the_same_when_resolved_again() -> None:
    """A crash before anything was persisted: the same records resolved again (in other
    batches) give the same items with the same sequence numbers."""
    records = _records(6)
    first = Resolving(partitions=3)
    once = [first.batch(records[:2]), first.batch(records[2:])]
    again = Resolving(partitions=3)
    lost = again.batch(records[:4], persist=False)
    assert lost.routed == 8
    twice = [again.batch(records[:3]), again.batch(records[3:])]

    def per_partition(outs: list[ResolveOutput]) -> dict[int, list[list[Any]]]:
        out: dict[int, list[list[Any]]] = {}
        for o in outs:
            for p, items in o.items.items():
                out.setdefault(p, []).extend(items)
        return out

    assert per_partition(once) == per_partition(twice)
    for items in per_partition(once).values():
        seqs = [i[1] for i in items]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


# --- repeats and replays ------------------------------------------------------------------------


def test_a_repeat_links_its_identifiers_is_not_routed_and_is_a_duplicate_from_another_message() -> (
    None
):
    resolving = Resolving(partitions=8)
    resolving.batch([(0, [event_row("e1", T0, {"email": "a@x"}, source=("t.web", 0, 5))])])
    # the same input message forwarded again (ingest replayed): linked, not reported
    again = resolving.batch(
        [(1, [event_row("e1", T0, {"email": "a@x", "phone": "p"}, source=("t.web", 0, 5))])]
    )
    assert again.routed == 0 and again.duplicates == 1
    assert again.rows["duplicates_store"] == []
    assert [(p, i[0], i[2]) for p, i in items_of(again)] == [(partition_of(A, 8), "i", A)]
    assert resolving.store.nodes["phone:p"] == A
    # another message with the same event id: a duplicate, reported
    other = resolving.batch([(2, [event_row("e1", T0, {"email": "a@x"}, source=("t.web", 3, 9))])])
    assert other.routed == 0 and other.duplicates == 1
    (duplicate,) = other.rows["duplicates_store"]
    assert duplicate[:5] == ("t.web", 3, 9, "e1", "stitch")
    assert items_of(other) == []


def test_two_messages_with_one_event_id_in_one_record_count_once() -> None:
    """The second is a repeat of the first, though the window holds the first at this
    very record's coordinates (it is no replay: it came from another input message)."""
    resolving = Resolving(partitions=2)
    out = resolving.batch(
        [
            (
                0,
                [
                    event_row("e1", T0, {"email": "a@x"}, source=("t.web", 0, 1)),
                    event_row("e1", T0, {"email": "a@x"}, source=("t.web", 1, 7)),
                ],
            )
        ]
    )
    assert (out.routed, out.duplicates, out.replayed) == (1, 1, 0)
    assert len(out.rows["duplicates_store"]) == 1


def test_a_record_resolved_and_persisted_before_is_skipped() -> None:
    """The resolver stopped after persisting the window but before committing the
    offset: the record comes again and nothing of it is routed or counted again."""
    resolving = Resolving(partitions=2)
    records = _records(3)
    resolving.batch(records)
    again = resolving.batch(records)
    assert again.items == {}
    assert (again.routed, again.replayed, again.duplicates) == (0, 6, 0)
    # the state is as it was: replaying it twice in a new owner changes nothing
    before = copy.deepcopy(resolving.store)
    resolving.window = resolving.store.window()
    resolving.batch(records)
    assert resolving.store.nodes == before.nodes
    assert resolving.store.identities == before.identities


def test_events_beyond_the_grace_of_their_partition_are_flagged_late() -> None:
    resolving = Resolving(partitions=1, grace_ms=10 * MINUTE)
    resolving.batch([(0, [event_row("now", T0, {"email": "a@x"})])])
    out = resolving.batch(
        [
            (
                1,
                [
                    event_row("within", T0 - 9 * MINUTE, {"email": "a@x"}),
                    event_row("beyond", T0 - 11 * MINUTE, {"email": "a@x"}),
                    event_row(
                        "other",
                        T0 - 60 * MINUTE,
                        {"email": "a@x"},
                        source=("touchpoints.web", 1, 0),
                    ),
                ],
            )
        ]
    )
    flags = {i[2][COLUMN["event_id"]]: i[2][COLUMN["flags"]] for _p, i in items_of(out)}
    assert flags == {"within": [], "beyond": [FLAG_LATE], "other": []}
    assert out.late == 1


def test_rows_for_the_identity_tables() -> None:
    resolving = Resolving(IdentityRules(limits={"phone": 1}), partitions=2)
    out = resolving.batch(
        [
            (0, [event_row("e1", T0, {"email": "a@x", "phone": "p"})]),
            (1, [event_row("e2", T0 + 1, {"device_id": "d"})]),
            (2, [event_row("e3", T0 + 2, {"device_id": "d", "email": "a@x", "phone": "q"})]),
        ]
    )
    rows = out.rows
    assert len(rows["identity_merges_store"]) == 1
    assert len(rows["identity_refusals_store"]) == 1
    assert out.refusals == {"limit:phone": 1}
    aliases = {(r[0], r[1]): r[2] for r in rows["customer_aliases_store"]}
    assert aliases[("device_id", "d")] == A
    assert aliases[("phone", "q")] == customer_id_for("phone", "q")


@pytest.mark.parametrize("partitions", [1, 3])
def test_an_empty_batch_routes_nothing(partitions: int) -> None:
    out = Resolving(partitions=partitions).batch([])
    assert out.items == {} and out.routed == 0


def test_identity_json_round_trips() -> None:
    identity = Identity("c_1", {"email": ["a", "b"]}, ["c_2"], 5)
    assert Identity.from_json("c_1", identity.to_json()) == identity
    assert orjson.loads(identity.to_json()) == [{"email": ["a", "b"]}, ["c_2"], 5]
