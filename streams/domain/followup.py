"""Closed-loop follow-up of detractor answers (pure).

Every detractor answer (NPS 0..6, CSAT or CES in the bottom box: the same rule as the
``customer.detractor`` alert) opens a *follow-up* for its customer, due a configurable
time later (48 hours of event time by default). It is closed by the customer's next
outbound interaction (``interaction.direction = "outbound"``, any channel: someone of
the company reached out) or by the resolution of a case one of its answers was about
(an event of that case with ``interaction.resolved = true``, or of type
``ticket_resolved`` / ``case_closed``). A newer detractor answer while one is open
extends it (due again from the newer answer) instead of opening a second. When its due
time passes with it still open, ``customer.followup_overdue`` fires, once.

**By event time, through the watermark.** The facts (detractor answers, outbound
contacts, resolutions) of a customer are kept *pending* until the resolver's progress
(``complete_to``: every event up to that time has been seen) passes them; then they are
folded in event-time order (ties by ``event_id``). The order in which the facts arrived
within the watermark does not matter, so a backlog read at once folds exactly what a
live stream folds, and the overdue alert of a follow-up fires when the progress passes
its due time, with the opening answer's ``event_id`` as its id. A fact that arrives
late (at or before the progress already folded) is folded on arrival.

A customer's state (:class:`FollowupState`) travels with the customer on a merge; two
states combine commutatively (:func:`combine`): pending facts are united, and of two
open follow-ups the earlier-opened one goes on (due at the later of the two, with both
answers), the other is closed as ``merged``.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.alert_rules import DetractorRule
from schemas.customer import Fact, FollowUp, FollowupState
from streams.domain.alerts import is_detractor

__all__ = [
    "DETRACTOR",
    "OUTBOUND",
    "RESOLUTION",
    "FollowUp",
    "FollowupIndex",
    "FollowupRules",
    "FollowupState",
    "Outcome",
    "add_fact",
    "combine",
    "fact",
    "fold",
    "next_at",
]

DETRACTOR, OUTBOUND, RESOLUTION = "d", "o", "r"

_AT, _ID, _KIND, _CHANNEL, _CASE, _QUEUE, _AGENT, _METRIC, _SCORE = range(9)


@dataclass(frozen=True, slots=True)
class FollowupRules:
    """What opens a follow-up, when it is due and what resolves a case."""

    due_ms: int = 48 * 3_600_000
    #: what a detractor answer is: the ``customer.detractor`` alert's rule
    detractor: DetractorRule = field(default_factory=DetractorRule)
    resolution_types: frozenset[str] = frozenset({"ticket_resolved", "case_closed"})


@dataclass(slots=True)
class Outcome:
    """What a fold changed: follow-ups whose row is to be written (by id, last wins), and
    those whose overdue alert fires now."""

    changed: dict[str, FollowUp] = field(default_factory=dict)
    overdue: list[FollowUp] = field(default_factory=list)

    def update(self, other: Outcome) -> None:
        self.changed.update(other.changed)
        self.overdue.extend(other.overdue)


class FollowupIndex:
    """The customers of a partition that need a fold, with the event time they need it
    at (:func:`next_at`), and the partition's progress (``until``) folded so far.

    Kept in the partition's state (one key per customer) so that a customer whose
    follow-up falls due is folded when the progress passes, with no event of its own.
    :attr:`dirty` lists the customers whose entry changed since the last :meth:`clear`.
    """

    def __init__(self, entries: Iterable[tuple[str, int]] = (), until: int = 0) -> None:
        self.at: dict[str, int] = dict(entries)
        self.until = until
        self._heap = [(at, customer_id) for customer_id, at in self.at.items()]
        heapq.heapify(self._heap)
        self.dirty: dict[str, None] = {}

    def set(self, customer_id: str, at: int | None) -> None:
        if self.at.get(customer_id) == at:
            return
        if at is None:
            self.at.pop(customer_id, None)
        else:
            self.at[customer_id] = at
            heapq.heappush(self._heap, (at, customer_id))
        self.dirty[customer_id] = None

    def due(self, until: int) -> list[str]:
        """The customers that need a fold at ``until`` (each once, earliest first); they
        leave the index until :meth:`set` puts them back."""
        heap, out = self._heap, []
        while heap and heap[0][0] <= until:
            at, customer_id = heapq.heappop(heap)
            if self.at.get(customer_id) == at:
                del self.at[customer_id]
                self.dirty[customer_id] = None
                out.append(customer_id)
        return out

    def clear(self) -> None:
        self.dirty = {}


def fact(
    event_id: str,
    at: int,
    channel: str,
    type_: str,
    case_id: str | None,
    direction: str | None,
    queue: str | None,
    agent: str | None,
    resolved: bool | None,
    metric: str | None,
    score: float | None,
    rules: FollowupRules,
) -> Fact | None:
    """The follow-up fact an event is, if any (a detractor answer, an outbound
    interaction, a case resolution)."""
    if metric is not None and score is not None and is_detractor(rules.detractor, metric, score):
        return [at, event_id, DETRACTOR, channel, case_id, None, None, metric, score]
    if direction == "outbound":
        return [at, event_id, OUTBOUND, channel, case_id, queue, agent, None, None]
    if case_id is not None and (resolved is True or type_ in rules.resolution_types):
        return [at, event_id, RESOLUTION, channel, case_id, queue, agent, None, None]
    return None


def add_fact(state: FollowupState, f: Fact, until: int, rules: FollowupRules) -> Outcome:
    """Take a fact of the customer: pending while the progress (``until``) has not passed
    it, folded at once when it has (it came late)."""
    if f[_AT] <= max(until, state.folded_to):
        out = Outcome()
        if state.open is not None and state.open.due_at < f[_AT]:
            _overdue(state.open, out)
        _apply(state, f, rules, out)
        return out
    if not any(p[_ID] == f[_ID] for p in state.pending):
        insort(state.pending, f, key=_rank)
    return Outcome()


def fold(state: FollowupState, until: int, rules: FollowupRules) -> Outcome:
    """Fold the pending facts up to ``until`` in event-time order, firing the overdue
    alert of an open follow-up whose due time passes on the way."""
    out = Outcome()
    if until <= state.folded_to and not _due(state, until):
        return out
    pending = state.pending
    taken = 0
    while taken < len(pending) and pending[taken][_AT] <= until:
        f = pending[taken]
        taken += 1
        if state.open is not None and state.open.due_at < f[_AT]:
            _overdue(state.open, out)
        _apply(state, f, rules, out)
    del pending[:taken]
    if _due(state, until):
        assert state.open is not None
        _overdue(state.open, out)
    state.folded_to = max(state.folded_to, until)
    return out


def next_at(state: FollowupState) -> int | None:
    """The event time at which the customer needs a fold: its first pending fact, or
    the due time of its open follow-up (until it fired); None when it needs none."""
    times = []
    if state.pending:
        times.append(state.pending[0][_AT])
    if state.open is not None and not state.open.overdue:
        times.append(state.open.due_at)
    return min(times) if times else None


def combine(into: FollowupState, other: FollowupState) -> Outcome:
    """Combine the state of a customer merged into ``into`` (in place); commutative.
    Of two open follow-ups the earlier opened goes on; the other closes as merged."""
    out = Outcome()
    seen = {p[_ID] for p in into.pending}
    for f in other.pending:
        if f[_ID] not in seen:
            insort(into.pending, f, key=_rank)
    into.folded_to = max(into.folded_to, other.folded_to)
    mine, theirs = into.open, other.open
    if theirs is None:
        return out
    if mine is None:
        into.open = theirs
        out.changed[theirs.id] = theirs
        return out
    first, second = sorted((mine, theirs), key=lambda f: (f.opened_at, f.id))
    kept = FollowUp(
        first.id,
        first.opened_at,
        max(first.due_at, second.due_at),
        first.channel,
        first.metric,
        first.score,
        first.answers + second.answers,
        sorted(set(first.cases) | set(second.cases)),
        first.overdue,
        gen=max(first.gen, second.gen),
    )
    gone = FollowUp(
        second.id,
        second.opened_at,
        second.due_at,
        second.channel,
        second.metric,
        second.score,
        second.answers,
        list(second.cases),
        second.overdue,
        "merged",
        closed_event_id=first.id,
        gen=max(first.gen, second.gen),
    )
    into.open = kept
    out.changed[kept.id] = kept
    out.changed[gone.id] = gone
    return out


# -- the state machine -------------------------------------------------------------------


def _rank(f: Sequence[Any]) -> tuple[int, str]:
    return (f[_AT], f[_ID])


def _due(state: FollowupState, until: int) -> bool:
    opened = state.open
    return opened is not None and not opened.overdue and opened.due_at <= until


def _overdue(opened: FollowUp, out: Outcome) -> None:
    if not opened.overdue:
        opened.overdue = True
        out.overdue.append(opened)
        out.changed[opened.id] = opened


def _apply(state: FollowupState, f: Fact, rules: FollowupRules, out: Outcome) -> None:
    kind, at = f[_KIND], f[_AT]
    opened = state.open
    if kind == DETRACTOR:
        if opened is None:
            opened = state.open = FollowUp(
                f[_ID], at, at + rules.due_ms, f[_CHANNEL], f[_METRIC], f[_SCORE]
            )
            if f[_CASE] is not None:
                opened.cases.append(f[_CASE])
        else:
            opened.answers += 1
            opened.due_at = max(opened.due_at, at + rules.due_ms)
            if f[_CASE] is not None and f[_CASE] not in opened.cases:
                opened.cases.append(f[_CASE])
        out.changed[opened.id] = opened
        return
    if opened is None or (at, f[_ID]) <= (opened.opened_at, opened.id):
        return  # nothing open, or it happened before the answer
    if kind == OUTBOUND:
        how = "contact"
    elif f[_CASE] in opened.cases:
        how = "resolution"
    else:
        return
    opened.how, opened.closed_at, opened.closed_event_id = how, at, f[_ID]
    opened.closed_channel, opened.closed_queue, opened.closed_agent = (
        f[_CHANNEL],
        f[_QUEUE],
        f[_AGENT],
    )
    out.changed[opened.id] = opened
    state.open = None
