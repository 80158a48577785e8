"""Identity stitching: identifiers seen together belong to one customer, within guards.

The graph: nodes are normalised identifiers ``(kind, value)``; an event is an edge
between every pair of identifiers it shows. A customer is a connected component,
except where a guard refuses a link:

* **limits**: a customer holds at most ``limit(kind)`` values of a kind (one
  ``account_id``, five e-mails, ten devices, ... configurable);
* **unique kinds** (``account_id``, ``crm_id`` by default): two customers holding
  different values of a unique kind never merge.

An event's identifiers are linked one by one in priority order (``account_id`` before
``email`` before ``device_id`` ...), so when a guard refuses, the identifiers that
matter most have already been linked. A refused identifier is not linked to the
event's customer: if it was known it stays with its own customer, if it was new it
starts a customer of its own. Every refusal is reported with its reason.

**Stable ids.** A new customer's id is derived from the identifier that created it
(:func:`customer_id_for`), so a replayed event re-creates the same id. An id changes
only when its customer merges into another. The survivor of a merge is, in order:
the customer that holds a unique-kind identifier; the one first seen earlier (event
time); the smaller id. The absorbed customer's journey is combined into the
survivor's, its identifiers point to the survivor, and the merge is reported.

**Idempotent replays.** Every event has a sequence number (the offset of the stitch
record that carried it; sequence numbers only grow). A customer stores the highest
sequence applied to it; an event replayed after a crash whose customer, as stored,
already holds that sequence is not applied to the journey again, while identity
operations (adding an identifier a customer owns, merging a customer it already
absorbed) are no-ops by construction. A crash may cut a batch's writes short; they are
made in an order that keeps every prefix replayable: live customers, then identifier
nodes, then deleted customers, so a node never points at a customer that is gone while
its survivor's pointers are unwritten, and an identifier its customer lists but whose
node is missing is simply pointed again.

This module is pure: it reads state through two functions and keeps its writes in an
overlay that the caller persists once per batch (:meth:`Stitcher.changes`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from schemas.customer import Customer, Merge, Refusal
from streams.domain.journey import JourneyRules, TouchFacts, apply, combine

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_PRIORITY",
    "DEFAULT_UNIQUE_KINDS",
    "Changes",
    "IdentityRules",
    "Stitched",
    "Stitcher",
    "customer_id_for",
    "node_key",
]

DEFAULT_LIMITS: dict[str, int] = {
    "account_id": 1,
    "crm_id": 1,
    "loyalty_id": 1,
    "email": 5,
    "phone": 5,
    "device_id": 10,
    "anonymous_id": 50,
}
DEFAULT_UNIQUE_KINDS: frozenset[str] = frozenset({"account_id", "crm_id"})
DEFAULT_PRIORITY: tuple[str, ...] = (
    "account_id",
    "crm_id",
    "loyalty_id",
    "email",
    "phone",
    "device_id",
    "anonymous_id",
)


def node_key(kind: str, value: str) -> str:
    """The key of an identifier node: ``kind:value``."""
    return f"{kind}:{value}"


def customer_id_for(kind: str, value: str) -> str:
    """The id of the customer an identifier creates: ``c_`` and 20 hex digits of BLAKE2b."""
    digest = hashlib.blake2b(node_key(kind, value).encode(), digest_size=10).hexdigest()
    return f"c_{digest}"


@dataclass(frozen=True, slots=True)
class IdentityRules:
    """The guards: per-kind limits, unique kinds, and the order identifiers are linked in."""

    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    default_limit: int = 10
    unique_kinds: frozenset[str] = DEFAULT_UNIQUE_KINDS
    priority: tuple[str, ...] = DEFAULT_PRIORITY

    def limit(self, kind: str) -> int:
        """Most values of ``kind`` one customer may hold (1 for a unique kind)."""
        if kind in self.unique_kinds:
            return 1
        return self.limits.get(kind, self.default_limit)

    _rank: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rank", {kind: i for i, kind in enumerate(self.priority)})

    def order(self, identifiers: Mapping[str, str]) -> list[tuple[str, str]]:
        """The event's identifiers in linking order: priority, then kind, then value."""
        rank, last = self._rank, len(self._rank)
        return sorted(identifiers.items(), key=lambda kv: (rank.get(kv[0], last), kv[0], kv[1]))


@dataclass(frozen=True, slots=True)
class Stitched:
    """The outcome for one event: its customer and what happened on the way."""

    customer_id: str
    merges: tuple[Merge, ...]
    refusals: tuple[Refusal, ...]
    applied: bool  # False when the journey already held this event (replayed batch)


@dataclass(slots=True)
class Changes:
    """Writes of one batch, coalesced: the last value of every key touched."""

    nodes: dict[str, str | None]
    customers: dict[str, Customer | None]


class Stitcher:
    """Stitches the events of one batch against the state the two readers see.

    ``read_node(key)`` returns the customer id an identifier points to, or None;
    ``read_customer(id)`` returns the stored customer, or None. Reads are cached and
    writes are kept in memory until :meth:`changes`, so a customer touched by many
    events of a batch is read once and written once.
    """

    def __init__(
        self,
        rules: IdentityRules,
        journey_rules: JourneyRules,
        read_node: Callable[[str], str | None],
        read_customer: Callable[[str], Customer | None],
        seq: int = 0,
    ) -> None:
        self._rules = rules
        self._journey_rules = journey_rules
        self._read_node = read_node
        self._read_customer = read_customer
        self._seq = seq
        self._nodes: dict[str, str | None] = {}
        self._customers: dict[str, Customer | None] = {}
        self._dirty_nodes: set[str] = set()
        self._dirty_customers: set[str] = set()
        #: the sequence each customer held as stored (what a replay may already contain)
        self._stored_seq: dict[str, int] = {}

    # -- reads through the overlay -------------------------------------------------

    def owner(self, kind: str, value: str) -> str | None:
        key = node_key(kind, value)
        if key in self._nodes:
            return self._nodes[key]
        owner = self._nodes[key] = self._read_node(key)
        return owner

    def customer(self, customer_id: str) -> Customer | None:
        if customer_id in self._customers:
            return self._customers[customer_id]
        found = self._customers[customer_id] = self._read_customer(customer_id)
        self._stored_seq[customer_id] = -1 if found is None else found.seq
        return found

    # -- the batch ---------------------------------------------------------------------

    def stitch(
        self,
        identifiers: Mapping[str, str],
        touch: TouchFacts,
        seq: int | None = None,
        *,
        count: bool = True,
    ) -> Stitched:
        """Link the event's identifiers, update the journey, return the event's customer.

        ``seq`` is the event's sequence number (default: the one given to the stitcher).
        ``count=False`` links identifiers only: for an event the caller knows was
        already counted (a repeat of its ``event_id``).
        """
        seq = self._seq if seq is None else seq
        merges: list[Merge] = []
        refusals: list[Refusal] = []
        current: Customer | None = None
        for kind, value in self._rules.order(identifiers):
            owner_id = self.owner(kind, value)
            if owner_id is not None and self.customer(owner_id) is None:
                owner_id = None  # a node left behind by a write cut short: repair it
            if owner_id is None:
                if current is None:
                    current = self._create(kind, value)
                    continue
                if current.has(kind, value):  # a replay whose node write was cut short
                    self._point(kind, value, current.customer_id)
                    continue
                reason = self._refuse_add(current, kind, value)
                if reason is None:
                    self._add(current, kind, value)
                else:
                    other = self._create(kind, value)
                    refusals.append(
                        Refusal(
                            touch.event_id,
                            kind,
                            value,
                            current.customer_id,
                            other.customer_id,
                            reason,
                        )
                    )
                continue
            owner = self._must(owner_id)
            if not owner.has(kind, value):  # a replay cut short between writes
                self._add(owner, kind, value)
            if current is None:
                current = owner
                continue
            if owner.customer_id == current.customer_id:
                continue
            reason = self._refuse_merge(current, owner)
            if reason is not None:
                refusals.append(
                    Refusal(
                        touch.event_id, kind, value, current.customer_id, owner.customer_id, reason
                    )
                )
                continue
            survivor, absorbed = self._survivor(current, owner)
            merges.append(self._merge(survivor, absorbed, kind, touch))
            current = survivor
        assert current is not None, "an accepted event has at least one identifier"
        applied = count and seq > self._stored_seq.get(current.customer_id, -1)
        if applied:
            apply(current.journey, touch, self._journey_rules)
            current.seq = max(current.seq, seq)
        self._touch(current)
        return Stitched(current.customer_id, tuple(merges), tuple(refusals), applied)

    def changes(self) -> Changes:
        """The writes to persist, in the order to write them: the live customers, then the
        nodes, then the deletions (``None``, last in ``customers``), so a write cut short
        never leaves a node pointing at a deleted customer (see the module docstring)."""
        dirty = sorted(self._dirty_customers)
        live = [k for k in dirty if self._customers[k] is not None]
        gone = [k for k in dirty if self._customers[k] is None]
        return Changes(
            nodes={k: self._nodes[k] for k in sorted(self._dirty_nodes)},
            customers={k: self._customers[k] for k in (*live, *gone)},
        )

    def forget(self, customer_id: str) -> list[tuple[str, str]]:
        """Remove a customer and its identifiers (erasure); return the identifiers removed."""
        customer = self.customer(customer_id)
        if customer is None:
            return []
        removed = customer.nodes()
        for kind, value in removed:
            key = node_key(kind, value)
            self._nodes[key] = None
            self._dirty_nodes.add(key)
        self._customers[customer_id] = None
        self._dirty_customers.add(customer_id)
        return removed

    def mark_dirty(self, customer: Customer) -> None:
        """Persist ``customer`` (changed by the caller) with this batch."""
        self._customers[customer.customer_id] = customer
        self._dirty_customers.add(customer.customer_id)

    def touched(self) -> Iterable[Customer]:
        """Customers written in this batch (not removed)."""
        for customer_id in sorted(self._dirty_customers):
            customer = self._customers[customer_id]
            if customer is not None:
                yield customer

    # -- helpers -----------------------------------------------------------------------

    def _must(self, customer_id: str) -> Customer:
        customer = self.customer(customer_id)
        if customer is None:
            raise LookupError(f"identifier points to missing customer {customer_id}")
        return customer

    def _create(self, kind: str, value: str) -> Customer:
        customer_id = customer_id_for(kind, value)
        existing = self.customer(customer_id)  # a replay that persisted it already
        customer = existing if existing is not None else Customer(customer_id)
        self._customers[customer_id] = customer
        if not customer.has(kind, value):
            customer.identifiers.setdefault(kind, []).append(value)
        self._point(kind, value, customer_id)
        self._touch(customer)
        return customer

    def _add(self, customer: Customer, kind: str, value: str) -> None:
        customer.identifiers.setdefault(kind, []).append(value)
        self._point(kind, value, customer.customer_id)
        self._touch(customer)

    def _point(self, kind: str, value: str, customer_id: str) -> None:
        key = node_key(kind, value)
        if self._nodes.get(key) != customer_id:
            self._nodes[key] = customer_id
            self._dirty_nodes.add(key)

    def _touch(self, customer: Customer) -> None:
        self._dirty_customers.add(customer.customer_id)

    def _refuse_add(self, customer: Customer, kind: str, value: str) -> str | None:
        count = customer.count(kind)
        if kind in self._rules.unique_kinds and count >= 1:
            return f"unique:{kind}"
        if count + 1 > self._rules.limit(kind):
            return f"limit:{kind}"
        return None

    def _refuse_merge(self, a: Customer, b: Customer) -> str | None:
        if b.customer_id in a.absorbed or a.customer_id in b.absorbed:
            return None  # a replay of a merge that was half-persisted
        for kind, _ in self._rules.order(dict.fromkeys({*a.identifiers, *b.identifiers}, "")):
            values = set(a.identifiers.get(kind, ())) | set(b.identifiers.get(kind, ()))
            if kind in self._rules.unique_kinds and len(values) > 1:
                return f"unique:{kind}"
            if len(values) > self._rules.limit(kind):
                return f"limit:{kind}"
        return None

    def _survivor(self, a: Customer, b: Customer) -> tuple[Customer, Customer]:
        def rank(c: Customer) -> tuple[bool, int, str]:
            anchored = any(c.count(kind) for kind in self._rules.unique_kinds)
            first = c.journey.first_seen or 2**62
            return (not anchored, first, c.customer_id)

        if b.customer_id in a.absorbed:
            return a, b
        if a.customer_id in b.absorbed:
            return b, a
        return (a, b) if rank(a) <= rank(b) else (b, a)

    def _merge(self, survivor: Customer, absorbed: Customer, kind: str, touch: TouchFacts) -> Merge:
        replay = absorbed.customer_id in survivor.absorbed
        for node_kind, value in absorbed.nodes():
            if not survivor.has(node_kind, value):
                survivor.identifiers.setdefault(node_kind, []).append(value)
            self._point(node_kind, value, survivor.customer_id)
        redirected = (absorbed.customer_id, *absorbed.absorbed)
        for customer_id in redirected:
            if customer_id not in survivor.absorbed:
                survivor.absorbed.append(customer_id)
        if not replay:
            combine(survivor.journey, absorbed.journey, self._journey_rules)
        survivor.seq = max(survivor.seq, absorbed.seq)
        # what either held as stored, the survivor now holds
        self._stored_seq[survivor.customer_id] = max(
            self._stored_seq.get(survivor.customer_id, -1),
            self._stored_seq.get(absorbed.customer_id, -1),
        )
        self._customers[absorbed.customer_id] = None
        self._dirty_customers.add(absorbed.customer_id)
        self._touch(survivor)
        return Merge(
            absorbed.customer_id,
            survivor.customer_id,
            f"shared_identifier:{kind}",
            touch.event_id,
            touch.at,
            redirected,
        )
