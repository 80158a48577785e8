"""One customer partition's batch: routed items in, journeys, cases, scores and rows out (pure).

The resolver (``streams.domain.resolve``) sends every event, tagged with its customer
id, to the customers-topic partition that holds the customer. Everything per customer
happens here, and any number of workers share the partitions: the journey (counts,
stage, open and closed cases, answers), the contacts of each case with their effort
signals, the score tallies of the answers, the detractor and effort-spike alerts, and
the ClickHouse rows (``events`` with the customer and journey stage, ``customer_360``,
``effort``, ``scores``).

**Idempotence.** Items from the resolver carry a sequence number that grows along the
resolve topic (:func:`streams.domain.resolve.seq_of`). A partition remembers the highest
it applied (its *high-water mark*, stored with its state) and skips any item at or
below it: the resolver sends the same items, with the same numbers, when it resolves
records again after a restart. A batch's state may also be persisted only in part (a
crash between its changelog record batches) with the mark left behind: each customer
keeps the sequence number of the last event applied to it, and the order of
:func:`state_writes` keeps every prefix replayable.

**Merges cross partitions.** When customer A merges into S, the resolver sends A's
partition a merge item after every event it routed to A. A's partition then hands A
over: A's journey, cases and the customers A had absorbed go, as one *hand-over* item,
to S's partition, and A is replaced by a marker (``gone``: into S, at the merge's
sequence number). S's partition combines what it receives with S
(:func:`streams.domain.journey.combine`, :meth:`CaseBook.absorb`); both are commutative
and associative, so S's own events may come before or after the hand-over. A hand-over
names the merge it comes from, and S remembers the merges it combined
(``Customer.merged_in``): a hand-over sent twice is combined once. One that reaches a
customer that has itself merged on meanwhile follows the marker to the survivor.

What does depend on that order: the journey stage an event of S is tagged with (its
``events`` row, the ``journey_stage`` segment of its answer, its contact's stage) is
S's stage when its partition applied it, with or without A's journey; and an open
case's first contact, count and channels where a close falls between its contacts
(``streams.domain.journey``). Everything else (counts, stage, answers, cases and their
signals, effort rows, score tallies) is the same as one process gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from schemas.clickhouse import EVENT_COLUMN, INTERACTION_COLUMNS
from schemas.customer import (
    Customer,
    FollowUp,
    FollowupState,
    customer_from_json,
    customer_to_json,
)
from sinks.rows import customer_row, deleted_customer_row
from streams.domain import followup
from streams.domain.effort import CaseBook, Contact, EffortRules, is_contact
from streams.domain.followup import FollowupIndex, FollowupRules
from streams.domain.journey import JourneyRules, TouchFacts, apply, combine
from streams.domain.resolve import FLAG_LATE, partition_of
from streams.domain.risk import (
    AtRisk,
    RiskRules,
    add_contacts,
    combine_behaviour,
    note_case,
    open_case_stats,
    rescore,
)
from streams.domain.scores import Answer, Key, Tally, bucket_of, segments_of, tally_answers

__all__ = [
    "CustomerBook",
    "Handover",
    "PartitionOutput",
    "PartitionRules",
    "ScoreRules",
    "process_records",
    "state_writes",
    "touch_of",
]

_COLUMN = EVENT_COLUMN
_EVENT_ID, _OCCURRED_AT = _COLUMN["event_id"], _COLUMN["occurred_at"]
_CHANNEL, _TYPE, _CASE = _COLUMN["channel"], _COLUMN["type"], _COLUMN["case_id"]
_RESOLVED, _CUSTOMER = _COLUMN["resolved"], _COLUMN["customer_id"]
_METRIC, _SCORE = _COLUMN["survey_metric"], _COLUMN["survey_score"]
_SCALE = _COLUMN["survey_scale_max"]
_CONTEXT, _FLAGS, _STAGE = _COLUMN["context"], _COLUMN["flags"], _COLUMN["journey_stage"]
_INTERACTION = tuple(_COLUMN[c] for c in INTERACTION_COLUMNS)
_WAIT, _TRANSFERRED, _ESCALATED = (
    _COLUMN["wait_seconds"],
    _COLUMN["transferred"],
    _COLUMN["escalated"],
)
_DIRECTION, _QUEUE, _AGENT = (
    _COLUMN["interaction_direction"],
    _COLUMN["interaction_queue"],
    _COLUMN["interaction_agent_id"],
)
#: A hand-over follows at most this many merges on (a chain longer than any real one).
MAX_HOPS = 64


@dataclass(frozen=True, slots=True)
class ScoreRules:
    """How answers become score tallies: bucket width and segment dimensions."""

    bucket_ms: int = 60_000
    dimensions: tuple[str, ...] = ("region", "product", "segment")


@dataclass(frozen=True, slots=True)
class PartitionRules:
    """Everything a customer partition decides by: journeys, effort, scores, and how
    many partitions the customers topic has (where a hand-over goes)."""

    journey: JourneyRules = field(default_factory=JourneyRules)
    effort: EffortRules = field(default_factory=EffortRules)
    scores: ScoreRules = field(default_factory=ScoreRules)
    partitions: int = 1
    #: case ids kept per customer (the oldest case's contacts go beyond it)
    max_cases: int = 100
    #: the detractor model and at-risk threshold (None: customers are not scored)
    risk: RiskRules | None = None
    followup: FollowupRules = field(default_factory=FollowupRules)


def touch_of(row: Sequence[Any]) -> TouchFacts:
    """What the journey needs from an ``events_store`` row."""
    return TouchFacts(
        event_id=row[_EVENT_ID],
        at=row[_OCCURRED_AT],
        channel=row[_CHANNEL],
        type=row[_TYPE],
        case_id=row[_CASE],
        resolved=row[_RESOLVED],
        survey_metric=row[_METRIC],
        survey_score=row[_SCORE],
        survey_scale_max=row[_SCALE],
    )


@dataclass(frozen=True, slots=True)
class Handover:
    """Customer ``source`` (merged at ``seq`` into ``into``) with its whole state, on its
    way to the partition of ``into``; ``version`` is the row version its partition had
    reached (the survivor's rows of its contacts must come after), ``hops`` how many
    markers it followed."""

    source: str
    into: str
    seq: int
    customer: Customer
    cases: dict[str, list[Contact]]
    version: int
    hops: int = 0

    def to_item(self) -> list[Any]:
        return [
            "h",
            self.source,
            self.into,
            self.seq,
            customer_to_json(self.customer).decode(),
            {case_id: [c.to_json() for c in cs] for case_id, cs in self.cases.items()},
            self.version,
            self.hops,
        ]

    @classmethod
    def from_item(cls, item: Sequence[Any]) -> Handover:
        _h, source, into, seq, customer, cases, version, hops = item
        return cls(
            source,
            into,
            seq,
            customer_from_json(customer),
            {case_id: [Contact.from_json(case_id, v) for v in cs] for case_id, cs in cases.items()},
            version,
            hops,
        )


#: A ``gone`` marker: the customer it went into ("" when erased), the sequence number
#: of the merge or erasure, and the ids of the cases it took along (their removal is
#: repeated when the item comes again over a state persisted in part).
Gone = tuple[str, int, list[str]]


class CustomerBook:
    """The partition's customers and gone markers, read through two functions and kept
    in memory for a batch; :meth:`changes` gives the writes."""

    def __init__(
        self,
        read_customer: Callable[[str], Customer | None],
        read_gone: Callable[[str], Gone | None],
    ) -> None:
        self._read_customer = read_customer
        self._read_gone = read_gone
        self.customers: dict[str, Customer | None] = {}
        self.gone_markers: dict[str, Gone | None] = {}
        self.dirty: dict[str, None] = {}
        self.dirty_gone: dict[str, None] = {}

    def customer(self, customer_id: str) -> Customer | None:
        if customer_id in self.customers:
            return self.customers[customer_id]
        found = self.customers[customer_id] = self._read_customer(customer_id)
        return found

    def gone(self, customer_id: str) -> Gone | None:
        if customer_id in self.gone_markers:
            return self.gone_markers[customer_id]
        found = self._read_gone(customer_id)
        if found is not None and len(found) < 3:  # written without its cases
            found = (found[0], found[1], [])
        self.gone_markers[customer_id] = found
        return found

    def left_after(self, customer_id: str, seq: int) -> bool:
        """True when the customer was handed over or erased by an item after ``seq``:
        an item at ``seq`` for it comes again from a batch whose state was persisted in
        part, and was applied before the customer left."""
        if self.customer(customer_id) is not None:
            return False
        marker = self.gone(customer_id)
        return marker is not None and marker[1] > seq

    def live(self, customer_id: str, seq: int) -> Customer:
        """The customer, created if new; a gone marker is lifted (the id was created
        again after an erasure: callers check :meth:`left_after` first)."""
        customer = self.customer(customer_id)
        if customer is None:
            if self.gone(customer_id) is not None:
                self.set_gone(customer_id, None)
            customer = self.customers[customer_id] = Customer(customer_id)
        self.dirty[customer_id] = None
        return customer

    def remove(self, customer_id: str, marker: Gone) -> None:
        self.customers[customer_id] = None
        self.dirty[customer_id] = None
        self.set_gone(customer_id, marker)

    def set_gone(self, customer_id: str, marker: Gone | None) -> None:
        self.gone_markers[customer_id] = marker
        self.dirty_gone[customer_id] = None


@dataclass
class PartitionOutput:
    """What one batch of a customer partition produced (the caller persists it)."""

    #: rows per ``*_store`` table
    rows: dict[str, list[Any]] = field(default_factory=dict)
    #: items for other partitions (hand-overs): (partition, item)
    handovers: list[tuple[int, list[Any]]] = field(default_factory=list)
    #: per record with anything for the rolling view: (offset, tallies); the batch's
    #: last record always (with no tallies when it has none), so the detector, which
    #: adds each partition's records after the last one it added, takes a batch whole
    #: or not at all: a batch done again over a state persisted in part may put the
    #: same changes in other records
    tallies: list[tuple[int, dict[Key, Tally]]] = field(default_factory=list)
    #: every answer applied (late ones too), with its customer, for the detractor alerts
    answers: list[Answer] = field(default_factory=list)
    #: (customer, case) of every contact with an effort row, and the segments of the
    #: case's newest such contact, for the effort-spike alerts
    cases: dict[tuple[str, str], tuple[tuple[str, str], ...]] = field(default_factory=dict)
    #: customers whose detractor risk crossed the at-risk threshold
    at_risk: list[AtRisk] = field(default_factory=list)
    #: erasure requests applied (the caller deletes the customers' rows)
    erasures: list[dict[str, Any]] = field(default_factory=list)
    #: follow-ups whose due time passed with them open: (customer, the follow-up as it
    #: was then), for the ``customer.followup_overdue`` alerts
    overdue: list[tuple[str, FollowUp]] = field(default_factory=list)
    #: the resolver's progress (event time complete up to), as of the last record
    complete_to: int | None = None
    applied: int = 0
    replayed: int = 0
    late: int = 0
    handed_over: int = 0
    combined: int = 0
    forwarded: int = 0
    compacted: int = 0


def process_records(
    records: Sequence[tuple[int, Sequence[Any]]],
    book: CustomerBook,
    cases: CaseBook,
    rules: PartitionRules,
    hwm: int,
    version: int,
    now_ms: int,
    compact: Callable[[CustomerBook, int], int] | None = None,
    followups: FollowupIndex | None = None,
) -> tuple[PartitionOutput, int]:
    """Apply consecutive records ``(offset, [complete_to, items])`` of one customers
    partition; return the output and the new high-water mark.

    ``version`` is the version of every row written (``customer_360``, ``effort``); it
    must be above any earlier batch's of this partition and any hand-over's (the caller
    takes :func:`batch_version`). ``compact`` compacts a slice of idle customers when a
    compaction request (``["c"]``) comes along. ``followups`` is the partition's index
    of customers with follow-up work (:mod:`streams.domain.followup`): the facts of a
    record's events are taken first, then the record's progress folds them.
    """
    out = PartitionOutput()
    index = FollowupIndex() if followups is None else followups
    loop = _Loop(index, rules.followup)
    score = rules.scores
    events: list[list[Any]] = []
    scores: list[tuple[Any, ...]] = []
    effort_rows: dict[str, tuple[Any, ...]] = {}
    touched: list[tuple[str, Contact]] = []
    for offset, (complete_to, items) in records:
        if complete_to is not None:
            out.complete_to = complete_to
        on_time: list[Answer] = []
        answers: list[Answer] = []
        effort_view: dict[Key, Tally] = {}
        first_event: str | None = None
        for item in items:
            kind = item[0]
            if kind == "c":
                if compact is not None:
                    out.compacted += compact(book, now_ms)
                continue
            if kind == "h":
                handover = Handover.from_item(item)
                received = _receive(handover, book, cases, rules, out, loop)
                for owner, changed, before in received:
                    effort_rows[changed.event_id] = _effort_row(changed, version)
                    touched.append((owner, changed))
                    _add_effort(effort_view, changed, before, score)
                continue
            seq = item[1]
            if seq <= hwm:
                out.replayed += kind == "e"
                continue
            hwm = seq
            if kind == "e":
                row, snapshot = item[2], item[3]
                touch = touch_of(row)
                customer_id = row[_CUSTOMER]
                # held already (the state of a batch cut short was persisted in part):
                # not applied again; its events row stands (rows are stored before any
                # state), its answer goes into the record's score row again, which
                # replaces the one written then
                customer = (
                    None if book.left_after(customer_id, seq) else book.live(customer_id, seq)
                )
                if customer is not None and snapshot is not None:
                    customer.identifiers, customer.absorbed = snapshot
                applied = customer is not None and seq > customer.seq
                if customer is not None and applied:
                    apply(customer.journey, touch, rules.journey)
                    customer.seq = seq
                    out.applied += 1
                    events.append(row)
                    loop.take(customer, row)
                else:
                    out.replayed += 1
                stage = row[_STAGE] if customer is None else customer.journey.stage
                row[_STAGE] = stage
                if first_event is None:
                    first_event = touch.event_id
                late = FLAG_LATE in row[_FLAGS]
                out.late += late
                if touch.survey_metric is not None and touch.survey_score is not None:
                    answer = Answer(
                        touch.at,
                        touch.survey_metric,
                        touch.survey_score,
                        touch.survey_scale_max,
                        segments_of(touch.channel, stage, row[_CONTEXT], score.dimensions),
                        touch.event_id,
                        customer_id,
                        touch.channel,
                    )
                    answers.append(answer)
                    if not late:
                        on_time.append(answer)
                if customer is not None and is_contact(
                    touch.channel,
                    touch.case_id,
                    any(row[i] is not None for i in _INTERACTION),
                    rules.effort,
                ):
                    contact = _contact(row, customer.customer_id, stage, score)
                    if contact.case_id is not None:
                        _keep_case(customer, contact.case_id, cases, rules)
                    applied_contacts = cases.apply(customer.customer_id, contact)
                    if applied:
                        add_contacts(customer.behaviour, applied_contacts, contact.event_id)
                    if contact.case_id is not None:
                        note_case(
                            customer.behaviour,
                            contact.case_id,
                            cases.contacts(customer.customer_id, contact.case_id),
                        )
                    for changed, before in applied_contacts:
                        effort_rows[changed.event_id] = _effort_row(changed, version)
                        touched.append((customer.customer_id, changed))
                        if late and changed is contact:
                            continue  # late: out of the rolling view
                        _add_effort(effort_view, changed, before, score)
                if customer is not None and applied and rules.risk is not None:
                    out.at_risk += rescore(
                        customer, rules.risk, touch.event_id, open_case_stats(customer)
                    )
            elif kind == "i":
                if not book.left_after(item[2], seq):
                    customer = book.live(item[2], seq)
                    customer.identifiers, customer.absorbed = item[3]
            elif kind == "m":
                if not book.left_after(item[2], seq - 1):
                    _hand_over(item[2], item[3], seq, book, cases, rules, out, version)
                    index.set(item[2], None)
                else:  # handed over already (its state persisted in part): the cases go
                    marker = book.gone(item[2])
                    assert marker is not None
                    for case_id in marker[2]:
                        cases.take(item[2], case_id)
            elif kind == "x":
                _erase(item[2], seq, book, cases, out)
                index.set(item[2]["customer_id"], None)
        if complete_to is not None:
            loop.progress(complete_to, book, out)
        tallies = tally_answers(on_time, score.bucket_ms)
        tallies.update(effort_view)
        if tallies:
            out.tallies.append((offset, tallies))
        if answers:
            assert first_event is not None
            scores.append(_score_row(offset, first_event, now_ms, answers, score))
            out.answers.extend(answers)
    if records and (not out.tallies or out.tallies[-1][0] != records[-1][0]):
        out.tallies.append((records[-1][0], {}))
    out.cases = _touched_cases(touched, score.dimensions)
    customers = []
    for customer_id in book.dirty:
        held = book.customers[customer_id]
        if held is None:
            customers.append(deleted_customer_row(customer_id, version, now_ms))
        else:
            if held.risk is None and rules.risk is not None:  # new, or stored unscored
                rescore(held, rules.risk, None, open_case_stats(held))
            customers.append(customer_row(held, version, now_ms))
    out.rows = {
        "events_store": events,
        "customer_360_store": customers,
        "scores_store": scores,
        "effort_store": list(effort_rows.values()),
        "followups_store": [
            followup_row(owner, f, version, now_ms) for owner, f in loop.changed.values()
        ],
    }
    return out, hwm


def batch_version(records: Iterable[tuple[int, Sequence[Any]]], previous: int, now_ms: int) -> int:
    """The row version of a batch: above the partition's previous one and above every
    hand-over's in it; the wall clock where that is higher (readable, and a new owner
    with a clock behind continues above its predecessor's)."""
    version = max(now_ms, previous + 1)
    for _offset, (_complete_to, items) in records:
        for item in items:
            if item[0] == "h":
                version = max(version, item[6] + 1)
    return version


# -- merges ------------------------------------------------------------------------------


def _hand_over(
    source: str,
    into: str,
    seq: int,
    book: CustomerBook,
    cases: CaseBook,
    rules: PartitionRules,
    out: PartitionOutput,
    version: int,
) -> None:
    """Customer ``source`` merged into ``into``: send its state to ``into``'s partition."""
    customer = book.customer(source) or Customer(source)
    taken = {case_id: cases.take(source, case_id) for case_id in customer.cases}
    handover = Handover(source, into, seq, customer, taken, version)
    out.handovers.append((partition_of(into, rules.partitions), handover.to_item()))
    book.remove(source, (into, seq, list(taken)))
    out.handed_over += 1


def _receive(
    handover: Handover,
    book: CustomerBook,
    cases: CaseBook,
    rules: PartitionRules,
    out: PartitionOutput,
    loop: _Loop,
) -> list[tuple[str, Contact, int]]:
    """Combine a handed-over customer into its survivor, or pass it on; return the
    contacts whose signals changed (with their customer now and points before)."""
    into = handover.into
    if book.customer(into) is None:
        marker = book.gone(into)
        if marker is not None and handover.seq < marker[1]:
            survivor = marker[0]
            if survivor and handover.hops < MAX_HOPS:  # merged on meanwhile: follow it
                moved = Handover(
                    handover.source,
                    survivor,
                    handover.seq,
                    handover.customer,
                    handover.cases,
                    handover.version,
                    handover.hops + 1,
                )
                out.handovers.append((partition_of(survivor, rules.partitions), moved.to_item()))
                out.forwarded += 1
            return []  # erased after the merge: nothing of it is kept
    survivor_customer = book.live(into, handover.seq)
    if handover.source in survivor_customer.merged_in:
        return []  # combined before (the hand-over was sent again)
    source = handover.customer
    combine(survivor_customer.journey, source.journey, rules.journey)
    combine_behaviour(survivor_customer.behaviour, source.behaviour)
    survivor_customer.merged_in[handover.source] = handover.seq
    loop.combine(survivor_customer, source.followup)
    for absorbed, seq in source.merged_in.items():
        survivor_customer.merged_in.setdefault(absorbed, seq)
    changed = []
    for case_id, contacts in handover.cases.items():
        if not contacts:
            continue
        _keep_case(survivor_customer, case_id, cases, rules)
        recomputed = cases.absorb(into, case_id, contacts)
        note_case(survivor_customer.behaviour, case_id, cases.contacts(into, case_id))
        changed += [(into, c, before) for c, before in recomputed]
    out.combined += 1
    if rules.risk is not None:
        out.at_risk += rescore(
            survivor_customer,
            rules.risk,
            f"merge:{handover.source}",
            open_case_stats(survivor_customer),
        )
    return changed


def _erase(
    request: dict[str, Any], seq: int, book: CustomerBook, cases: CaseBook, out: PartitionOutput
) -> None:
    customer_id = request["customer_id"]
    customer = book.customer(customer_id)
    taken = [] if customer is None else list(customer.cases)
    for case_id in taken:
        cases.take(customer_id, case_id)
    marker = book.gone(customer_id)
    if customer is None and marker is not None and marker[1] >= seq:
        taken = marker[2]  # erased before (a replay): its cases go again
        for case_id in taken:
            cases.take(customer_id, case_id)
    book.remove(customer_id, ("", seq, taken))
    out.erasures.append(request)


def _keep_case(customer: Customer, case_id: str, cases: CaseBook, rules: PartitionRules) -> None:
    """Note a case of the customer (newest last); beyond ``max_cases`` the oldest goes."""
    held = customer.cases
    if case_id in held:
        if held[-1] != case_id:
            held.remove(case_id)
            held.append(case_id)
        return
    held.append(case_id)
    while len(held) > rules.max_cases:
        cases.take(customer.customer_id, held.pop(0))


# -- follow-ups --------------------------------------------------------------------------


class _Loop:
    """A batch's follow-up work: facts taken, progress folded, rows and alerts noted."""

    def __init__(self, index: FollowupIndex, rules: FollowupRules) -> None:
        self.index = index
        self.rules = rules
        #: follow-up id -> (customer holding it, the follow-up): rows to write
        self.changed: dict[str, tuple[str, FollowUp]] = {}

    def take(self, customer: Customer, row: Sequence[Any]) -> None:
        """The follow-up fact of an event applied to ``customer``, if it is one."""
        fact = followup.fact(
            row[_EVENT_ID],
            row[_OCCURRED_AT],
            row[_CHANNEL],
            row[_TYPE],
            row[_CASE],
            row[_DIRECTION],
            row[_QUEUE],
            row[_AGENT],
            row[_RESOLVED],
            row[_METRIC],
            row[_SCORE],
            self.rules,
        )
        if fact is None:
            return
        state = customer.followup
        if state is None:
            state = customer.followup = FollowupState(folded_to=self.index.until)
        self._note(customer, followup.add_fact(state, fact, self.index.until, self.rules), None)

    def progress(self, until: int, book: CustomerBook, out: PartitionOutput) -> None:
        """The resolver's progress reached ``until``: fold every customer it passes."""
        index = self.index
        if until <= index.until:
            return
        index.until = until
        for customer_id in index.due(until):
            customer = book.customer(customer_id)
            if customer is None or customer.followup is None:
                continue
            book.dirty[customer_id] = None
            self._note(customer, followup.fold(customer.followup, until, self.rules), out)

    def combine(self, survivor: Customer, incoming: FollowupState | None) -> None:
        """A merged customer's follow-up state joins the survivor's."""
        if incoming is None:
            return
        if incoming.open is not None:
            incoming.open.gen += 1  # rows written from here outrank the former partition's
        state = survivor.followup
        if state is None:
            state = survivor.followup = FollowupState(folded_to=self.index.until)
        self._note(survivor, followup.combine(state, incoming), None)

    def _note(
        self, customer: Customer, outcome: followup.Outcome, out: PartitionOutput | None
    ) -> None:
        customer_id = customer.customer_id
        for f in outcome.changed.values():
            self.changed[f.id] = (customer_id, f)
        if out is not None:
            out.overdue += [(customer_id, replace(f)) for f in outcome.overdue]
        state = customer.followup
        assert state is not None
        self.index.set(customer_id, followup.next_at(state))


def followup_row(customer_id: str, f: FollowUp, version: int, now_ms: int) -> tuple[Any, ...]:
    """The ``followups_store`` row of a follow-up (``FOLLOWUP_COLUMNS`` order); its version
    is the follow-up's generation above the batch's (see :func:`_effort_row`)."""
    return (
        f.id,
        customer_id,
        f.opened_at,
        f.due_at,
        f.channel,
        f.metric,
        f.score,
        f.answers,
        f.cases,
        f.how,
        f.closed_at,
        f.closed_event_id,
        f.closed_channel,
        f.closed_queue,
        f.closed_agent,
        int(f.overdue),
        now_ms,
        (f.gen << GEN_SHIFT) | version,
    )


# -- rows --------------------------------------------------------------------------------


def _contact(row: Sequence[Any], customer_id: str, stage: str, rules: ScoreRules) -> Contact:
    context = row[_CONTEXT]
    return Contact(
        row[_EVENT_ID],
        row[_OCCURRED_AT],
        row[_CHANNEL],
        customer_id,
        row[_CASE],
        stage,
        {d: context[d] for d in rules.dimensions if context.get(d)},
        row[_TRANSFERRED] is True or row[_TYPE] == "transfer",
        row[_ESCALATED] is True,
        row[_RESOLVED] is False,
        float(row[_WAIT] or 0.0),
    )


def _add_effort(view: dict[Key, Tally], c: Contact, before: int, rules: ScoreRules) -> None:
    """What a contact adds to the stream's rolling ``effort`` view: one contact and its
    points when new, the change of its points when its flags changed."""
    now = c.points
    if before < 0:
        tally = Tally(responses=1, score_milli=now * 1000, score_sq_micro=(now * 1000) ** 2)
    else:
        tally = Tally(
            score_milli=(now - before) * 1000,
            score_sq_micro=(now * 1000) ** 2 - (before * 1000) ** 2,
        )
    start = bucket_of(c.at, rules.bucket_ms)
    for kind, value in segments_of(c.channel, c.stage, c.context, rules.dimensions):
        view.setdefault((start, kind, value, "effort"), Tally()).add(tally)


#: Row versions of a contact's effort rows: its generation above the batch's version.
GEN_SHIFT = 42


def _effort_row(c: Contact, version: int) -> tuple[Any, ...]:
    """The ``effort_store`` row of a contact (``EFFORT_COLUMNS`` order); its version is
    the contact's generation (hand-overs it went through) above the batch's version
    (below 2^42: epoch milliseconds until 2109), so a row written after a hand-over
    outranks any its former partition writes, later too."""
    return (
        c.event_id,
        c.at,
        c.customer_id,
        c.case_id,
        c.channel,
        c.stage,
        c.context,
        c.repeat,
        c.switch,
        c.transferred,
        c.escalated,
        c.unresolved,
        c.wait_s,
        c.points,
        (c.gen << GEN_SHIFT) | version,
    )


def _score_row(
    offset: int, first_event_id: str, now_ms: int, answers: list[Answer], rules: ScoreRules
) -> tuple[Any, ...]:
    """The ``scores_store`` row of one customers record (``SCORE_COLUMNS`` order)."""
    tallies = sorted(tally_answers(answers, rules.bucket_ms).items())
    columns: list[list[Any]] = [[] for _ in range(11)]
    for (start, kind, value, metric), tally in tallies:
        for column, item in zip(
            columns, (start, kind, value, metric, *tally.as_tuple()), strict=True
        ):
            column.append(item)
    return (offset, first_event_id, now_ms, *columns)


def _touched_cases(
    contacts: Iterable[tuple[str, Contact]], dimensions: Sequence[str]
) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
    """(customer, case) of every contact with a case, and the segments of the case's
    newest contact among them."""
    out: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
    newest: dict[tuple[str, str], int] = {}
    for owner, c in contacts:
        if c.case_id is None:
            continue
        key = (owner, c.case_id)
        if c.at >= newest.get(key, c.at):
            newest[key] = c.at
            out[key] = segments_of(c.channel, c.stage, c.context, dimensions)
    return out


def state_writes(
    book: CustomerBook,
    cases: CaseBook,
    mark_key: str,
    hwm: int,
    version: int,
    followups: FollowupIndex | None = None,
    index_prefix: str = "f/",
) -> list[tuple[str, bytes | None]]:
    """The batch's state writes (None deletes), in an order that keeps every prefix
    replayable: cases written ``k/<id>/<case_id>``, gone markers ``g/<id>``, follow-up
    index entries set (``<index_prefix><id>``), customers ``c/<id>`` (live and removed),
    cases removed, index entries removed, then ``mark_key`` with the high-water mark, row
    version and (with ``followups``) the progress folded.

    An index entry is set before its customer and removed after it: a prefix may leave
    an entry whose customer needs no fold (harmless: the fold finds nothing to do),
    never a customer waiting for a fold with no entry.

    A crash may persist a prefix only (a batch's writes can take several changelog
    record batches); its records are then applied again over that prefix. Applying a
    contact, or combining a hand-over's contacts, is idempotent, so cases can go first.
    A customer stores the sequence number of the last event applied to it (an event it
    holds is not counted again) and the hand-overs it combined, so it goes after its
    cases. A customer that left (handed over, erased) has its marker written before it
    is removed, so an item that comes again for it is recognised as applied before it
    left (:meth:`CustomerBook.left_after`); the cases it took along are removed last,
    so a replay that finds it still there finds its cases too.
    """
    changed = cases.changes()
    state: list[tuple[str, bytes | None]] = [
        (f"k/{customer_id}/{case_id}", orjson.dumps(contacts))
        for (customer_id, case_id), contacts in changed.items()
        if contacts
    ]
    for customer_id in book.dirty_gone:
        marker = book.gone_markers[customer_id]
        state.append((f"g/{customer_id}", None if marker is None else orjson.dumps(marker)))
    due = {} if followups is None else followups.dirty
    at = {} if followups is None else followups.at
    state += [(f"{index_prefix}{c}", orjson.dumps(at[c])) for c in due if c in at]
    for customer_id in book.dirty:
        customer = book.customers[customer_id]
        state.append((f"c/{customer_id}", None if customer is None else customer_to_json(customer)))
    state += [
        (f"k/{customer_id}/{case_id}", None)
        for (customer_id, case_id), contacts in changed.items()
        if not contacts
    ]
    state += [(f"{index_prefix}{c}", None) for c in due if c not in at]
    mark = [hwm, version] if followups is None else [hwm, version, followups.until]
    state.append((mark_key, orjson.dumps(mark)))
    if followups is not None:
        followups.clear()
    return state
