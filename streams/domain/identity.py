"""Identity resolution: identifiers seen together belong to one customer, within guards.

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
time); the smaller id. The absorbed customer's identifiers point to the survivor and
the merge is reported; its journey is combined with the survivor's where journeys are
kept (``streams.domain.customers``, on the survivor's partition).

**What the resolver keeps** is only what those decisions need: each identifier's
customer (``n/<kind>:<value>``) and, per customer, its identifiers per kind, the ids it
absorbed and the event time it was first seen (:class:`Identity`, ``c/<id>``). Every
operation is idempotent: adding an identifier a customer owns, or merging a customer
it already absorbed, changes nothing; the earliest event time only moves back. So a
batch stitched again from the state before it decides exactly as it did the first
time, and a batch whose writes were cut short is repaired as it is replayed. Writes
keep every prefix replayable: live customers, then identifier nodes, then deleted
customers, so a node never points at a customer that is gone while its survivor's
pointers are unwritten. A prefix that ends before the deletions leaves the absorbed
customer behind, unreachable (no node points at it, the replay finds the merge done);
it is removed with its survivor on erasure (:meth:`Resolver.forget`).

This module is pure: it reads state through two functions and keeps its writes in an
overlay that the caller persists once per batch (:meth:`Resolver.changes`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.customer import Merge, Refusal

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_PRIORITY",
    "DEFAULT_UNIQUE_KINDS",
    "Changes",
    "Identity",
    "IdentityRules",
    "Resolved",
    "Resolver",
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
#: first_seen of a customer that has no counted event yet (ranks after every other)
NEVER = 2**62


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


@dataclass(slots=True)
class Identity:
    """A customer as the resolver knows it: identifiers, absorbed ids, first seen.

    ``identifiers`` maps kind to the values it owns, in the order they joined.
    ``absorbed`` lists every customer id merged into this one (directly or through an
    earlier merge). ``first_seen`` is the event time of its earliest counted event
    (:data:`NEVER` before any), which ranks survivors.
    """

    customer_id: str
    identifiers: dict[str, list[str]] = field(default_factory=dict)
    absorbed: list[str] = field(default_factory=list)
    first_seen: int = NEVER

    def count(self, kind: str) -> int:
        return len(self.identifiers.get(kind, ()))

    def has(self, kind: str, value: str) -> bool:
        return value in self.identifiers.get(kind, ())

    def nodes(self) -> list[tuple[str, str]]:
        """Every (kind, value) this customer owns."""
        return [(kind, value) for kind, values in self.identifiers.items() for value in values]

    def to_json(self) -> bytes:
        return orjson.dumps([self.identifiers, self.absorbed, self.first_seen])

    @classmethod
    def from_json(cls, customer_id: str, data: bytes | str) -> Identity:
        identifiers, absorbed, first_seen = orjson.loads(data)
        return cls(customer_id, identifiers, absorbed, first_seen)

    def snapshot(self) -> list[Any]:
        """What a customer's partition stores of its identity: identifiers and absorbed
        (copies: the resolver goes on changing its own)."""
        return [{k: list(v) for k, v in self.identifiers.items()}, list(self.absorbed)]


@dataclass(frozen=True, slots=True)
class Resolved:
    """The outcome for one event: its customer, what happened on the way, and the live
    customers whose identifiers or absorbed ids changed (their partitions are told)."""

    customer_id: str
    merges: tuple[Merge, ...]
    refusals: tuple[Refusal, ...]
    changed: tuple[str, ...]


@dataclass(slots=True)
class Changes:
    """Writes of one batch, coalesced: the last value of every key touched."""

    nodes: dict[str, str | None]
    identities: dict[str, Identity | None]


class Resolver:
    """Resolves the events of one batch against the state the two readers see.

    ``read_node(key)`` returns the customer id an identifier points to, or None;
    ``read_identity(id)`` returns the stored :class:`Identity`, or None. Reads are
    cached and writes kept in memory until :meth:`changes`, so a customer touched by
    many events of a batch is read once and written once.
    """

    def __init__(
        self,
        rules: IdentityRules,
        read_node: Callable[[str], str | None],
        read_identity: Callable[[str], Identity | None],
    ) -> None:
        self._rules = rules
        self._read_node = read_node
        self._read_identity = read_identity
        self._nodes: dict[str, str | None] = {}
        self._identities: dict[str, Identity | None] = {}
        self._dirty_nodes: set[str] = set()
        self._dirty: set[str] = set()
        self._changed: dict[str, None] = {}

    # -- reads through the overlay -------------------------------------------------

    def owner(self, kind: str, value: str) -> str | None:
        key = node_key(kind, value)
        if key in self._nodes:
            return self._nodes[key]
        owner = self._nodes[key] = self._read_node(key)
        return owner

    def identity(self, customer_id: str) -> Identity | None:
        if customer_id in self._identities:
            return self._identities[customer_id]
        found = self._identities[customer_id] = self._read_identity(customer_id)
        return found

    # -- one event ---------------------------------------------------------------------

    def resolve(
        self, identifiers: Mapping[str, str], event_id: str, at: int, *, count: bool = True
    ) -> Resolved:
        """Link the event's identifiers and return its customer.

        ``count=False`` links identifiers only, for an event the caller knows was
        already counted (a repeat of its ``event_id``): its time does not move the
        customer's first seen.
        """
        self._changed = {}
        known = self._known(identifiers)
        if known is not None:  # most events: every identifier is already this customer's
            if count and at < known.first_seen:
                known.first_seen = at
                self._dirty.add(known.customer_id)
            return Resolved(known.customer_id, (), (), ())
        merges: list[Merge] = []
        refusals: list[Refusal] = []
        current: Identity | None = None
        for kind, value in self._rules.order(identifiers):
            owner_id = self.owner(kind, value)
            if owner_id is not None and self.identity(owner_id) is None:
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
                            event_id, kind, value, current.customer_id, other.customer_id, reason
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
                    Refusal(event_id, kind, value, current.customer_id, owner.customer_id, reason)
                )
                continue
            survivor, absorbed = self._survivor(current, owner)
            merges.append(self._merge(survivor, absorbed, kind, event_id, at))
            current = survivor
        assert current is not None, "an accepted event has at least one identifier"
        if count and at < current.first_seen:
            current.first_seen = at
            self._dirty.add(current.customer_id)
        changed = tuple(c for c in self._changed if self._identities.get(c) is not None)
        return Resolved(current.customer_id, tuple(merges), tuple(refusals), changed)

    def _known(self, identifiers: Mapping[str, str]) -> Identity | None:
        """The customer that already owns every one of ``identifiers``, if one does."""
        found: str | None = None
        for kind, value in identifiers.items():
            owner_id = self.owner(kind, value)
            if owner_id is None or (found is not None and owner_id != found):
                return None
            found = owner_id
        identity = None if found is None else self.identity(found)
        if identity is None:
            return None
        for kind, value in identifiers.items():
            if not identity.has(kind, value):
                return None  # a replay cut short between writes: the full path repairs it
        return identity

    def changes(self) -> Changes:
        """The writes to persist, in the order to write them: the live customers, then the
        nodes, then the deletions (``None``, last in ``identities``), so a write cut short
        never leaves a node pointing at a deleted customer."""
        dirty = sorted(self._dirty)
        live = [k for k in dirty if self._identities[k] is not None]
        gone = [k for k in dirty if self._identities[k] is None]
        return Changes(
            nodes={k: self._nodes[k] for k in sorted(self._dirty_nodes)},
            identities={k: self._identities[k] for k in (*live, *gone)},
        )

    def forget(self, customer_id: str) -> list[tuple[str, str]]:
        """Remove a customer and its identifiers (erasure); return the identifiers removed."""
        identity = self.identity(customer_id)
        if identity is None:
            return []
        removed = identity.nodes()
        for kind, value in removed:
            key = node_key(kind, value)
            self._nodes[key] = None
            self._dirty_nodes.add(key)
        self._identities[customer_id] = None
        self._dirty.add(customer_id)
        for absorbed in identity.absorbed:
            # a merge whose writes a crash cut short before its deletions leaves the
            # absorbed customer behind (no identifier points at it): it goes too
            if self.identity(absorbed) is not None:
                self._identities[absorbed] = None
                self._dirty.add(absorbed)
        return removed

    # -- helpers -----------------------------------------------------------------------

    def _must(self, customer_id: str) -> Identity:
        identity = self.identity(customer_id)
        if identity is None:
            raise LookupError(f"identifier points to missing customer {customer_id}")
        return identity

    def _create(self, kind: str, value: str) -> Identity:
        customer_id = customer_id_for(kind, value)
        existing = self.identity(customer_id)  # a replay that persisted it already
        identity = existing if existing is not None else Identity(customer_id)
        self._identities[customer_id] = identity
        if not identity.has(kind, value):
            identity.identifiers.setdefault(kind, []).append(value)
            self._changed[customer_id] = None
        self._point(kind, value, customer_id)
        self._dirty.add(customer_id)
        return identity

    def _add(self, identity: Identity, kind: str, value: str) -> None:
        identity.identifiers.setdefault(kind, []).append(value)
        self._point(kind, value, identity.customer_id)
        self._dirty.add(identity.customer_id)
        self._changed[identity.customer_id] = None

    def _point(self, kind: str, value: str, customer_id: str) -> None:
        key = node_key(kind, value)
        if self._nodes.get(key) != customer_id:
            self._nodes[key] = customer_id
            self._dirty_nodes.add(key)

    def _refuse_add(self, identity: Identity, kind: str, value: str) -> str | None:
        count = identity.count(kind)
        if kind in self._rules.unique_kinds and count >= 1:
            return f"unique:{kind}"
        if count + 1 > self._rules.limit(kind):
            return f"limit:{kind}"
        return None

    def _refuse_merge(self, a: Identity, b: Identity) -> str | None:
        if b.customer_id in a.absorbed or a.customer_id in b.absorbed:
            return None  # a replay of a merge that was half-persisted
        for kind, _ in self._rules.order(dict.fromkeys({*a.identifiers, *b.identifiers}, "")):
            values = set(a.identifiers.get(kind, ())) | set(b.identifiers.get(kind, ()))
            if kind in self._rules.unique_kinds and len(values) > 1:
                return f"unique:{kind}"
            if len(values) > self._rules.limit(kind):
                return f"limit:{kind}"
        return None

    def _survivor(self, a: Identity, b: Identity) -> tuple[Identity, Identity]:
        def rank(c: Identity) -> tuple[bool, int, str]:
            anchored = any(c.count(kind) for kind in self._rules.unique_kinds)
            return (not anchored, c.first_seen, c.customer_id)

        if b.customer_id in a.absorbed:
            return a, b
        if a.customer_id in b.absorbed:
            return b, a
        return (a, b) if rank(a) <= rank(b) else (b, a)

    def _merge(
        self, survivor: Identity, absorbed: Identity, kind: str, event_id: str, at: int
    ) -> Merge:
        for node_kind, value in absorbed.nodes():
            if not survivor.has(node_kind, value):
                survivor.identifiers.setdefault(node_kind, []).append(value)
            self._point(node_kind, value, survivor.customer_id)
        redirected = (absorbed.customer_id, *absorbed.absorbed)
        for customer_id in redirected:
            if customer_id not in survivor.absorbed:
                survivor.absorbed.append(customer_id)
        survivor.first_seen = min(survivor.first_seen, absorbed.first_seen)
        self._identities[absorbed.customer_id] = None
        self._dirty.add(absorbed.customer_id)
        self._dirty.add(survivor.customer_id)
        self._changed[survivor.customer_id] = None
        self._changed.pop(absorbed.customer_id, None)
        return Merge(
            absorbed.customer_id,
            survivor.customer_id,
            f"shared_identifier:{kind}",
            event_id,
            at,
            redirected,
        )
