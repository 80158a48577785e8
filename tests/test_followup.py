"""The follow-up state machine (``streams.domain.followup``) against a declarative
reference: whatever the order in which facts arrive within the watermark, and however
the progress advances, the follow-ups and the overdue alerts are those of the facts in
event-time order."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.alert_rules import DetractorRule
from schemas.customer import Customer, FollowupState, customer_from_json, customer_to_json
from streams.domain.followup import (
    DETRACTOR,
    OUTBOUND,
    RESOLUTION,
    FollowupIndex,
    FollowupRules,
    Outcome,
    add_fact,
    combine,
    fact,
    fold,
    next_at,
)

HOUR = 3_600_000
RULES = FollowupRules(due_ms=48 * HOUR)
CASES = ("case-a", "case-b", None)


@dataclass
class Expected:
    """What the reference says about one follow-up."""

    answers: int
    due_at: int
    cases: set[str]
    how: str = ""
    closed_at: int | None = None
    closed_by: str | None = None
    overdue: bool = False


def reference(facts: list[list[Any]], until: int) -> dict[str, Expected]:
    """Follow-ups described declaratively: one opens at a detractor answer with none open;
    it covers the detractor answers up to the first fact after its opening that is an
    outbound contact, or the resolution of a case of an answer it covers by then; it is
    due 48 h after its newest answer; it is overdue when a due time passed while it was
    open: before a newer answer that extended it, before its closing, or before
    ``until`` when it is still open."""
    ordered = sorted((f for f in facts if f[0] <= until), key=lambda f: (f[0], f[1]))
    out: dict[str, Expected] = {}
    i = 0
    while i < len(ordered):
        if ordered[i][2] != DETRACTOR:
            i += 1
            continue
        opening = ordered[i]
        covered = [opening]
        closing = None
        j = i + 1
        while j < len(ordered):
            f = ordered[j]
            if f[2] == DETRACTOR:
                covered.append(f)
            elif f[2] == OUTBOUND or f[4] in {a[4] for a in covered if a[4] is not None}:
                closing = f
                break
            j += 1
        due = max(a[0] for a in covered) + RULES.due_ms
        expected = Expected(len(covered), due, {a[4] for a in covered if a[4] is not None})
        passed = any(
            later[0] > covered[k][0] + RULES.due_ms  # answers are in event-time order
            for k, later in enumerate(covered[1:])
        )
        if closing is not None:
            expected.how = "contact" if closing[2] == OUTBOUND else "resolution"
            expected.closed_at, expected.closed_by = closing[0], closing[1]
            expected.overdue = passed or due < closing[0]
        else:
            expected.overdue = passed or due <= until
        out[opening[1]] = expected
        i = j + 1
    return out


@st.composite
def fact_sets(draw: Any) -> list[list[Any]]:
    n = draw(st.integers(0, 14))
    facts = []
    for k in range(n):
        kind = draw(st.sampled_from((DETRACTOR, DETRACTOR, OUTBOUND, RESOLUTION)))
        at = draw(st.integers(0, 200)) * HOUR // 2  # half-hour steps: ties happen
        case = draw(st.sampled_from(CASES))
        if kind == RESOLUTION and case is None:
            case = "case-a"
        metric, score = ("nps", draw(st.integers(0, 6))) if kind == DETRACTOR else (None, None)
        facts.append([at, f"e{k:02d}", kind, "chat", case, "q", "agent", metric, score])
    return facts


def run(facts: list[list[Any]], rng: random.Random, final: int) -> tuple[FollowupState, Outcome]:
    """Feed the facts in a random order, each before the progress passes it, folding at
    random progress points on the way; then fold up to ``final``."""
    state = FollowupState(folded_to=-1)  # nothing folded yet, not even time 0
    total = Outcome()
    remaining = list(facts)
    rng.shuffle(remaining)
    until = -1
    for _ in range(rng.randrange(0, 6)):
        until = rng.randrange(until, final + 1) if until < final else final
        must = [f for f in remaining if f[0] <= until]
        may = [f for f in remaining if f[0] > until and rng.random() < 0.5]
        for f in must + may:
            total.update(add_fact(state, copy.deepcopy(f), state.folded_to, RULES))
            remaining.remove(f)
        total.update(fold(state, until, RULES))
    for f in remaining:
        total.update(add_fact(state, copy.deepcopy(f), state.folded_to, RULES))
    total.update(fold(state, final, RULES))
    return state, total


@settings(max_examples=300, deadline=None)
@given(fact_sets(), st.integers(0, 2**32), st.integers(0, 130))
def test_follow_ups_are_those_of_the_facts_in_event_time_order(
    facts: list[list[Any]], seed: int, final_hours: int
) -> None:
    final = final_hours * HOUR
    state, outcome = run(facts, random.Random(seed), final)
    expected = reference(facts, final)
    assert set(outcome.changed) == set(expected)
    for followup_id, want in expected.items():
        got = outcome.changed[followup_id]
        assert (got.answers, got.due_at, set(got.cases)) == (want.answers, want.due_at, want.cases)
        assert (got.how, got.closed_at, got.closed_event_id) == (
            want.how,
            want.closed_at,
            want.closed_by,
        )
        assert got.overdue == want.overdue, followup_id
    fired = [f.id for f in outcome.overdue]
    assert len(fired) == len(set(fired)), "an overdue alert fired twice"
    assert set(fired) == {i for i, e in expected.items() if e.overdue}
    # what is left: the facts the progress has not passed, and the open follow-up
    assert [f[1] for f in state.pending] == [
        f[1] for f in sorted(facts, key=lambda f: (f[0], f[1])) if f[0] > final
    ]
    still_open = [i for i, e in expected.items() if not e.how]
    assert ([state.open.id] if state.open else []) == still_open
    after = next_at(state)
    assert after is None or after > final


@settings(max_examples=200, deadline=None)
@given(fact_sets(), fact_sets(), st.integers(0, 2**32), st.integers(0, 130), st.integers(0, 130))
def test_combining_two_customers_is_commutative(
    mine: list[list[Any]], theirs: list[list[Any]], seed: int, a: int, b: int
) -> None:
    for f in theirs:
        f[1] = "t" + f[1]  # other events
    rng = random.Random(seed)
    left, _ = run(mine, rng, a * HOUR)
    right, _ = run(theirs, rng, b * HOUR)
    one, two = copy.deepcopy(left), copy.deepcopy(right)
    out_one = combine(one, copy.deepcopy(right))
    out_two = combine(two, copy.deepcopy(left))
    assert one == two
    # rows: the follow-up that goes on is written whenever it came with the other side
    for out, incoming in ((out_one, right), (out_two, left)):
        if incoming.open is not None:
            assert one.open is not None and one.open.id in out.changed
    if left.open is not None and right.open is not None:
        assert one.open is not None
        assert one.open.answers == left.open.answers + right.open.answers
        merged = [f for f in out_one.changed.values() if f.how == "merged"]
        assert len(merged) == 1 and merged[0].closed_event_id == one.open.id


def test_a_late_fact_is_folded_on_arrival() -> None:
    state = FollowupState()
    add_fact(state, [0, "a", DETRACTOR, "web", None, None, None, "nps", 2], 0, RULES)
    fold(state, 10 * HOUR, RULES)
    assert state.open is not None and state.open.id == "a"
    # an outbound contact at 1 h arrives after the progress passed 10 h: folded at once
    out = add_fact(
        state, [HOUR, "c", OUTBOUND, "chat", None, "q", "x", None, None], 10 * HOUR, RULES
    )
    assert state.open is None and out.changed["a"].how == "contact"
    assert not out.overdue


def test_an_overdue_follow_up_closed_late_keeps_its_alert_and_closes() -> None:
    state = FollowupState()
    add_fact(state, [0, "a", DETRACTOR, "web", None, None, None, "nps", 2], 0, RULES)
    add_fact(state, [60 * HOUR, "c", OUTBOUND, "chat", None, "q", "x", None, None], 0, RULES)
    out = fold(state, 100 * HOUR, RULES)
    assert [f.id for f in out.overdue] == ["a"]
    assert out.changed["a"].how == "contact" and out.changed["a"].overdue
    assert fold(state, 200 * HOUR, RULES).overdue == []


def test_facts_of_events() -> None:
    def of(**kw: Any) -> Any:
        values: dict[str, Any] = {
            "event_id": "e",
            "at": 1,
            "channel": "chat",
            "type_": "chat",
            "case_id": None,
            "direction": None,
            "queue": None,
            "agent": None,
            "resolved": None,
            "metric": None,
            "score": None,
        }
        values.update(kw)
        return fact(rules=RULES, **values)

    assert of(metric="nps", score=6)[2] == DETRACTOR
    assert of(metric="nps", score=7) is None
    assert of(metric="csat", score=1)[2] == DETRACTOR
    assert of(metric="csat", score=2) is None
    assert of(metric="ces", score=1)[2] == DETRACTOR
    assert of(direction="outbound", queue="q", agent="a")[2:7] == [OUTBOUND, "chat", None, "q", "a"]
    assert of(direction="inbound") is None
    assert of(case_id="k", resolved=True)[2] == RESOLUTION
    assert of(case_id="k", type_="ticket_resolved")[2] == RESOLUTION
    assert of(case_id="k", resolved=False) is None
    assert of(resolved=True) is None  # no case: nothing to resolve
    nps_only = FollowupRules(detractor=DetractorRule(metrics=("nps",)))
    assert fact("e", 1, "web", "x", None, None, None, None, None, "csat", 1, nps_only) is None


def test_the_index_gives_each_customer_once_when_due() -> None:
    index = FollowupIndex([("a", 5), ("b", 9)], until=1)
    index.set("c", 3)
    index.set("a", 7)  # moved later: its old entry does not count
    assert index.due(6) == ["c"]
    assert index.due(6) == []
    assert index.due(9) == ["a", "b"]
    assert index.at == {} and set(index.dirty) == {"a", "b", "c"}
    index.set("a", None)
    index.clear()
    assert index.dirty == {}


def test_the_state_round_trips_with_the_customer() -> None:
    state = FollowupState()
    add_fact(state, [0, "a", DETRACTOR, "web", "k", None, None, "nps", 2], 0, RULES)
    fold(state, HOUR, RULES)
    add_fact(state, [2 * HOUR, "b", OUTBOUND, "chat", None, "q", "x", None, None], HOUR, RULES)
    customer = Customer("c_1", followup=state)
    again = customer_from_json(customer_to_json(customer))
    assert again.followup == state
    assert customer_from_json(customer_to_json(Customer("c_2"))).followup is None
