"""Journey state, as ``streams/journey.py`` states it: updates by event time that commute.

Applying the same touches in any order gives the same counts, first and last seen,
stage (latest by event time, ties by stage name), latest answers (by event time, ties
by event id), closed cases, recent touches and open cases with their last contact;
combining two journeys in either direction equals one journey that saw both sets of
touches. The size bounds keep the most recent entries, a closing event closes its case,
and compaction drops only the recent touches and the memory of closed cases.

Not order-independent, and so not compared here: an open case's ``opened_at``,
``contacts`` and ``channels`` when a close falls between its contacts (a contact older
than the close is dropped if the close arrived first, counted if it arrived before); see
the test of that exception below. Under tight bounds the same holds for open cases, since a case
pushed out by the bound and contacted again restarts from that contact.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.customer import Journey, OpenCase
from streams.domain.journey import (
    DEFAULT_CASE_CLOSING_TYPES,
    DEFAULT_STAGES,
    JourneyRules,
    TouchFacts,
    apply,
    combine,
    compact,
)

#: bounds no test reaches: only the rules of the updates matter
ROOMY = JourneyRules(max_recent=1000, max_open_cases=1000, max_closed_cases=1000, max_answers=1000)
TYPES = (
    "page_view",
    "search",
    "purchase",
    "login",
    "ticket_opened",
    "chat",
    "referral",
    "payment_failed",
    "custom_unmapped",
    *sorted(DEFAULT_CASE_CLOSING_TYPES),
)
CHANNELS = ("web", "email", "call_center")
CASES = ("k0", "k1", "k2", "k3")


def touch_lists(max_size: int = 30) -> st.SearchStrategy[list[TouchFacts]]:
    """Touches with distinct event ids (the stitcher applies an event once), at small event
    times (ties are frequent), maybe naming a case, maybe resolving it, maybe carrying a
    survey answer."""
    fields = st.tuples(
        st.integers(1, 20),
        st.sampled_from(CHANNELS),
        st.sampled_from(TYPES),
        st.sampled_from((None, *CASES)),
        st.sampled_from((None, False, True)),
        st.sampled_from((None, None, "nps", "csat")),
        st.integers(0, 10),
    )
    return st.lists(fields, max_size=max_size).map(
        lambda rows: [
            TouchFacts(
                f"e{i:02d}",
                at,
                channel,
                type_,
                case_id,
                resolved,
                metric,
                None if metric is None else score,
                None if metric is None else 10,
            )
            for i, (at, channel, type_, case_id, resolved, metric, score) in enumerate(rows)
        ]
    )


def journey_of(touches: Iterable[TouchFacts], rules: JourneyRules = ROOMY) -> Journey:
    journey = Journey()
    for touch in touches:
        apply(journey, touch, rules)
    return journey


def order_independent(journey: Journey) -> dict[str, Any]:
    """The fields that do not depend on the order the touches arrived in."""
    return {
        "first_seen": journey.first_seen,
        "last_seen": journey.last_seen,
        "touchpoints": journey.touchpoints,
        "stage": (journey.stage, journey.stage_at),
        "closed_cases": journey.closed_cases,
        "answers": journey.answers,
        "recent": journey.recent,
        "open_cases": {k: case.last_at for k, case in journey.open_cases.items()},
        "answer_history": journey.answer_history,
    }


def is_close(touch: TouchFacts) -> bool:
    return touch.case_id is not None and (
        touch.type in DEFAULT_CASE_CLOSING_TYPES or bool(touch.resolved)
    )


def expected(touches: list[TouchFacts]) -> dict[str, Any]:
    """The order-independent fields, computed directly from the multiset of touches."""
    stages = [(t.at, DEFAULT_STAGES[t.type]) for t in touches if t.type in DEFAULT_STAGES]
    closed: dict[str, int] = {}
    for t in touches:
        if is_close(t) and t.case_id is not None:
            closed[t.case_id] = max(t.at, closed.get(t.case_id, 0))
    open_cases: dict[str, int] = {}
    for t in touches:
        if t.case_id is not None and not is_close(t) and t.at > closed.get(t.case_id, 0):
            open_cases[t.case_id] = max(t.at, open_cases.get(t.case_id, 0))
    answers = {}
    for t in sorted(touches, key=lambda t: (t.at, t.event_id)):
        if t.survey_metric is not None and t.survey_score is not None:
            answers[t.survey_metric] = (t.survey_score, t.at, t.event_id)
    touchpoints: dict[str, int] = {}
    for t in touches:
        touchpoints[t.channel] = touchpoints.get(t.channel, 0) + 1
    return {
        "first_seen": min((t.at for t in touches), default=0),
        "last_seen": max((t.at for t in touches), default=0),
        "touchpoints": touchpoints,
        "stage": max(stages, default=(0, ""))[::-1],
        "closed_cases": closed,
        "answers": answers,
        "recent": sorted(((t.at, t.event_id) for t in touches), reverse=True),
        "open_cases": open_cases,
        "answer_history": sorted(
            (
                (t.at, t.event_id, t.survey_metric, t.survey_score)
                for t in touches
                if t.survey_metric is not None and t.survey_score is not None
            ),
            reverse=True,
        ),
    }


def comparable(journey: Journey) -> dict[str, Any]:
    """:func:`order_independent` in the shapes :func:`expected` computes."""
    fields = order_independent(journey)
    fields["answers"] = {m: (a.score, a.at, a.event_id) for m, a in journey.answers.items()}
    fields["recent"] = [(t.at, t.event_id) for t in journey.recent]
    fields["answer_history"] = [
        (a.at, a.event_id, a.metric, a.score) for a in journey.answer_history
    ]
    return fields


# --- 8. apply commutes ------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(data=st.data(), touches=touch_lists())
def test_apply_in_any_order_gives_the_same_order_independent_journey(
    data: st.DataObject, touches: list[TouchFacts]
) -> None:
    """Any permutation of the same touches: the same counts, first and last seen, stage,
    latest answers, closed cases, recent touches, and the same open cases with the same
    last contact; all as computed directly from the touches."""
    shuffled = data.draw(st.permutations(touches), label="order")
    one, other = journey_of(touches), journey_of(shuffled)
    assert order_independent(one) == order_independent(other)
    assert comparable(one) == expected(touches)


def test_the_latest_stage_wins_and_ties_go_to_the_greater_stage_name() -> None:
    """Stage by event time (a late event does not move it back); at the same time the
    greater stage name wins, whatever arrives first."""
    late = [TouchFacts("e1", 20, "web", "purchase"), TouchFacts("e2", 10, "web", "search")]
    assert (journey_of(late).stage, journey_of(late).stage_at) == ("purchase", 20)
    tie = [TouchFacts("e1", 10, "web", "referral"), TouchFacts("e2", 10, "web", "login")]
    for touches in (tie, tie[::-1]):
        assert journey_of(touches).stage == "usage"  # "usage" > "advocacy"


def test_an_unmapped_type_counts_but_sets_no_stage() -> None:
    journey = journey_of([TouchFacts("e1", 10, "web", "custom_unmapped")])
    assert (journey.stage, journey.stage_at, journey.touchpoints) == ("", 0, {"web": 1})


def test_a_reopened_case_is_exact_only_in_its_last_contact_when_the_close_comes_late() -> None:
    contact_10 = TouchFacts("e1", 10, "email", "chat", case_id="k")
    close_20 = TouchFacts("e2", 20, "web", "ticket_resolved", case_id="k")
    contact_30 = TouchFacts("e3", 30, "call_center", "call", case_id="k")
    in_time = journey_of([contact_10, close_20, contact_30])
    close_last = journey_of([contact_10, contact_30, close_20])
    assert in_time.open_cases == {"k": OpenCase(30, 30, 1, ["call_center"])}
    # the documented exception: a late close cannot tell which contacts came before it
    assert close_last.open_cases == {"k": OpenCase(10, 30, 2, ["call_center", "email"])}


# --- 9. combine -------------------------------------------------------------------------------


@st.composite
def disjoint_sets(draw: st.DrawFn, parts: int) -> list[list[TouchFacts]]:
    """Touches (distinct event ids) dealt into ``parts`` sets."""
    touches = draw(touch_lists())
    owners = draw(st.lists(st.integers(0, parts - 1), min_size=len(touches), max_size=len(touches)))
    return [[t for t, o in zip(touches, owners, strict=True) if o == p] for p in range(parts)]


def combined(into: Journey, other: Journey, rules: JourneyRules = ROOMY) -> Journey:
    """``combine`` on copies, checking that it leaves ``other`` as it was."""
    result, before = copy.deepcopy(into), copy.deepcopy(other)
    combine(result, other, rules)
    assert other == before
    return result


@settings(max_examples=100, deadline=None)
@given(sets=disjoint_sets(2))
def test_combine_is_commutative_and_equals_one_journey_of_both_touch_sets(
    sets: list[list[TouchFacts]],
) -> None:
    """Combining the journeys of two disjoint sets of touches, in either direction, gives
    the same journey, and the order-independent part of one journey that saw them all."""
    a, b = (journey_of(s) for s in sets)
    ab, ba = combined(a, b), combined(b, a)
    assert ab == ba
    assert order_independent(ab) == order_independent(journey_of(sets[0] + sets[1]))
    assert combined(a, Journey()) == a
    assert combined(Journey(), a) == a


@settings(max_examples=75, deadline=None)
@given(sets=disjoint_sets(3))
def test_combine_is_associative_on_the_order_independent_fields(
    sets: list[list[TouchFacts]],
) -> None:
    """(a + b) + c and a + (b + c) agree on everything the order of touches cannot change
    (the details of an open case can differ, as for ``apply``)."""
    a, b, c = (journey_of(s) for s in sets)
    left, right = combined(combined(a, b), c), combined(a, combined(b, c))
    assert order_independent(left) == order_independent(right)
    assert order_independent(left) == order_independent(journey_of(sets[0] + sets[1] + sets[2]))


# --- 10. the size bounds ----------------------------------------------------------------------


#: the settings allow ``max_recent`` >= 0, ``max_open_cases`` >= 1, ``max_closed_cases`` >= 0;
small_rules = st.builds(
    JourneyRules,
    max_recent=st.integers(0, 5),
    max_open_cases=st.integers(1, 3),
    max_closed_cases=st.integers(0, 3),
)


@settings(max_examples=100, deadline=None)
@given(rules=small_rules, sets=disjoint_sets(3), data=st.data())
def test_bounds_hold_after_every_update_and_keep_the_most_recent_entries(
    rules: JourneyRules, sets: list[list[TouchFacts]], data: st.DataObject
) -> None:
    """After every ``apply`` and ``combine``: at most ``max_recent`` recent touches,
    ``max_open_cases`` open cases and ``max_closed_cases`` closed cases; the recent touches
    are the latest of all (by time, then event id), the closed cases the latest closes."""

    def bounded(journey: Journey) -> None:
        assert len(journey.recent) <= rules.max_recent
        assert len(journey.open_cases) <= rules.max_open_cases
        assert len(journey.closed_cases) <= rules.max_closed_cases
        assert len(journey.answer_history) <= rules.max_answers

    journeys = []
    for touches in sets:
        journey = Journey()
        for touch in data.draw(st.permutations(touches), label="order"):
            apply(journey, touch, rules)
            bounded(journey)
        journeys.append(journey)
    everything = journeys[0]
    for other in journeys[1:]:
        combine(everything, other, rules)
        bounded(everything)
    touches = sets[0] + sets[1] + sets[2]
    latest = expected(touches)
    assert [(t.at, t.event_id) for t in everything.recent] == latest["recent"][: rules.max_recent]
    history = [(a.at, a.event_id, a.metric, a.score) for a in everything.answer_history]
    assert history == latest["answer_history"][: rules.max_answers]
    closes = sorted(((at, k) for k, at in latest["closed_cases"].items()), reverse=True)
    assert everything.closed_cases == {k: at for at, k in closes[: rules.max_closed_cases]}


def test_a_zero_bound_on_closed_cases_keeps_none() -> None:
    rules = JourneyRules(max_closed_cases=0)
    journey = journey_of([TouchFacts("e1", 10, "web", "case_closed", case_id="k1")], rules)
    assert journey.closed_cases == {}


def test_a_zero_bound_on_recent_touches_keeps_none() -> None:
    rules = JourneyRules(max_recent=0)
    assert journey_of([TouchFacts("e1", 10, "web", "login")], rules).recent == []


# --- 11. a closing event closes its case ------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    touches=touch_lists(),
    case=st.sampled_from(CASES),
    how=st.sampled_from([*sorted(DEFAULT_CASE_CLOSING_TYPES), "resolved"]),
    after=st.integers(0, 5),
)
def test_a_closing_event_at_or_after_the_last_contact_closes_the_open_case(
    touches: list[TouchFacts], case: str, how: str, after: int
) -> None:
    """A case-closing type (or ``resolved``) naming a case, no older than its last contact,
    removes it from the open cases and remembers when it closed; other cases stay as
    they were."""
    journey = journey_of(touches)
    last = max((t.at for t in touches), default=1)
    close = TouchFacts(
        "close",
        last + after,
        "web",
        "ticket_updated" if how == "resolved" else how,
        case_id=case,
        resolved=how == "resolved",
    )
    before = copy.deepcopy(journey)
    apply(journey, close, ROOMY)
    assert case not in journey.open_cases
    assert journey.closed_cases[case] == max(close.at, before.closed_cases.get(case, 0))
    others = {k: v for k, v in before.open_cases.items() if k != case}
    assert journey.open_cases == others


def test_a_ticket_resolved_closes_the_ticket_it_names() -> None:
    journey = journey_of(
        [
            TouchFacts("e1", 10, "email", "ticket_opened", case_id="k1"),
            TouchFacts("e2", 11, "call_center", "call", case_id="k1"),
            TouchFacts("e3", 12, "web", "chat", case_id="k2"),
        ]
    )
    assert journey.open_cases == {
        "k1": OpenCase(10, 11, 2, ["call_center", "email"]),
        "k2": OpenCase(12, 12, 1, ["web"]),
    }
    apply(journey, TouchFacts("e4", 13, "web", "ticket_resolved", case_id="k1"), ROOMY)
    assert journey.open_cases == {"k2": OpenCase(12, 12, 1, ["web"])}
    assert journey.closed_cases == {"k1": 13}
    # a late contact, older than the close, does not reopen it; a newer one does
    apply(journey, TouchFacts("e5", 12, "call_center", "call", case_id="k1"), ROOMY)
    assert "k1" not in journey.open_cases
    apply(journey, TouchFacts("e6", 14, "call_center", "call", case_id="k1"), ROOMY)
    assert journey.open_cases["k1"] == OpenCase(14, 14, 1, ["call_center"])


def test_a_closing_type_without_a_case_closes_nothing() -> None:
    journey = journey_of([TouchFacts("e1", 10, "web", "chat", case_id="k1")])
    apply(journey, TouchFacts("e2", 11, "web", "case_closed"), ROOMY)
    assert list(journey.open_cases) == ["k1"]
    assert journey.closed_cases == {}


# --- 12. compaction ---------------------------------------------------------------------------


@settings(max_examples=75, deadline=None)
@given(touches=touch_lists(), later=touch_lists(max_size=10))
def test_compact_drops_only_recent_touches_and_closed_cases(
    touches: list[TouchFacts], later: list[TouchFacts]
) -> None:
    """Compaction empties ``recent`` and ``closed_cases`` and keeps everything else; touches
    after it update counts, first and last seen, stage and answers as if it had not
    happened."""
    journey = journey_of(touches)
    kept = copy.deepcopy(journey)
    compact(journey)
    assert journey.recent == [] and journey.closed_cases == {}
    assert journey == Journey(
        first_seen=kept.first_seen,
        last_seen=kept.last_seen,
        touchpoints=kept.touchpoints,
        stage=kept.stage,
        stage_at=kept.stage_at,
        open_cases=kept.open_cases,
        answers=kept.answers,
        answer_history=kept.answer_history,
    )
    later = [TouchFacts(f"later-{t.event_id}", *_rest(t)) for t in later]
    for touch in later:
        apply(journey, touch, ROOMY)
        apply(kept, touch, ROOMY)
    names = ("first_seen", "last_seen", "touchpoints", "stage", "stage_at", "answers")
    for name in (*names, "answer_history"):
        assert getattr(journey, name) == getattr(kept, name), name


def _rest(t: TouchFacts) -> tuple[Any, ...]:
    return (
        t.at,
        t.channel,
        t.type,
        t.case_id,
        t.resolved,
        t.survey_metric,
        t.survey_score,
        t.survey_scale_max,
    )
