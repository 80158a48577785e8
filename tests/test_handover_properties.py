"""Scale-out without loss or double counting: resolver, customer partitions, hand-overs.

Two properties, the heart of splitting the 360-degree stage by customer:

1. **Combining customers does not depend on order.** A hand-over (a merged customer's
   journey and cases) combined into its survivor, in any order and grouping, gives the
   same counts, stage, answers, cases and contact signals (commutative and associative),
   and what the effort rows say is what one customer holding every contact would say.
2. **The distributed run equals one process.** A random stream of events over few
   identifiers (so merges happen, chains of them, and guards refuse links) is resolved
   in random batches; the items reach 1 to 4 customer partitions, which process them in
   random batches, interleaved in any way that keeps each partition's own order, while
   the hand-overs they send land in other partitions' logs wherever the interleaving
   puts them; resolver and partitions crash at random (after sending, before or while
   persisting) and go on from what was persisted. At the end every customer's journey,
   cases and contacts, the newest effort row of every contact, and the score tallies
   summed over the partitions equal a reference computed in one process: the resolver
   over the same events in order gives each event's customer; each customer's journey
   is every event of it applied in event-time order; its cases and their signals follow
   from the definition; the tallies from the answers.

The journey stage an event is tagged with (``events.journey_stage``, the
``journey_stage`` segment of its scores, a contact's ``stage``) is the customer's stage
when its partition applied it, which depends on whether the hand-over of a customer
merged into it came before: it is not compared (the customer's final stage is).

The resolver's identity writes of one batch must reach its table at once: a replay
from a part of them can decide other merges than the first run did, and the customer
partitions skip the replay's items. Its owner journals each batch's writes, and its
next owner completes a batch cut short before reading anything
(``streams.runtime.journal``; ``tests/test_resolver_journal.py`` crashes the owner at
every write). So the simulator crashes the resolver before, between or after its
identity writes, window chunk and marks, never inside the identity writes.

``HYPOTHESIS_PROFILE=long`` runs many more examples.
"""

from __future__ import annotations

import copy
import os
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.clickhouse import (
    CUSTOMER_COLUMNS,
    EFFORT_COLUMNS,
    EVENT_COLUMN,
    SCORE_COLUMNS,
)
from schemas.customer import Customer, Journey, customer_from_json
from streams.domain.customers import (
    CustomerBook,
    Handover,
    PartitionRules,
    ScoreRules,
    batch_version,
    process_records,
    state_writes,
)
from streams.domain.effort import CaseBook, Contact, EffortRules, is_contact, points
from streams.domain.identity import IdentityRules
from streams.domain.journey import JourneyRules, TouchFacts, apply
from streams.domain.resolve import resolve_records
from streams.domain.risk import HALF_LIFE_MS, SIGNALS, RiskRules, decayed, default_model, signals_of
from streams.domain.scores import Answer, Key, Tally, segments_of, tally_answers
from tests.test_journey import journey_of, order_independent
from tests.test_resolve import TOPIC, IdentityStore, event_row

settings.register_profile("default", settings(max_examples=60, deadline=None))
settings.register_profile("long", settings(max_examples=2000, deadline=None))
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")


def examples(n: int) -> int:
    """``n`` examples, or many more with ``HYPOTHESIS_PROFILE=long``."""
    return n * 30 if PROFILE == "long" else n


#: the long profile runs for many minutes: beyond the suite's timeout per test
LONG = pytest.mark.timeout(7200 if PROFILE == "long" else 300)


MINUTE = 60_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE
DAY = 86_400_000
#: bounds no test reaches: what is compared is the rules, not the bounds
JOURNEY = JourneyRules(
    max_recent=1000, max_open_cases=1000, max_closed_cases=1000, max_answers=1000
)
EFFORT = EffortRules(repeat_window_ms=20 * MINUTE, max_contacts_per_case=1000)
SCORES = ScoreRules(bucket_ms=MINUTE, dimensions=("region",))
COLUMN = EVENT_COLUMN
EFFORT_COLUMN = {name: i for i, name in enumerate(EFFORT_COLUMNS)}
SCORE_COLUMN = {name: i for i, name in enumerate(SCORE_COLUMNS)}
CUSTOMER_COLUMN = {name: i for i, name in enumerate(CUSTOMER_COLUMNS)}

KINDS = ("account_id", "email", "phone", "device_id")
CHANNELS = ("web", "chat", "call_center")
TYPES = ("page_view", "purchase", "login", "call", "chat", "ticket_resolved", "survey_response")
#: the shipped detractor model: every customer is scored as its partition applies events
RISK = RiskRules(default_model())
RULES = {
    "free": IdentityRules(limits={}, default_limit=1000, unique_kinds=frozenset()),
    "default": IdentityRules(),
    "tight": IdentityRules(limits={"email": 1, "phone": 2, "device_id": 2}),
}


# --- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One generated touchpoint; ``source`` names its input message."""

    event_id: str
    identifiers: Mapping[str, str]
    at: int
    channel: str
    type: str
    case_id: str | None
    survey: tuple[str, float] | None
    interaction: Mapping[str, Any] | None
    region: str
    source: tuple[str, int, int]

    def row(self) -> list[Any]:
        return event_row(
            self.event_id,
            self.at,
            self.identifiers,
            channel=self.channel,
            type_=self.type,
            case_id=self.case_id,
            survey=self.survey,
            interaction=self.interaction,
            context={"region": self.region},
            source=self.source,
        )

    def touch(self) -> TouchFacts:
        return TouchFacts(
            self.event_id,
            self.at,
            self.channel,
            self.type,
            self.case_id,
            None if self.interaction is None else self.interaction.get("resolved"),
            None if self.survey is None else self.survey[0],
            None if self.survey is None else self.survey[1],
            None if self.survey is None else {"nps": 10, "csat": 5}[self.survey[0]],
        )


@st.composite
def streams_of_events(draw: st.DrawFn, max_size: int = 24) -> list[Event]:
    """Events over two or three values per kind (merges and refusals are frequent), some
    of them repeated later by another input message (same event id and content)."""
    n = draw(st.integers(1, max_size), label="events")
    values = draw(st.integers(2, 3), label="values per kind")
    out: list[Event] = []
    for i in range(n):
        shown = draw(
            st.dictionaries(
                st.sampled_from(KINDS), st.integers(0, values - 1), min_size=1, max_size=3
            )
        )
        kind_of_touch = draw(st.sampled_from(TYPES))
        channel = draw(st.sampled_from(CHANNELS))
        survey = None
        if kind_of_touch == "survey_response":
            metric = draw(st.sampled_from(("nps", "csat")))
            survey = (
                metric,
                float(draw(st.integers(0, 10) if metric == "nps" else st.integers(1, 5))),
            )
        interaction = None
        if channel != "web" and draw(st.booleans()):
            interaction = {
                "wait_seconds": draw(st.sampled_from((0, 90, 1200))),
                "transferred": draw(st.booleans()),
                "escalated": draw(st.booleans()),
                "resolved": draw(st.sampled_from((None, True, False))),
            }
        out.append(
            Event(
                f"e{i:02d}",
                {k: f"{k[:2]}{v}" for k, v in shown.items()},
                T0 + draw(st.integers(0, 40)) * MINUTE // 2,
                channel,
                kind_of_touch,
                draw(st.sampled_from((None, "k1", "k2"))),
                survey,
                interaction,
                draw(st.sampled_from(("eu", "us"))),
                (f"touchpoints.{channel}", 0, i),
            )
        )
    for i in draw(st.lists(st.integers(0, n - 1), max_size=3), label="repeated"):
        e = out[i]
        at = draw(st.integers(out.index(e) + 1, len(out)), label="repeat at")
        repeat = Event(**{**e.__dict__, "source": (e.source[0], 1, 1000 + at)})
        out.insert(at, repeat)
    return out


# --- the reference: one process ------------------------------------------------------------


@dataclass
class Reference:
    """What one process computes from the events in resolver order."""

    customer_of: dict[str, str]  # counted event id -> its customer at the end
    journeys: dict[str, Journey]
    contacts: dict[str, tuple[str | None, bool, bool, int]]  # event -> case, signals, points
    cases: dict[tuple[str, str], list[str]]  # (customer, case) -> contact ids in order
    answers: dict[Key, tuple[int, ...]]  # scores without the journey_stage segment
    view: dict[Key, tuple[int, ...]]  # answers and effort, as the rolling view sums them


def is_contact_event(e: Event) -> bool:
    return is_contact(e.channel, e.case_id, e.interaction is not None, EFFORT)


def contact_of(e: Event, customer_id: str) -> Contact:
    i = e.interaction or {}
    return Contact(
        e.event_id,
        e.at,
        e.channel,
        customer_id,
        e.case_id,
        "",
        {"region": e.region},
        i.get("transferred") is True or e.type == "transfer",
        i.get("escalated") is True,
        i.get("resolved") is False,
        float(i.get("wait_seconds") or 0.0),
    )


def without_stage(tallies: Mapping[Key, Tally]) -> dict[Key, tuple[int, ...]]:
    out: dict[Key, Tally] = {}
    for key, tally in tallies.items():
        if key[1] != "journey_stage":
            out.setdefault(key, Tally()).add(tally)
    return {k: t.as_tuple() for k, t in out.items() if any(t.as_tuple())}


def reference(events: Sequence[Event], rules: IdentityRules) -> Reference:
    store = IdentityStore()
    resolver = store.resolver(rules)
    counted: dict[str, Event] = {}
    for e in events:
        resolver.resolve(e.identifiers, e.event_id, e.at, count=e.event_id not in counted)
        counted.setdefault(e.event_id, e)
    customer_of = {}
    for event_id, e in counted.items():
        first = rules.order(e.identifiers)[0]
        owner = resolver.owner(*first)
        assert owner is not None
        customer_of[event_id] = owner
    by_customer: dict[str, list[Event]] = defaultdict(list)
    for event_id, e in counted.items():
        by_customer[customer_of[event_id]].append(e)
    journeys, contacts, cases = {}, {}, {}
    for customer_id, mine in by_customer.items():
        ordered = sorted(mine, key=lambda e: (e.at, e.event_id))
        journeys[customer_id] = journey_of([e.touch() for e in ordered], JOURNEY)
        previous: dict[str, Event] = {}
        for e in ordered:
            if not is_contact_event(e):
                continue
            c = contact_of(e, customer_id)
            if e.case_id is not None:
                before = previous.get(e.case_id)
                if before is not None:
                    c.repeat = e.at - before.at <= EFFORT.repeat_window_ms
                    c.switch = before.channel != e.channel
                previous[e.case_id] = e
                cases.setdefault((customer_id, e.case_id), []).append(e.event_id)
            contacts[e.event_id] = (e.case_id, c.repeat, c.switch, points(c))
    answers = [
        Answer(
            e.at,
            e.survey[0],
            e.survey[1],
            {"nps": 10, "csat": 5}[e.survey[0]],
            segments_of(e.channel, "", {"region": e.region}, SCORES.dimensions),
        )
        for e in counted.values()
        if e.survey is not None
    ]
    scored = without_stage(tally_answers(answers, SCORES.bucket_ms))
    view: dict[Key, Tally] = {}
    for key, values in scored.items():
        view.setdefault(key, Tally()).add(Tally(*values))
    for event_id, (_case, _r, _s, p) in contacts.items():
        e = counted[event_id]
        start = e.at - e.at % SCORES.bucket_ms
        for kind, value in segments_of(e.channel, "", {"region": e.region}, SCORES.dimensions):
            if kind != "journey_stage":
                key = (start, kind, value, "effort")
                view.setdefault(key, Tally()).add(
                    Tally(responses=1, score_milli=p * 1000, score_sq_micro=(p * 1000) ** 2)
                )
    return Reference(
        customer_of,
        journeys,
        contacts,
        cases,
        scored,
        {k: t.as_tuple() for k, t in view.items()},
    )


# --- the distributed run --------------------------------------------------------------------


@dataclass
class PartitionState:
    """A customers partition: its log (records as bytes), what it persisted, where it is."""

    log: list[bytes] = field(default_factory=list)
    store: dict[str, bytes] = field(default_factory=dict)
    position: int = 0  # the next record to read (committed)

    def mark(self) -> tuple[int, int]:
        value = self.store.get("p/")
        return (-1, 0) if value is None else tuple(orjson.loads(value))  # type: ignore[return-value]

    def books(self) -> tuple[CustomerBook, CaseBook]:
        store = self.store

        def read_customer(customer_id: str) -> Customer | None:
            value = store.get(f"c/{customer_id}")
            return None if value is None else customer_from_json(value)

        def read_gone(customer_id: str) -> tuple[str, int] | None:
            value = store.get(f"g/{customer_id}")
            return None if value is None else tuple(orjson.loads(value))  # type: ignore[return-value]

        def read_case(customer_id: str, case_id: str) -> list[Any] | None:
            value = store.get(f"k/{customer_id}/{case_id}")
            return None if value is None else list(orjson.loads(value))

        return CustomerBook(read_customer, read_gone), CaseBook(EFFORT, read_case)


@dataclass
class Sink:
    """ClickHouse as the tables' engines collapse it: the newest row per key."""

    events: dict[str, list[Any]] = field(default_factory=dict)
    effort: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    scores: dict[tuple[int, int, str], tuple[Any, ...]] = field(default_factory=dict)
    customers: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    #: the score-drop detector's view (``streams.domain.detect.Lookout``): each
    #: partition's records after the last one it added
    view: dict[tuple[int, int], dict[Key, Tally]] = field(default_factory=dict)
    progress: dict[int, int] = field(default_factory=dict)

    def look(self, partition: int, entries: Sequence[tuple[int, dict[Key, Tally]]]) -> None:
        for offset, tallies in entries:
            if offset <= self.progress.get(partition, -1):
                continue
            self.progress[partition] = offset
            self.view[(partition, offset)] = tallies

    def store(self, partition: int, rows: Mapping[str, list[Any]]) -> None:
        for row in rows["events_store"]:
            self.events[row[COLUMN["event_id"]]] = row
        version = EFFORT_COLUMN["version"]
        for row in rows["effort_store"]:
            held = self.effort.get(row[0])
            if held is None or row[version] >= held[version]:
                self.effort[row[0]] = row
        for row in rows["scores_store"]:
            key = (
                partition,
                row[SCORE_COLUMN["stitch_offset"]],
                row[SCORE_COLUMN["first_event_id"]],
            )
            self.scores[key] = row
        version = CUSTOMER_COLUMN["version"]
        for row in rows["customer_360_store"]:
            held = self.customers.get(row[0])
            if held is None or row[version] >= held[version]:
                self.customers[row[0]] = row

    def score_tallies(self) -> dict[Key, tuple[int, ...]]:
        out: dict[Key, Tally] = {}
        for row in self.scores.values():
            columns = [row[SCORE_COLUMN[c]] for c in SCORE_COLUMNS[3:]]
            for start, kind, value, metric, *counts in zip(*columns, strict=True):
                out.setdefault((start, kind, value, metric), Tally()).add(Tally(*counts))
        return without_stage(out)

    def view_tallies(self) -> dict[Key, tuple[int, ...]]:
        out: dict[Key, Tally] = {}
        for tallies in self.view.values():
            for key, tally in tallies.items():
                out.setdefault(key, Tally()).add(tally)
        return without_stage(out)


class Run:
    """The resolver and ``partitions`` customer partitions, driven step by step."""

    def __init__(self, events: Sequence[Event], rules: IdentityRules, partitions: int) -> None:
        self.rules = rules
        self.partitions = [PartitionState() for _ in range(partitions)]
        self.resolver_store = IdentityStore()
        self.window = self.resolver_store.window()
        self.resolve_log: list[bytes] = []
        self.resolved_to = 0  # the resolver's committed offset
        self.sink = Sink()
        self.clock = T0
        self.crashes = 0
        self.handovers = 0
        self.forwarded = 0
        self.refusals = 0
        self.replayed = 0

    def now(self) -> int:
        self.clock += 1
        return self.clock

    def add_records(self, events: Sequence[Event], sizes: Sequence[int]) -> None:
        """Ingest's records on the resolve topic: the events, ``sizes`` rows at a time."""
        i, n = 0, 0
        while i < len(events):
            size = sizes[n % len(sizes)]
            self.resolve_log.append(orjson.dumps([e.row() for e in events[i : i + size]]))
            i, n = i + size, n + 1

    # -- the resolver --------------------------------------------------------------------------

    def resolve_step(self, count: int, crash: int | None) -> None:
        """Resolve the next ``count`` records; send their items; persist the state, or
        with ``crash`` persist only its first ``crash`` writes and go on from there."""
        start = self.resolved_to
        records = [
            (offset, orjson.loads(self.resolve_log[offset]))
            for offset in range(start, min(start + count, len(self.resolve_log)))
        ]
        store = self.resolver_store
        resolver = store.resolver(self.rules)
        watermarks = store.watermarks(7 * DAY)
        now = self.now()
        out = resolve_records(
            records, resolver, self.window, TOPIC, len(self.partitions), watermarks, now
        )
        self.refusals += sum(out.refusals.values())
        for p, items in sorted(out.items.items()):
            self.partitions[p].log.append(orjson.dumps([None, items]))
        writes = store.writes(resolver, self.window, watermarks, now)
        if crash is None:
            store.apply(writes)
            self.resolved_to = start + len(records)
        else:
            # the identity changes of a batch reach the table at once or not at all (the
            # journal, see the module docstring); the window's chunk and marks after them
            self.crashes += 1
            identity = [w for w in writes if w[0][:2] in ("c/", "n/")]
            rest = writes[len(identity) :]
            store.apply([[], identity, identity + rest[:1]][crash % 3])
            self.window = store.window()

    # -- a customers partition -----------------------------------------------------------------

    def partition_step(self, p: int, count: int, crash: int | None) -> None:
        """Process the next ``count`` records of partition ``p``: rows stored, hand-overs
        and tallies sent, then the state persisted; with ``crash`` only its first
        ``crash`` writes are, and the records are read again."""
        state = self.partitions[p]
        start = state.position
        records = [
            (offset, orjson.loads(state.log[offset]))
            for offset in range(start, min(start + count, len(state.log)))
        ]
        if not records:
            return
        hwm, previous = state.mark()
        book, cases = state.books()
        now = self.now()
        version = batch_version(records, previous, now)
        rules = PartitionRules(
            JOURNEY, EFFORT, SCORES, len(self.partitions), max_cases=1000, risk=RISK
        )
        out, hwm = process_records(records, book, cases, rules, hwm, version, now)
        self.handovers += out.handed_over
        self.forwarded += out.forwarded
        self.replayed += out.replayed
        for target, item in out.handovers:
            self.partitions[target].log.append(orjson.dumps([None, [item]]))
        self.sink.store(p, out.rows)
        self.sink.look(p, out.tallies)
        writes = state_writes(book, cases, "p/", hwm, version)
        if crash is not None:
            self.crashes += 1
            writes = writes[: crash % (len(writes) + 1)]
        for key, value in writes:
            if value is None:
                state.store.pop(key, None)
            else:
                state.store[key] = value
        if crash is None:
            state.position = start + len(records)

    def pending(self) -> list[int]:
        return [p for p, s in enumerate(self.partitions) if s.position < len(s.log)]

    def drive(self, rng: random.Random, crash_rate: float) -> None:
        """Random steps until everything is resolved and every partition has read its log."""
        # some partitions lag far behind others, so hand-overs meet customers that
        # merged on meanwhile
        speed = {p: rng.random() ** 3 + 0.01 for p in range(len(self.partitions))}
        speed[-1] = rng.random() + 0.01
        steps = 0
        while self.resolved_to < len(self.resolve_log) or self.pending():
            steps += 1
            assert steps < 10_000, "the run does not settle"
            crash = rng.randrange(64) if rng.random() < crash_rate else None
            choices = self.pending()
            if self.resolved_to < len(self.resolve_log):
                choices.append(-1)
            (chosen,) = rng.choices(choices, [speed[c] for c in choices])
            if chosen < 0:
                self.resolve_step(rng.randint(1, 3), crash)
            else:
                self.partition_step(chosen, rng.randint(1, 3), crash)

    # -- what it holds at the end --------------------------------------------------------------

    def customers(self) -> dict[str, Customer]:
        out: dict[str, Customer] = {}
        for p, state in enumerate(self.partitions):
            for key, value in state.store.items():
                if key.startswith("c/"):
                    customer = customer_from_json(value)
                    assert customer.customer_id not in out, f"{key} twice"
                    out[customer.customer_id] = customer
                    assert p == self.partition_of(customer.customer_id)
        return out

    def partition_of(self, customer_id: str) -> int:
        from streams.domain.resolve import partition_of

        return partition_of(customer_id, len(self.partitions))

    def cases(self) -> dict[tuple[str, str], list[Contact]]:
        out = {}
        for state in self.partitions:
            for key, value in state.store.items():
                if key.startswith("k/"):
                    customer_id, case_id = key[2:].split("/")
                    out[(customer_id, case_id)] = [
                        Contact.from_json(case_id, v) for v in orjson.loads(value)
                    ]
        return out


# --- 1. combining customers -------------------------------------------------------------------


def customer_with(
    customer_id: str, events: Sequence[Event]
) -> tuple[Customer, dict[str, list[Contact]]]:
    """A customer that saw ``events`` (in this order), with its cases."""
    customer = Customer(customer_id)
    book = CaseBook(EFFORT, lambda _c, _k: None)
    for e in events:
        apply(customer.journey, e.touch(), JOURNEY)
        if is_contact_event(e) and e.case_id is not None:
            if e.case_id not in customer.cases:
                customer.cases.append(e.case_id)
            book.apply(customer_id, contact_of(e, customer_id))
    cases = {k: book.contacts(customer_id, k) for k in customer.cases}
    return customer, copy.deepcopy(cases)


Part = tuple[Customer, dict[str, list[Contact]]]


def absorb_all(survivor: Part, parts: Sequence[Part]) -> Part:
    """Hand ``parts`` over, in this order, to ``survivor``'s partition; what it holds then."""
    into = survivor[0].customer_id
    state = PartitionState()
    rules = PartitionRules(JOURNEY, EFFORT, SCORES, 1, max_cases=1000)
    book, case_book = state.books()
    book.customers[into] = copy.deepcopy(survivor[0])
    for case_id, contacts in survivor[1].items():
        case_book.cases[(into, case_id)] = copy.deepcopy(contacts)
    records = []
    for n, (customer, its_cases) in enumerate(parts):
        handover = Handover(customer.customer_id, into, n, customer, its_cases, 0)
        # through JSON, as the customers topic carries it
        records.append((n, orjson.loads(orjson.dumps([None, [handover.to_item()]]))))
    process_records(records, book, case_book, rules, -1, 1, T0)
    final = book.customer(into)
    assert final is not None
    return final, {k: case_book.contacts(into, k) for k in final.cases}


def comparable(part: Part) -> dict[str, Any]:
    """A customer's state in the shapes that do not depend on order."""
    customer, cases = part
    return {
        "journey": order_independent(customer.journey),
        "merged_in": sorted(customer.merged_in),
        "cases": {
            case_id: [(c.event_id, c.repeat, c.switch, c.points) for c in contacts]
            for case_id, contacts in sorted(cases.items())
        },
    }


@LONG
@settings(max_examples=examples(80), deadline=None)
@given(events=streams_of_events(20), data=st.data())
def test_combining_hand_overs_is_commutative_associative_and_one_customer(
    events: list[Event], data: st.DataObject
) -> None:
    """Deal the events to 3 or 4 customers; hand all but the first over to it in any
    order, or first some of them into another (a chain of merges): the survivor holds
    the same journey, cases and contact signals, and they are those of one customer that
    saw every event (in event-time order)."""
    distinct = list({e.event_id: e for e in events}.values())
    k = data.draw(st.integers(3, 4), label="customers")
    owners = data.draw(
        st.lists(st.integers(0, k - 1), min_size=len(distinct), max_size=len(distinct))
    )
    parts = [
        customer_with(f"c_{i}", [e for e, o in zip(distinct, owners, strict=True) if o == i])
        for i in range(k)
    ]
    one, other = (
        comparable(
            absorb_all(parts[0], [parts[i] for i in data.draw(st.permutations(range(1, k)))])
        )
        for _ in range(2)
    )
    assert one == other
    # (2 into 1) into 0, and 0 into 1 after 2: the same as all into 0 but for its name
    chain = absorb_all(parts[0], [absorb_all(parts[1], [parts[2]]), *parts[3:]])
    assert comparable(chain) == one
    reverse = absorb_all(parts[1], [parts[2], *parts[3:], parts[0]])
    assert comparable(reverse)["journey"] == one["journey"]
    assert comparable(reverse)["cases"] == one["cases"]
    whole = customer_with("c_0", sorted(distinct, key=lambda e: (e.at, e.event_id)))
    assert comparable(whole)["journey"] == one["journey"]
    assert comparable(whole)["cases"] == one["cases"]
    assert one["merged_in"] == [f"c_{i}" for i in range(1, k)]


def test_a_hand_over_sent_twice_is_combined_once() -> None:
    def contact_event(event_id: str, at: int, channel: str) -> Event:
        interaction = {"wait_seconds": 0}
        return Event(
            event_id,
            {"email": event_id},
            at,
            channel,
            "call",
            "k1",
            None,
            interaction,
            "eu",
            ("t", 0, 0),
        )

    s = customer_with("c_s", [contact_event("e1", T0, "chat")])
    a = customer_with("c_a", [contact_event("e2", T0 + MINUTE, "call_center")])
    once = comparable(absorb_all(s, [a]))
    assert comparable(absorb_all(s, [a, a])) == once
    assert once["journey"]["touchpoints"] == {"chat": 1, "call_center": 1}
    assert once["cases"] == {"k1": [("e1", False, False, 10), ("e2", True, True, 45)]}


# --- 2. the distributed run equals one process ------------------------------------------------


def check_against_reference(run: Run, events: Sequence[Event], rules: IdentityRules) -> None:
    ref = reference(events, rules)
    live = run.customers()
    # the customers the resolver holds, each on its own partition, no other; but for
    # one absorbed by a merge whose deletion a crash cut short (unreachable, see
    # ``streams.domain.identity``): its partition has handed it over
    identities = run.resolver_store.live()
    left_behind = {a for i in identities.values() for a in i.absorbed} & set(identities)
    assert set(live) == set(identities) - left_behind
    assert not left_behind & set(run.resolver_store.nodes.values())
    # customers with events: the same journeys
    for customer_id, journey in ref.journeys.items():
        assert customer_id in live, f"{customer_id} missing"
        assert order_independent(live[customer_id].journey) == order_independent(journey), (
            customer_id
        )
    # customers created by identifiers only (a refused one, a repeat's) saw nothing
    for customer_id in set(live) - set(ref.journeys):
        assert sum(live[customer_id].journey.touchpoints.values()) == 0
    # the behaviour summary: every contact of the customer, flagged as one process flags
    # it, weighted by its age (the detractor model reads it), and the score of that state
    expected: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(SIGNALS))
    first = {}
    for e in events:
        first.setdefault(e.event_id, e)
    horizon = max((e.at for e in events), default=0) + 86_400_000
    for event_id, (_case, repeat, switch, _points) in ref.contacts.items():
        owner = ref.customer_of[event_id]
        c = contact_of(first[event_id], owner)
        c.repeat, c.switch = repeat, switch
        weight = 2.0 ** (-(horizon - c.at) / HALF_LIFE_MS)
        expected[owner] = [
            v + weight * x for v, x in zip(expected[owner], signals_of(c), strict=True)
        ]
    for customer_id, customer in live.items():
        got = decayed(customer.behaviour, horizon)
        want = expected.get(customer_id, [0.0] * len(SIGNALS))
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9), customer_id
        assert customer.risk is not None and customer.risk.model == RISK.model.version
    # every counted event has its events row, under the customer it had when resolved
    assert set(run.sink.events) == set(ref.customer_of)
    # cases: the contacts of every (customer, case) in event-time order, and their signals
    held = {k: [c.event_id for c in v] for k, v in run.cases().items() if v}
    assert held == ref.cases
    # the newest effort row of every contact says what one process says
    effort = {
        event_id: (
            row[EFFORT_COLUMN["case_id"]],
            row[EFFORT_COLUMN["repeat_contact"]],
            row[EFFORT_COLUMN["channel_switch"]],
            row[EFFORT_COLUMN["points"]],
        )
        for event_id, row in run.sink.effort.items()
    }
    assert effort == ref.contacts
    # score tallies summed over the partitions (stored rows, and the detector's view)
    assert run.sink.score_tallies() == ref.answers
    assert run.sink.view_tallies() == ref.view
    # the newest customer_360 row of each customer: live ones with their touchpoints
    rows = run.sink.customers
    for customer_id, customer in live.items():
        row = rows[customer_id]
        assert row[CUSTOMER_COLUMN["deleted"]] == 0
        assert row[CUSTOMER_COLUMN["touchpoints"]] == sum(customer.journey.touchpoints.values())
    for customer_id, row in rows.items():
        if customer_id not in live:
            assert row[CUSTOMER_COLUMN["deleted"]] == 1, customer_id


@LONG
@settings(max_examples=examples(60), deadline=None)
@given(
    events=streams_of_events(),
    rules=st.sampled_from(sorted(RULES)),
    partitions=st.integers(1, 4),
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_the_distributed_run_equals_one_process(
    events: list[Event], rules: str, partitions: int, sizes: list[int], seed: int
) -> None:
    """No crashes: any batching, any interleaving of partitions and hand-overs."""
    run = Run(events, RULES[rules], partitions)
    run.add_records(events, sizes)
    run.drive(random.Random(seed), crash_rate=0.0)
    check_against_reference(run, events, RULES[rules])


@LONG
@settings(max_examples=examples(80), deadline=None)
@given(
    events=streams_of_events(),
    rules=st.sampled_from(sorted(RULES)),
    partitions=st.integers(1, 4),
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_with_crashes_and_replays_the_distributed_run_equals_one_process(
    events: list[Event], rules: str, partitions: int, sizes: list[int], seed: int
) -> None:
    """Crashes after a batch's items, rows and hand-overs went out and before (or while)
    its state was persisted: the records are read again from what was persisted."""
    run = Run(events, RULES[rules], partitions)
    run.add_records(events, sizes)
    run.drive(random.Random(seed), crash_rate=0.3)
    check_against_reference(run, events, RULES[rules])
