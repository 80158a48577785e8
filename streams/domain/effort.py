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
segment is the mean points per contact; a customer's is the sum of points over the last
28 days, capped at 100.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_ASSISTED_CHANNELS",
    "WEIGHTS",
    "CaseBook",
    "Contact",
    "EffortRules",
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
        ]

    @classmethod
    def from_json(cls, case_id: str, value: list[Any]) -> Contact:
        (event_id, at, channel, customer_id, stage, context, tr, esc, unres, wait, rep, sw) = value
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


def is_contact(
    channel: str, case_id: str | None, has_interaction: bool, rules: EffortRules
) -> bool:
    return channel in rules.assisted_channels and (has_interaction or case_id is not None)


@dataclass
class CaseBook:
    """The contacts of every case, read through ``read`` (the identity table) and kept
    in memory for a batch; :attr:`dirty` lists the cases to persist."""

    rules: EffortRules
    read: Callable[[str], list[Any] | None]
    cases: dict[str, list[Contact]] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

    def contacts(self, case_id: str) -> list[Contact]:
        held = self.cases.get(case_id)
        if held is None:
            stored = self.read(case_id) or []
            held = self.cases[case_id] = [Contact.from_json(case_id, v) for v in stored]
        return held

    def apply(self, contact: Contact) -> list[tuple[Contact, int]]:
        """Add (or, on a replay, refresh) a contact; the effort rows to write as
        ``(contact, points before)``: the contact itself (points before -1 when new) and
        its successor in the case, whose predecessor may have changed."""
        if contact.case_id is None:
            return [(contact, -1)]
        case = self.contacts(contact.case_id)
        self.dirty.add(contact.case_id)
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
        if len(case) > self.rules.max_contacts_per_case:
            del case[: len(case) - self.rules.max_contacts_per_case]
        return out

    def _flags(self, case: list[Contact], i: int) -> None:
        c = case[i]
        if i == 0:
            c.repeat = c.switch = False
            return
        previous = case[i - 1]
        c.repeat = c.at - previous.at <= self.rules.repeat_window_ms
        c.switch = previous.channel != c.channel

    def changes(self) -> Mapping[str, list[list[Any]]]:
        """The cases touched since the last call, as stored values."""
        out = {case_id: [c.to_json() for c in self.cases[case_id]] for case_id in self.dirty}
        self.dirty = set()
        return out
