"""Behavioural effort: what each assisted contact cost the customer (pure).

A *contact* is an event on an assisted channel (CONTRACT section 1: a person of the
company is involved) that carries an ``interaction`` or a ``case_id``. Each contact
has these signals:

* ``repeat``: an earlier contact on the same ``case_id`` within 7 days before it;
* ``switch``: the previous contact on the same ``case_id`` was on another channel;
* ``transferred``, ``escalated`` (from ``interaction``, or an event of type ``transfer``);
* ``unresolved``: ``interaction.resolved`` is false;
* ``wait_seconds``: ``interaction.wait_seconds``.

"Earlier" and "previous" are by event time (ties by ``event_id``), so both signals
depend only on a contact's predecessor in its case. A contact that arrives late, before
others of its case in event time, changes at most one other contact: its successor.
:class:`CaseBook` keeps each case's contacts and returns, for every contact applied,
the effort rows to write: the contact's own and its successor's.

Effort points of a contact (0..100, integers so sums are exact):
10 for the contact, +20 repeat, +15 channel switch, +10 transfer, +15 escalation,
+15 unresolved, +1 per full minute of waiting (at most 15). The effort index of a
segment is the mean points per contact. A customer's is how hard their recent cases
were, not how many contacts they made: :func:`customer_effort_index` (computed by the
``customer_effort`` view in ClickHouse; this is its reference).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CUSTOMER_INDEX_HALF_LIFE_MS",
    "CUSTOMER_INDEX_WINDOW_MS",
    "DEFAULT_ASSISTED_CHANNELS",
    "WEIGHTS",
    "CaseBook",
    "CaseKey",
    "Contact",
    "EffortRules",
    "customer_effort_index",
    "points",
]

DEFAULT_ASSISTED_CHANNELS = frozenset({"call_center", "chat", "store", "support", "social"})

#: Points per signal (documented in the README; they add up to at most 100).
WEIGHTS = {
    "contact": 10,
    "repeat": 20,
    "switch": 15,
    "transferred": 10,
    "escalated": 15,
    "unresolved": 15,
    "wait_minute": 1,
    "wait_cap": 15,
}


@dataclass(frozen=True, slots=True)
class EffortRules:
    """Which events are contacts, and how far back a repeat looks."""

    assisted_channels: frozenset[str] = DEFAULT_ASSISTED_CHANNELS
    repeat_window_ms: int = 7 * 86_400_000
    max_contacts_per_case: int = 200


@dataclass(slots=True)
class Contact:
    """One contact as its case remembers it, with what its effort row says."""

    event_id: str
    at: int
    channel: str
    customer_id: str
    case_id: str | None
    stage: str
    context: dict[str, str]
    transferred: bool
    escalated: bool
    unresolved: bool
    wait_s: float
    repeat: bool = False
    switch: bool = False
    #: how many hand-overs (merges) brought it to the customer holding it: rows written
    #: for it after a hand-over rank above any its former partition writes
    gen: int = 0

    def to_json(self) -> list[Any]:
        return [
            self.event_id,
            self.at,
            self.channel,
            self.customer_id,
            self.stage,
            self.context,
            self.transferred,
            self.escalated,
            self.unresolved,
            self.wait_s,
            self.repeat,
            self.switch,
            self.gen,
        ]

    @classmethod
    def from_json(cls, case_id: str, value: list[Any]) -> Contact:
        (event_id, at, channel, customer_id, stage, context, tr, esc, unres, wait, rep, sw) = value[
            :12
        ]
        return cls(
            event_id,
            at,
            channel,
            customer_id,
            case_id,
            stage,
            context,
            tr,
            esc,
            unres,
            wait,
            rep,
            sw,
            value[12] if len(value) > 12 else 0,
        )

    @property
    def points(self) -> int:
        return points(self)


def points(c: Contact) -> int:
    """The contact's effort points (0..100)."""
    wait = min(WEIGHTS["wait_cap"], int(c.wait_s // 60) * WEIGHTS["wait_minute"])
    return (
        WEIGHTS["contact"]
        + WEIGHTS["repeat"] * c.repeat
        + WEIGHTS["switch"] * c.switch
        + WEIGHTS["transferred"] * c.transferred
        + WEIGHTS["escalated"] * c.escalated
        + WEIGHTS["unresolved"] * c.unresolved
        + wait
    )


#: The customer effort index looks at cases active in this window before now ...
CUSTOMER_INDEX_WINDOW_MS = 28 * 86_400_000
#: ... and a case's weight halves with every this much time since its latest contact.
CUSTOMER_INDEX_HALF_LIFE_MS = 7 * 86_400_000


def customer_effort_index(
    contacts: Iterable[tuple[str | None, str, int, int]],
    now_ms: int,
    *,
    window_ms: int = CUSTOMER_INDEX_WINDOW_MS,
    half_life_ms: int = CUSTOMER_INDEX_HALF_LIFE_MS,
) -> float | None:
    """A customer's effort index at ``now_ms``, 0..100, from their contacts given as
    ``(case_id, event_id, at_ms, points)``; None when no case is active.

    A case is the contacts of one ``case_id`` (a contact without one is a case of its
    own); it is active when its latest contact is in ``[now - window, now]``. Its effort
    is the sum of its contacts' points up to now, at most 100. The index is the mean of
    the active cases' efforts, each weighted by ``2 ** -(age / half_life)``, age the time
    from its latest contact to now: so a customer with one hard case and one with ten
    equally hard cases have the same index, and the newest cases count most. Every
    contact given counts (pass those known at ``now``; one stamped later than ``now``
    weighs a little more than 1). Unrounded (the view rounds to 0.1).
    """
    cases: dict[tuple[str, str], list[int]] = {}
    for case_id, event_id, at, pts in contacts:
        key = ("case", case_id) if case_id is not None else ("contact", event_id)
        held = cases.setdefault(key, [0, at])
        held[0] += pts
        held[1] = max(held[1], at)
    weighted = total = 0.0
    for effort, latest in cases.values():
        if latest < now_ms - window_ms:
            continue
        weight = 2.0 ** ((latest - now_ms) / half_life_ms)
        weighted += weight * min(100, effort)
        total += weight
    return weighted / total if total else None


def is_contact(
    channel: str, case_id: str | None, has_interaction: bool, rules: EffortRules
) -> bool:
    return channel in rules.assisted_channels and (has_interaction or case_id is not None)


CaseKey = tuple[str, str]
"""(customer_id, case_id): a case belongs to its customer."""


@dataclass
class CaseBook:
    """The contacts of the cases of one partition's customers, read through ``read``
    (the partition's store) and kept in memory for a batch; :meth:`changes` gives the
    cases to persist.

    A case belongs to its customer: the same ``case_id`` under two customers that are
    not (yet) one are two cases; when they merge, their contacts are combined
    (:meth:`absorb`) and every contact's signals recomputed against its new
    predecessor, exactly as if they had been one customer all along.
    """

    rules: EffortRules
    read: Callable[[str, str], list[Any] | None]
    cases: dict[CaseKey, list[Contact]] = field(default_factory=dict)
    dirty: set[CaseKey] = field(default_factory=set)

    def contacts(self, customer_id: str, case_id: str) -> list[Contact]:
        key = (customer_id, case_id)
        held = self.cases.get(key)
        if held is None:
            stored = self.read(customer_id, case_id) or []
            held = self.cases[key] = [Contact.from_json(case_id, v) for v in stored]
        return held

    def apply(self, owner: str, contact: Contact) -> list[tuple[Contact, int]]:
        """Add a contact to its case under ``owner`` (the customer that holds it now);
        the effort rows to write as ``(contact, points before)``: the contact itself
        (points before -1 when new) and its successor in the case, whose predecessor
        may have changed."""
        if contact.case_id is None:
            return [(contact, -1)]
        case = self.contacts(owner, contact.case_id)
        self.dirty.add((owner, contact.case_id))
        rank = (contact.at, contact.event_id)
        before = -1
        for i, held in enumerate(case):
            if held.event_id == contact.event_id:
                before = held.points
                del case[i]
                break
        index = 0
        while index < len(case) and (case[index].at, case[index].event_id) < rank:
            index += 1
        case.insert(index, contact)
        self._flags(case, index)
        out = [(contact, before)]
        if index + 1 < len(case):
            successor = case[index + 1]
            old = successor.points
            self._flags(case, index + 1)
            out.append((successor, old))
        self._bound(case)
        return out

    def absorb(
        self, owner: str, case_id: str, incoming: list[Contact]
    ) -> list[tuple[Contact, int]]:
        """Combine the contacts of a case handed over from a merged customer into the
        same case of ``owner``: the contacts whose signals changed, with their points
        before (the same contact in both is kept once). Which side came first does not
        matter: the result is the case's contacts in event-time order, flagged.

        The incoming contacts go one generation up (:attr:`Contact.gen`): the partition
        they came from may write their rows again (it replays a batch cut short), and
        those rows must not outrank the ones written from here."""
        for c in incoming:
            c.gen += 1
        case = self.contacts(owner, case_id)
        self.dirty.add((owner, case_id))
        before = {c.event_id: (c.repeat, c.switch, c.points) for c in case}
        before.update({c.event_id: (c.repeat, c.switch, c.points) for c in incoming})
        merged = {c.event_id: c for c in incoming}
        merged.update({c.event_id: c for c in case})
        case[:] = sorted(merged.values(), key=lambda c: (c.at, c.event_id))
        changed = []
        for i, contact in enumerate(case):
            self._flags(case, i)
            was = before[contact.event_id]
            if (contact.repeat, contact.switch) != was[:2]:
                changed.append((contact, was[2]))
        self._bound(case)
        return changed

    def take(self, customer_id: str, case_id: str) -> list[Contact]:
        """Remove a case of a customer (handed over, or erased) and return its contacts."""
        contacts = self.contacts(customer_id, case_id)
        self.cases[(customer_id, case_id)] = []
        self.dirty.add((customer_id, case_id))
        return contacts

    def _bound(self, case: list[Contact]) -> None:
        if len(case) > self.rules.max_contacts_per_case:
            del case[: len(case) - self.rules.max_contacts_per_case]

    def _flags(self, case: list[Contact], i: int) -> None:
        c = case[i]
        if i == 0:
            c.repeat = c.switch = False
            return
        previous = case[i - 1]
        c.repeat = c.at - previous.at <= self.rules.repeat_window_ms
        c.switch = previous.channel != c.channel

    def changes(self) -> Mapping[CaseKey, list[list[Any]]]:
        """The cases touched since the last call, as stored values (empty: removed)."""
        out = {key: [c.to_json() for c in self.cases[key]] for key in sorted(self.dirty)}
        self.dirty = set()
        return out
