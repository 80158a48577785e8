"""Journey state of one customer: pure functions over :class:`schemas.customer.Journey`.

Every update is by event time and commutes: applying the same touches in any order,
or combining two journeys in either direction, gives the same first and last seen,
counts per channel, stage, latest answers and their history, recent touches, closed
cases and set of
open cases with their last contact (up to the size bounds, which keep the most recent
entries). That is what lets two customers' journeys be combined on a merge, and late
events land where they belong. One exception: a case contacted again after it was
closed is open again, and if the close arrives late (after contacts older than it),
the reopened case's first contact, contact count and channels include those older
contacts; only its last contact is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.customer import Answer, Journey, OpenCase, PastAnswer, Touch

__all__ = [
    "DEFAULT_CASE_CLOSING_TYPES",
    "DEFAULT_STAGES",
    "JourneyRules",
    "TouchFacts",
    "apply",
    "combine",
    "compact",
]

#: Event type -> journey stage (configurable; the stage names are the defaults of the docs).
DEFAULT_STAGES: dict[str, str] = {
    # awareness: the company reaches someone who is not engaged yet
    "ad_click": "awareness",
    "email_open": "awareness",
    "email_click": "awareness",
    "social_mention": "awareness",
    "page_view": "awareness",
    # consideration: looking at offers
    "search": "consideration",
    "product_view": "consideration",
    "add_to_cart": "consideration",
    "quote_requested": "consideration",
    # purchase
    "checkout": "purchase",
    "purchase": "purchase",
    "order_placed": "purchase",
    # onboarding: first steps after buying or signing up
    "signup": "onboarding",
    "account_created": "onboarding",
    "activation": "onboarding",
    # usage
    "login": "usage",
    "app_open": "usage",
    "screen_view": "usage",
    "feature_used": "usage",
    "store_visit": "usage",
    "push_open": "usage",
    "sms_delivered": "usage",
    # support: an open problem
    "call": "support",
    "chat": "support",
    "email_received": "support",
    "ticket_opened": "support",
    "ticket_updated": "support",
    "transfer": "support",
    "ticket_resolved": "usage",
    # renewal
    "renewal": "renewal",
    "subscription_renewed": "renewal",
    "upgrade": "renewal",
    # churn risk
    "payment_failed": "churn_risk",
    "cancellation_requested": "churn_risk",
    "downgrade": "churn_risk",
    "unsubscribe": "churn_risk",
    "complaint": "churn_risk",
    # advocacy
    "referral": "advocacy",
    "review_posted": "advocacy",
}

#: Event types that close the case they name.
DEFAULT_CASE_CLOSING_TYPES: frozenset[str] = frozenset(
    {"ticket_resolved", "case_closed", "survey_response"}
)


@dataclass(frozen=True, slots=True)
class JourneyRules:
    """How touches become journey state, and how much of it a customer keeps."""

    stages: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STAGES))
    case_closing_types: frozenset[str] = DEFAULT_CASE_CLOSING_TYPES
    max_recent: int = 20
    max_open_cases: int = 20
    max_closed_cases: int = 50
    max_answers: int = 20


@dataclass(frozen=True, slots=True)
class TouchFacts:
    """What the journey needs from one accepted event (times in epoch ms, event time)."""

    event_id: str
    at: int
    channel: str
    type: str
    case_id: str | None = None
    resolved: bool | None = None
    survey_metric: str | None = None
    survey_score: float | None = None
    survey_scale_max: int | None = None


def apply(journey: Journey, touch: TouchFacts, rules: JourneyRules) -> None:
    """Add one touch to ``journey`` (in place)."""
    if journey.first_seen == 0 or touch.at < journey.first_seen:
        journey.first_seen = touch.at
    journey.last_seen = max(journey.last_seen, touch.at)
    journey.touchpoints[touch.channel] = journey.touchpoints.get(touch.channel, 0) + 1
    stage = rules.stages.get(touch.type)
    # ties at the same time are broken by stage name, so the order of arrival never matters
    if stage is not None and (touch.at, stage) > (journey.stage_at, journey.stage):
        journey.stage, journey.stage_at = stage, touch.at
    if touch.case_id is not None:
        _case_touch(journey, touch, rules)
    if touch.survey_metric is not None and touch.survey_score is not None:
        _answer(
            journey,
            touch.survey_metric,
            Answer(touch.survey_score, touch.survey_scale_max or 0, touch.at, touch.event_id),
        )
        _remember_answers(
            journey,
            [PastAnswer(touch.survey_metric, touch.survey_score, touch.at, touch.event_id)],
        )
    _remember_one(
        journey, Touch(touch.event_id, touch.at, touch.channel, touch.type, touch.case_id)
    )
    _bound(journey, rules)


def combine(into: Journey, other: Journey, rules: JourneyRules) -> None:
    """Fold ``other`` into ``into`` (in place), as if one customer had seen both."""
    if other.first_seen and (into.first_seen == 0 or other.first_seen < into.first_seen):
        into.first_seen = other.first_seen
    into.last_seen = max(into.last_seen, other.last_seen)
    for channel, count in other.touchpoints.items():
        into.touchpoints[channel] = into.touchpoints.get(channel, 0) + count
    if other.stage and (other.stage_at, other.stage) > (into.stage_at, into.stage):
        into.stage, into.stage_at = other.stage, other.stage_at
    for case_id, closed_at in other.closed_cases.items():
        into.closed_cases[case_id] = max(closed_at, into.closed_cases.get(case_id, closed_at))
    for case_id, case in other.open_cases.items():
        mine = into.open_cases.get(case_id)
        if mine is None:
            into.open_cases[case_id] = OpenCase(
                case.opened_at, case.last_at, case.contacts, list(case.channels)
            )
        else:
            mine.opened_at = min(mine.opened_at, case.opened_at)
            mine.last_at = max(mine.last_at, case.last_at)
            mine.contacts += case.contacts
            mine.channels = sorted(set(mine.channels) | set(case.channels))
    for case_id, closed_at in into.closed_cases.items():
        still_open = into.open_cases.get(case_id)
        if still_open is not None and still_open.last_at <= closed_at:
            del into.open_cases[case_id]
    for metric, answer in other.answers.items():
        _answer(into, metric, answer)
    _remember(into, other.recent)
    _remember_answers(into, other.answer_history)
    _bound(into, rules)


def compact(journey: Journey) -> None:
    """Drop what an idle customer does not need in hot state (ClickHouse keeps it all).

    Counts, stage, latest answers and their history, and open cases stay; the recent
    touches and the memory of closed cases go.
    """
    journey.recent = []
    journey.closed_cases = {}


def _case_touch(journey: Journey, touch: TouchFacts, rules: JourneyRules) -> None:
    case_id = touch.case_id
    assert case_id is not None
    closed_at = journey.closed_cases.get(case_id)
    if touch.type in rules.case_closing_types or touch.resolved:
        journey.closed_cases[case_id] = max(touch.at, closed_at or touch.at)
        case = journey.open_cases.get(case_id)
        if case is not None and case.last_at <= journey.closed_cases[case_id]:
            del journey.open_cases[case_id]
        return
    if closed_at is not None and touch.at <= closed_at:
        return  # a late contact of a case that is already closed
    case = journey.open_cases.get(case_id)
    if case is None:
        journey.open_cases[case_id] = OpenCase(touch.at, touch.at, 1, [touch.channel])
        return
    case.opened_at = min(case.opened_at, touch.at)
    case.last_at = max(case.last_at, touch.at)
    case.contacts += 1
    if touch.channel not in case.channels:
        case.channels = sorted({*case.channels, touch.channel})


def _answer(journey: Journey, metric: str, answer: Answer) -> None:
    current = journey.answers.get(metric)
    if current is None or (answer.at, answer.event_id) > (current.at, current.event_id):
        journey.answers[metric] = Answer(answer.score, answer.scale_max, answer.at, answer.event_id)


def _remember(journey: Journey, touches: list[Touch]) -> None:
    if not touches:
        return
    seen = {t.event_id for t in journey.recent}
    fresh = [t for t in touches if t.event_id not in seen]
    if fresh:
        merged = journey.recent + [
            Touch(t.event_id, t.at, t.channel, t.type, t.case_id) for t in fresh
        ]
        merged.sort(key=lambda t: (t.at, t.event_id), reverse=True)
        journey.recent = merged


def _remember_answers(journey: Journey, answers: list[PastAnswer]) -> None:
    seen = {a.event_id for a in journey.answer_history}
    fresh = [
        PastAnswer(a.metric, a.score, a.at, a.event_id) for a in answers if a.event_id not in seen
    ]
    if fresh:
        merged = journey.answer_history + fresh
        merged.sort(key=lambda a: (a.at, a.event_id), reverse=True)
        journey.answer_history = merged


def _remember_one(journey: Journey, touch: Touch) -> None:
    """:func:`_remember` for one touch: recent touches are kept newest first."""
    recent = journey.recent
    rank = (touch.at, touch.event_id)
    for i, seen in enumerate(recent):
        if seen.event_id == touch.event_id:
            return
        if (seen.at, seen.event_id) < rank:
            if any(t.event_id == touch.event_id for t in recent[i + 1 :]):
                return
            recent.insert(i, touch)
            return
    recent.append(touch)


def _bound(journey: Journey, rules: JourneyRules) -> None:
    if len(journey.recent) > rules.max_recent:
        del journey.recent[rules.max_recent :]
    if len(journey.answer_history) > rules.max_answers:
        del journey.answer_history[rules.max_answers :]
    if len(journey.open_cases) > rules.max_open_cases:
        keep = sorted(journey.open_cases.items(), key=lambda kv: (kv[1].last_at, kv[0]))
        journey.open_cases = dict(keep[len(keep) - rules.max_open_cases :])
    if len(journey.closed_cases) > rules.max_closed_cases:
        keep_closed = sorted(journey.closed_cases.items(), key=lambda kv: (kv[1], kv[0]))
        journey.closed_cases = dict(keep_closed[len(keep_closed) - rules.max_closed_cases :])
