"""Identity resolution, as ``streams.domain.identity`` states it, against simple references.

Identifiers seen together belong to one customer: without guards the customers are the
connected components of the identifier graph, whatever the order of the events and
however they are cut into batches. With guards (per-kind limits, unique kinds) no
customer breaks them, every refused link is reported, and the result equals a naive
one-event-at-a-time reading of the rules. Ids are stable (a customer's id only changes
when it is absorbed), every event belongs to the customer of its first identifier, and a
replayed batch changes nothing.

The resolver reads persisted state through two functions; here they are backed by two
dicts (identities as the JSON the resolver's table keeps), and the changes of each batch
are persisted between batches like the resolver's owner does: live customers, nodes,
then deletions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.customer import Merge, Refusal
from streams.domain.identity import (
    DEFAULT_PRIORITY,
    NEVER,
    Changes,
    Identity,
    IdentityRules,
    Resolved,
    Resolver,
    customer_id_for,
    node_key,
)

#: no limit can be reached and no kind is unique: every link is accepted
FREE = IdentityRules(limits={}, default_limit=1_000_000, unique_kinds=frozenset())
#: small limits so that events made of a few shared values provoke every guard
TIGHT = IdentityRules(
    limits={"loyalty_id": 1, "email": 2, "phone": 2, "device_id": 3, "anonymous_id": 3},
    default_limit=2,
)

KINDS = (*DEFAULT_PRIORITY, "x_card")  # x_card: not in the priority list, default limit
#: fewer kinds and values, so that guards trigger often
CROWDED = ("account_id", "crm_id", "email", "phone", "device_id", "x_card")
Node = tuple[str, str]


@dataclass(frozen=True)
class Event:
    """An accepted event as the resolver sees it: its identifiers and its time."""

    event_id: str
    identifiers: Mapping[str, str]
    at: int
    counted: bool = True  # False: a repeat of an event_id already counted

    def nodes(self) -> list[Node]:
        return list(self.identifiers.items())


# --- the persisted state --------------------------------------------------------------------


@dataclass
class Store:
    """The resolver's table: ``kind:value`` -> customer id, customer id -> JSON."""

    nodes: dict[str, str] = field(default_factory=dict)
    customers: dict[str, bytes] = field(default_factory=dict)

    def read_node(self, key: str) -> str | None:
        return self.nodes.get(key)

    def read_identity(self, customer_id: str) -> Identity | None:
        value = self.customers.get(customer_id)
        return None if value is None else Identity.from_json(customer_id, value)

    def resolver(self, rules: IdentityRules) -> Resolver:
        return Resolver(rules, self.read_node, self.read_identity)

    def persist(self, changes: Changes) -> None:
        """Live customers, then nodes, then deleted customers, as the resolver's owner
        writes them."""
        for customer_id, identity in changes.identities.items():
            if identity is not None:
                self.customers[customer_id] = identity.to_json()
        for key, owner in changes.nodes.items():
            if owner is None:
                self.nodes.pop(key, None)
            else:
                self.nodes[key] = owner
        for customer_id, identity in changes.identities.items():
            if identity is None:
                self.customers.pop(customer_id, None)

    def live(self) -> dict[str, Identity]:
        return {cid: Identity.from_json(cid, value) for cid, value in self.customers.items()}

    def snapshot(self) -> tuple[dict[str, str], dict[str, bytes]]:
        return dict(self.nodes), dict(self.customers)


@dataclass
class Batch:
    """What one batch returned: an outcome per event, in order."""

    events: list[Event]
    results: list[Resolved]

    @property
    def merges(self) -> list[Merge]:
        return [m for r in self.results for m in r.merges]

    @property
    def refusals(self) -> list[Refusal]:
        return [f for r in self.results for f in r.refusals]


def run_batch(
    store: Store,
    events: Sequence[Event],
    rules: IdentityRules,
    first_seq: int,
    *,
    check: Callable[[Resolver, Event, Resolved], None] | None = None,
) -> Batch:
    """Resolve ``events`` with one resolver and persist its changes (``first_seq``: the
    position of the batch's first event, kept for the callers' bookkeeping)."""
    resolver = store.resolver(rules)
    results = []
    for event in events:
        result = resolver.resolve(event.identifiers, event.event_id, event.at, count=event.counted)
        if check is not None:
            check(resolver, event, result)
        results.append(result)
    store.persist(resolver.changes())
    return Batch(list(events), results)


def split(events: Sequence[Event], cuts: Iterable[int]) -> list[list[Event]]:
    """``events`` cut into consecutive batches at the given positions (empty ones dropped)."""
    bounds = sorted({0, len(events), *(c % (len(events) + 1) for c in cuts)})
    return [list(events[a:b]) for a, b in pairwise(bounds) if a < b]


def run_batches(
    store: Store, batches: Sequence[Sequence[Event]], rules: IdentityRules
) -> list[Batch]:
    out, seq = [], 0
    for batch in batches:
        out.append(run_batch(store, batch, rules, seq))
        seq += len(batch)
    return out


def grouping(store: Store) -> set[frozenset[str]]:
    """The identifiers of each live customer, as node keys."""
    return {
        frozenset(node_key(k, v) for k, v in customer.nodes()) for customer in store.live().values()
    }


# --- references -------------------------------------------------------------------------------


class UnionFind:
    """Plain union-find over identifier nodes: the connected components of the graph."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, nodes: Iterable[str]) -> None:
        roots = [self.find(n) for n in nodes]
        for root in roots[1:]:
            self.parent[self.find(root)] = self.find(roots[0])

    def add(self, events: Iterable[Event]) -> UnionFind:
        for event in events:
            self.union(node_key(k, v) for k, v in event.nodes())
        return self

    def groups(self) -> set[frozenset[str]]:
        found: dict[str, set[str]] = defaultdict(set)
        for node in list(self.parent):
            found[self.find(node)].add(node)
        return {frozenset(g) for g in found.values()}


@dataclass
class Person:
    """A customer of the naive reference: its identifiers, what it has seen."""

    customer_id: str
    nodes: set[Node]
    first_seen: int = 0  # 0: nothing counted yet
    touches: int = 0


class Naive:
    """The rules of ``streams/identity.py`` read one event at a time, in the simplest code.

    Identifiers in priority order (then kind, then value); the first one gives the event's
    customer (its owner, or a new customer named after it); each next one joins it unless
    a guard refuses: a new identifier then starts a customer of its own, a known one stays
    with its customer. The survivor of a merge: the holder of a unique kind, then the one
    first seen earlier, then the smaller id. When a merge breaks several guards, the one
    reported is that of the first kind in priority order.
    """

    def __init__(self, rules: IdentityRules) -> None:
        self.rules = rules
        self.people: list[Person] = []
        self.refusals: list[tuple[str, str, str, str]] = []  # event, kind, value, reason
        self.merges: list[tuple[str, str, str]] = []  # event, merged_from, merged_into

    def rank(self, kind: str) -> tuple[int, str]:
        priority = list(self.rules.priority)
        return (priority.index(kind) if kind in priority else len(priority), kind)

    def owner(self, node: Node) -> Person | None:
        return next((p for p in self.people if node in p.nodes), None)

    def broken(self, nodes: set[Node]) -> str | None:
        for kind in sorted({k for k, _ in nodes}, key=self.rank):
            n = sum(1 for k, _ in nodes if k == kind)
            if kind in self.rules.unique_kinds and n > 1:
                return f"unique:{kind}"
            if n > self.rules.limit(kind):
                return f"limit:{kind}"
        return None

    def survivor_rank(self, p: Person) -> tuple[bool, int, str]:
        anchored = any(k in self.rules.unique_kinds for k, _ in p.nodes)
        return (not anchored, p.first_seen or 2**62, p.customer_id)

    def new(self, node: Node) -> Person:
        person = Person(customer_id_for(*node), {node})
        self.people.append(person)
        return person

    def stitch(self, event: Event) -> str:
        current: Person | None = None
        ordered = sorted(event.nodes(), key=lambda kv: (*self.rank(kv[0]), kv[1]))
        for node in ordered:
            owner = self.owner(node)
            if current is None:
                current = owner or self.new(node)
                continue
            if owner is current:
                continue
            together = current.nodes | (owner.nodes if owner else {node})
            reason = self.broken(together)
            if reason is not None:
                if owner is None:
                    self.new(node)
                self.refusals.append((event.event_id, *node, reason))
                continue
            if owner is None:
                current.nodes.add(node)
                continue
            survivor, absorbed = sorted((current, owner), key=self.survivor_rank)
            survivor.nodes |= absorbed.nodes
            survivor.first_seen = min(
                (t for t in (survivor.first_seen, absorbed.first_seen) if t), default=0
            )
            survivor.touches += absorbed.touches
            self.people.remove(absorbed)
            self.merges.append((event.event_id, absorbed.customer_id, survivor.customer_id))
            current = survivor
        assert current is not None
        if event.counted:
            current.touches += 1
            current.first_seen = min(current.first_seen or event.at, event.at)
        return current.customer_id

    def owners(self) -> dict[str, str]:
        return {node_key(*n): p.customer_id for p in self.people for n in p.nodes}


# --- strategies -------------------------------------------------------------------------------


def event_lists(
    kinds: Sequence[str] = KINDS, n: int = 6, max_size: int = 40
) -> st.SearchStrategy[list[Event]]:
    """Events ``e00``, ``e01``, ... showing one to four identifiers (one value per kind,
    from ``n`` per kind), at small event times (ties are frequent)."""
    shown = st.lists(
        st.tuples(st.sampled_from(kinds), st.integers(0, n - 1)), min_size=1, max_size=4
    )
    return st.lists(st.tuples(shown, st.integers(1, 30)), min_size=1, max_size=max_size).map(
        lambda rows: [
            Event(f"e{i:02d}", {k: f"{k[:3]}{v}" for k, v in ids}, at)
            for i, (ids, at) in enumerate(rows)
        ]
    )


cuts = st.lists(st.integers(0, 40), max_size=6)


@st.composite
def guarded_rules(draw: st.DrawFn) -> IdentityRules:
    """Small limits (1 to 3) per kind and any of the default unique kinds."""
    limits = {k: draw(st.integers(1, 3), label=f"limit {k}") for k in CROWDED if k != "x_card"}
    unique = draw(st.sets(st.sampled_from(("account_id", "crm_id"))), label="unique")
    default = draw(st.integers(1, 3), label="default limit")
    return IdentityRules(limits=limits, default_limit=default, unique_kinds=frozenset(unique))


# --- 1. without guards: the connected components, whatever the order and batching -------------


@settings(max_examples=150, deadline=None)
@given(data=st.data(), events=event_lists())
def test_without_guards_customers_are_the_connected_components(
    data: st.DataObject, events: list[Event]
) -> None:
    """Any order of the same events, cut into any batches persisted in between, gives the
    connected components of the identifier graph."""
    order = data.draw(st.permutations(events), label="order")
    batches = split(order, data.draw(cuts, label="cuts"))
    store = Store()
    run_batches(store, batches, FREE)
    assert grouping(store) == UnionFind().add(events).groups()


# --- 2. with guards: the invariants after every batch ----------------------------------------


def check_event(rules: IdentityRules) -> Callable[[Resolver, Event, Resolved], None]:
    """Right after an event: its identifiers that did not join its customer are exactly the
    refused ones, and each refusal names a guard the two customers together would break."""

    def check(stitcher: Resolver, event: Event, result: Resolved) -> None:
        outside = {n for n in event.nodes() if stitcher.owner(*n) != result.customer_id}
        assert {(r.kind, r.value) for r in result.refusals} == outside
        assert len(result.refusals) == len(outside)
        current = stitcher.identity(result.customer_id)
        assert current is not None
        absorbed_here = {m.merged_from for m in result.merges}
        for refusal in result.refusals:
            assert refusal.event_id == event.event_id
            assert refusal.customer_id in {result.customer_id} | absorbed_here
            assert stitcher.owner(refusal.kind, refusal.value) == refusal.other_customer_id
            other = stitcher.identity(refusal.other_customer_id)
            assert other is not None
            guard, _, kind = refusal.reason.partition(":")
            assert guard == ("unique" if kind in rules.unique_kinds else "limit")
            together = set(current.identifiers.get(kind, ())) | set(other.identifiers.get(kind, ()))
            assert len(together) > rules.limit(kind), refusal

    return check


def check_store(
    store: Store, rules: IdentityRules, seen: Sequence[Event], absorbed: set[str]
) -> None:
    """The persisted state after a batch: every identifier seen is owned by exactly one live
    customer that lists it, no customer breaks a guard, customers only group identifiers
    that are connected, and absorbed customers are gone and pointed at by nothing."""
    live = store.live()
    listed: dict[str, str] = {}
    for customer_id, customer in live.items():
        assert customer.customer_id == customer_id
        for kind, kind_values in customer.identifiers.items():
            assert len(kind_values) == len(set(kind_values)), customer
            assert len(kind_values) <= rules.limit(kind), customer
            for value in kind_values:
                key = node_key(kind, value)
                assert key not in listed, f"{key} in {customer_id} and {listed[key]}"
                listed[key] = customer_id
    assert listed == store.nodes
    assert set(listed) == {node_key(k, v) for e in seen for k, v in e.nodes()}
    assert not absorbed & set(live)
    assert not absorbed & set(store.nodes.values())
    components = UnionFind().add(seen)
    for customer in live.values():
        assert len({components.find(node_key(k, v)) for k, v in customer.nodes()}) == 1


@settings(max_examples=100, deadline=None)
@given(rules=guarded_rules(), events=event_lists(CROWDED, 4), cut_at=cuts)
def test_with_guards_every_batch_leaves_a_consistent_guarded_state(
    rules: IdentityRules, events: list[Event], cut_at: list[int]
) -> None:
    """Small limits and unique kinds, identifiers shared across accounts: after every batch
    the guards hold, the state is consistent and every refused link was reported."""
    store, seq, seen = Store(), 0, []
    absorbed: set[str] = set()
    for batch in split(events, cut_at):
        done = run_batch(store, batch, rules, seq, check=check_event(rules))
        seq += len(batch)
        seen += batch
        absorbed |= {m.merged_from for m in done.merges}
        check_store(store, rules, seen, absorbed)


def test_a_device_shared_by_two_accounts_is_refused_and_reported() -> None:
    """The shared tablet: the second account to show it keeps its own customer."""
    store = Store()
    events = [
        Event("e1", {"account_id": "acc-a", "device_id": "tablet"}, 10),
        Event("e2", {"account_id": "acc-b", "device_id": "tablet"}, 20),
    ]
    (batch,) = run_batches(store, [events], IdentityRules())
    assert batch.refusals == [
        Refusal(
            "e2",
            "device_id",
            "tablet",
            customer_id_for("account_id", "acc-b"),
            customer_id_for("account_id", "acc-a"),
            "unique:account_id",
        )
    ]
    assert grouping(store) == {
        frozenset({"account_id:acc-a", "device_id:tablet"}),
        frozenset({"account_id:acc-b"}),
    }


def test_a_new_identifier_over_the_limit_starts_a_customer_of_its_own() -> None:
    """A new phone for a customer that holds its one phone is refused (not linked) and
    starts a customer of its own."""
    store = Store()
    rules = IdentityRules(limits={"phone": 1})
    events = [
        Event("e1", {"email": "a@x", "phone": "p1"}, 10),
        Event("e2", {"email": "a@x", "phone": "p2"}, 20),
    ]
    (batch,) = run_batches(store, [events], rules)
    assert batch.refusals == [
        Refusal(
            "e2",
            "phone",
            "p2",
            customer_id_for("email", "a@x"),
            customer_id_for("phone", "p2"),
            "limit:phone",
        )
    ]
    assert grouping(store) == {frozenset({"email:a@x", "phone:p1"}), frozenset({"phone:p2"})}


def test_a_known_identifier_whose_customer_would_break_a_limit_stays_with_it() -> None:
    """The device already shares a customer with another e-mail: the merge is refused by
    the e-mail limit and the device stays where it was."""
    store = Store()
    rules = IdentityRules(limits={"email": 1})
    events = [
        Event("e1", {"email": "a@x", "device_id": "d"}, 10),
        Event("e2", {"email": "b@x", "device_id": "d"}, 20),
    ]
    (batch,) = run_batches(store, [events], rules)
    assert [(r.event_id, r.kind, r.value, r.reason) for r in batch.refusals] == [
        ("e2", "device_id", "d", "limit:email")
    ]
    assert grouping(store) == {frozenset({"email:a@x", "device_id:d"}), frozenset({"email:b@x"})}


# --- 3. one order: the naive sequential reading of the rules ---------------------------------


@settings(max_examples=100, deadline=None)
@given(rules=guarded_rules(), events=event_lists(CROWDED, 4), cut_at=cuts)
def test_stitching_equals_the_naive_reading_of_the_rules_event_by_event(
    rules: IdentityRules, events: list[Event], cut_at: list[int]
) -> None:
    """The same events in the same order, in any batches: the same customers with the same
    ids, the same merges, the same refusals and the same first seen per customer as the naive
    reference (which also checks the survivor rule and id derivation as a property)."""
    naive = Naive(rules)
    expected = [naive.stitch(e) for e in events]
    store = Store()
    batches = run_batches(store, split(events, cut_at), rules)
    results = [r for b in batches for r in b.results]
    assert store.nodes == naive.owners()
    assert [(r.event_id, r.kind, r.value, r.reason) for b in batches for r in b.refusals] == (
        naive.refusals
    )
    merges = [(m.event_id, m.merged_from, m.merged_into) for b in batches for m in b.merges]
    assert merges == naive.merges
    # the customer each event was stitched to, as it was when stitched
    assert [r.customer_id for r in results] == expected
    live = store.live()
    assert {p.customer_id: p.first_seen or NEVER for p in naive.people} == {
        cid: c.first_seen for cid, c in live.items()
    }


# --- 4. the survivor of a merge ---------------------------------------------------------------


def survivor_of(history: list[Event], rules: IdentityRules = FREE) -> tuple[str, str]:
    """(merged_into, merged_from) of the one merge that the last event of ``history`` makes,
    with the earlier events in a batch before it and in the same batch."""
    found = set()
    for batches in ([history[:-1], history[-1:]], [history]):
        store = Store()
        merges = run_batches(store, batches, rules)[-1].merges
        assert [m.event_id for m in merges] == [history[-1].event_id]
        found.add((merges[0].merged_into, merges[0].merged_from))
    assert len(found) == 1
    return found.pop()


EMAIL, PHONE = customer_id_for("email", "a"), customer_id_for("phone", "p")
ACCOUNT, CRM = customer_id_for("account_id", "acc"), customer_id_for("crm_id", "crm")


def test_the_holder_of_a_unique_kind_survives_even_when_seen_later() -> None:
    history = [
        Event("e1", {"email": "a"}, 100),
        Event("e2", {"account_id": "acc", "phone": "p"}, 200),
        Event("e3", {"email": "a", "phone": "p"}, 300),
    ]
    assert survivor_of(history, IdentityRules()) == (ACCOUNT, EMAIL)


def test_between_holders_of_unique_kinds_the_one_first_seen_earlier_survives() -> None:
    history = [
        Event("e1", {"account_id": "acc"}, 200),
        Event("e2", {"crm_id": "crm"}, 100),
        Event("e3", {"account_id": "acc", "crm_id": "crm"}, 300),
    ]
    assert survivor_of(history, IdentityRules()) == (CRM, ACCOUNT)


def test_otherwise_the_one_first_seen_earlier_survives() -> None:
    """By event time, not by arrival, whichever of the two the event shows first."""
    for email_at, phone_at, expected in [(200, 100, (PHONE, EMAIL)), (100, 200, (EMAIL, PHONE))]:
        history = [
            Event("e1", {"email": "a"}, email_at),
            Event("e2", {"phone": "p"}, phone_at),
            Event("e3", {"email": "a", "phone": "p"}, 300),
        ]
        assert survivor_of(history) == expected


def test_first_seen_at_the_same_time_the_smaller_id_survives() -> None:
    history = [
        Event("e1", {"email": "a"}, 100),
        Event("e2", {"phone": "p"}, 100),
        Event("e3", {"phone": "p", "email": "a"}, 300),
    ]
    assert survivor_of(history) == (min(EMAIL, PHONE), max(EMAIL, PHONE))


def test_a_customer_the_event_itself_creates_has_not_been_seen_yet_and_is_absorbed() -> None:
    """The new e-mail's customer exists only since this event: the known customer survives,
    though the event is older than anything it has seen."""
    history = [
        Event("e1", {"phone": "p"}, 100),
        Event("e2", {"email": "a", "phone": "p"}, 50),
    ]
    assert survivor_of(history) == (PHONE, EMAIL)
    store = Store()
    run_batches(store, [history], FREE)
    assert store.live()[PHONE].first_seen == 50


# --- 5. every event is counted once ----------------------------------------------------------


@st.composite
def with_repeats(draw: st.DrawFn, events: list[Event]) -> list[Event]:
    """``events`` with some of them repeated later (same id and identifiers, not counted)."""
    out = list(events)
    for i in draw(st.lists(st.integers(0, len(events) - 1), max_size=8), label="repeated"):
        position = draw(st.integers(out.index(events[i]) + 1, len(out)), label="at")
        e = events[i]
        out.insert(position, Event(e.event_id, e.identifiers, e.at, counted=False))
    return out


@settings(max_examples=60, deadline=None)
@given(
    rules=st.sampled_from([FREE, TIGHT, IdentityRules()]) | guarded_rules(),
    events=event_lists(CROWDED, 4).flatmap(with_repeats),
    cut_at=cuts,
)
def test_every_event_ends_in_the_customer_of_its_first_identifier(
    rules: IdentityRules, events: list[Event], cut_at: list[int]
) -> None:
    """Whatever merges and refusals happen, the customer an event was resolved to, followed
    through the merges reported after it, is the customer that now owns the event's
    highest-priority identifier (where the customer partitions count it), and is live;
    a customer's first seen is the earliest of the counted events that end in it."""
    store = Store()
    batches = run_batches(store, split(events, cut_at), rules)
    into: dict[str, str] = {}
    resolved: list[tuple[Event, str]] = []
    for batch in batches:
        for event, result in zip(batch.events, batch.results, strict=True):
            into.update({m.merged_from: m.merged_into for m in result.merges})
            resolved.append((event, result.customer_id))

    def final(customer_id: str) -> str:
        while customer_id in into:
            customer_id = into[customer_id]
        return customer_id

    live = store.live()
    first_seen: dict[str, int] = {}
    for event, customer_id in resolved:
        first = min(event.nodes(), key=lambda kv: (Naive(rules).rank(kv[0]), kv[1]))
        assert final(customer_id) == store.nodes[node_key(*first)] in live
        if event.counted:
            first_seen[final(customer_id)] = min(
                first_seen.get(final(customer_id), NEVER), event.at
            )
    assert {cid: c.first_seen for cid, c in live.items() if c.first_seen != NEVER} == first_seen


# --- 6. a replayed batch changes nothing -----------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    rules=st.sampled_from([FREE, IdentityRules()]) | guarded_rules(),
    events=event_lists(CROWDED, 4).flatmap(with_repeats),
    cut_at=cuts,
)
def test_a_batch_stitched_again_with_its_sequence_numbers_changes_nothing(
    rules: IdentityRules, events: list[Event], cut_at: list[int]
) -> None:
    """As after a crash once the state was persisted but before the offset was committed:
    the batch again, with the same sequence numbers, leaves the persisted state as it was,
    counts nothing again and merges nothing."""
    store, seq = Store(), 0
    for batch in split(events, cut_at):
        run_batch(store, batch, rules, seq)
        before = store.snapshot()
        again = run_batch(store, batch, rules, seq)
        assert store.snapshot() == before
        assert again.merges == []
        for event, result in zip(batch, again.results, strict=True):
            assert result.customer_id in {store.nodes[node_key(*n)] for n in event.nodes()}
        seq += len(batch)


# --- 7. ids are stable --------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    rules=st.sampled_from([FREE, IdentityRules()]) | guarded_rules(),
    events=event_lists(CROWDED, 4),
    cut_at=cuts,
)
def test_a_customer_id_changes_only_when_its_customer_is_absorbed(
    rules: IdentityRules, events: list[Event], cut_at: list[int]
) -> None:
    """Across batches: a live customer keeps its id unless a merge record absorbs it; every
    identifier known before a batch points, after it, to its old customer or to where the
    merges of the batch led that customer; a new customer is named after one of its
    identifiers; a merge redirects the absorbed id and every id it had absorbed."""
    store, seq = Store(), 0
    redirected: dict[str, set[str]] = defaultdict(set)
    for batch in split(events, cut_at):
        nodes_before, live_before = dict(store.nodes), set(store.customers)
        merges = run_batch(store, batch, rules, seq).merges
        seq += len(batch)
        into: dict[str, str] = {}
        for m in merges:
            assert set(m.redirected) == {m.merged_from} | redirected[m.merged_from]
            assert len(m.redirected) == len(set(m.redirected))
            redirected[m.merged_into] |= set(m.redirected)
            into[m.merged_from] = m.merged_into

        def resolve(customer_id: str, into: dict[str, str] = into) -> str:
            while customer_id in into:
                customer_id = into[customer_id]
            return customer_id

        absorbed = set(into)
        assert live_before - absorbed <= set(store.customers)
        assert not absorbed & set(store.customers)
        for key, owner in nodes_before.items():
            assert store.nodes[key] == resolve(owner)
        for customer_id, customer in store.live().items():
            assert customer_id in {customer_id_for(k, v) for k, v in customer.nodes()}
            assert set(customer.absorbed) == redirected[customer_id]


# --- after a crash between the customer writes and the node writes ---------------------------


def crash_after_customers(
    store: Store, events: Sequence[Event], rules: IdentityRules, seq: int
) -> None:
    """Resolve ``events`` and persist only the live customers: the node writes and the
    deletions, which come after them, were cut short by a crash."""
    resolver = store.resolver(rules)
    for event in events:
        resolver.resolve(event.identifiers, event.event_id, event.at)
    live = {k: c for k, c in resolver.changes().identities.items() if c is not None}
    store.persist(Changes(nodes={}, identities=live))


def same_customers(store: Store, clean: Store) -> None:
    assert store.nodes == clean.nodes
    assert {c: x.identifiers for c, x in store.live().items()} == {
        c: x.identifiers for c, x in clean.live().items()
    }
    assert {c: (x.absorbed, x.first_seen) for c, x in store.live().items()} == {
        c: (x.absorbed, x.first_seen) for c, x in clean.live().items()
    }


@pytest.mark.parametrize("rules", [IdentityRules(), FREE], ids=["guards", "no guards"])
def test_a_replay_after_the_customers_but_not_the_nodes_were_written_changes_nothing(
    rules: IdentityRules,
) -> None:
    """The replay finds the identifiers unowned, though the customer written before the
    crash lists them: adding an identifier a customer owns is a no-op (module docstring),
    neither refused by its own guard nor listed twice."""
    event = Event("e1", {"account_id": "acc", "crm_id": "crm"}, 10)
    clean = Store()
    run_batch(clean, [event], rules, 0)
    store = Store()
    crash_after_customers(store, [event], rules, 0)
    again = run_batch(store, [event], rules, 0)
    assert again.refusals == []
    same_customers(store, clean)


def test_a_replay_finds_the_survivor_of_a_merge_whose_node_writes_were_lost() -> None:
    """Batch 2 merges the crm customer into the account's (seen earlier); the crash leaves
    the e-mail's node pointing at the absorbed customer. Replaying batch 2 must give what
    an uninterrupted run gives: the e-mail stays with the survivor, each event counted once."""
    rules = IdentityRules()
    first = [
        Event("e1", {"account_id": "acc"}, 10),
        Event("e2", {"crm_id": "crm", "email": "em"}, 20),
    ]
    second = [
        Event("e3", {"account_id": "acc", "crm_id": "crm"}, 30),
        Event("e4", {"email": "em"}, 40),
    ]
    clean = Store()
    run_batches(clean, [first, second], rules)
    store = Store()
    run_batch(store, first, rules, 0)
    crash_after_customers(store, second, rules, len(first))
    run_batch(store, second, rules, len(first))
    same_customers(store, clean)


def test_a_customer_left_behind_by_a_merge_cut_short_goes_with_its_survivor_on_erasure() -> None:
    """The crash came after the nodes but before the deletions: the absorbed customer
    stays in the table, though nothing points at it and the replay merges nothing; when
    the survivor is erased, no identifier of either may remain."""
    rules = IdentityRules()
    store = Store()
    run_batch(store, [Event("e1", {"device_id": "d"}, 10)], rules, 0)
    resolver = store.resolver(rules)
    resolver.resolve({"account_id": "acc", "device_id": "d"}, "e2", 20)
    changes = resolver.changes()
    absorbed = customer_id_for("device_id", "d")
    assert changes.identities[absorbed] is None
    live = {k: i for k, i in changes.identities.items() if i is not None}
    store.persist(Changes(nodes=changes.nodes, identities=live))
    assert absorbed in store.customers  # left behind
    again = run_batch(store, [Event("e2", {"account_id": "acc", "device_id": "d"}, 20)], rules, 1)
    assert again.merges == [] and absorbed in store.customers
    survivor = customer_id_for("account_id", "acc")
    assert absorbed not in store.nodes.values()
    resolver = store.resolver(rules)
    assert sorted(resolver.forget(survivor)) == [("account_id", "acc"), ("device_id", "d")]
    store.persist(resolver.changes())
    assert store.customers == {} and store.nodes == {}
