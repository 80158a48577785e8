"""The stitched customer as the stream keeps it: identity and journey, one table value.

A :class:`Customer` is stored as one JSON value per customer in the identity table
(``c/<customer_id>``); every identifier it owns has its own entry (``n/<kind>:<value>``)
pointing at it. Times are epoch milliseconds (UTC) so a value round-trips exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "Answer",
    "Behaviour",
    "Customer",
    "Fact",
    "FollowUp",
    "FollowupState",
    "Journey",
    "Merge",
    "OpenCase",
    "PastAnswer",
    "Refusal",
    "Risk",
    "Touch",
    "customer_from_json",
    "customer_to_json",
]


@dataclass(slots=True)
class Touch:
    """One touchpoint as the journey remembers it (the last N are kept)."""

    event_id: str
    at: int
    channel: str
    type: str
    case_id: str | None = None


@dataclass(slots=True)
class Answer:
    """A survey answer: score on its scale, when (event time) and which event."""

    score: float
    scale_max: int
    at: int
    event_id: str


@dataclass(slots=True)
class PastAnswer:
    """A survey answer in the customer's history (newest first)."""

    metric: str
    score: float
    at: int
    event_id: str


@dataclass(slots=True)
class OpenCase:
    """A support case that has contacts and no resolution yet."""

    opened_at: int
    last_at: int
    contacts: int
    channels: list[str]


@dataclass(slots=True)
class Journey:
    """What the customer did: counts, stage, open cases, latest answers, recent touches.

    ``stage`` is the stage of the latest event (by event time) whose type maps to one;
    ``stage_at`` is that event's time, so late events never move the stage backwards.
    """

    first_seen: int = 0
    last_seen: int = 0
    touchpoints: dict[str, int] = field(default_factory=dict)
    stage: str = ""
    stage_at: int = 0
    open_cases: dict[str, OpenCase] = field(default_factory=dict)
    closed_cases: dict[str, int] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)
    recent: list[Touch] = field(default_factory=list)
    #: the last answers of every metric, newest first (event time)
    answer_history: list[PastAnswer] = field(default_factory=list)


#: A follow-up fact, as stored: [at, event_id, kind, channel, case_id, queue, agent_id,
#: metric, score] (see ``streams.domain.followup``).
Fact = list[Any]


@dataclass(slots=True)
class FollowUp:
    """One follow-up: opened by the detractor answer ``id``, with what closed it."""

    id: str
    opened_at: int
    due_at: int
    channel: str
    metric: str
    score: float
    #: detractor answers it covers (the opening one and those that extended it)
    answers: int = 1
    #: the cases its answers were about (the resolution of any closes it)
    cases: list[str] = field(default_factory=list)
    #: ``customer.followup_overdue`` fired for it
    overdue: bool = False
    #: "" open, "contact", "resolution", or "merged" (went into another on a merge)
    how: str = ""
    closed_at: int | None = None
    closed_event_id: str | None = None
    closed_channel: str | None = None
    closed_queue: str | None = None
    closed_agent: str | None = None
    #: hand-overs it went through: rows written after one rank above any written before
    gen: int = 0

    @property
    def open(self) -> bool:
        return not self.how


@dataclass(slots=True)
class FollowupState:
    """A customer's follow-up state: facts not folded yet (event-time order), the open
    follow-up, and the event time up to which facts were folded."""

    pending: list[Fact] = field(default_factory=list)
    open: FollowUp | None = None
    folded_to: int = 0

    @property
    def idle(self) -> bool:
        return not self.pending and self.open is None


@dataclass(slots=True)
class Behaviour:
    """Exponentially time-decayed sums of the customer's assisted-contact signals
    (``streams.domain.risk``): each value is the sum of its contributions weighted by
    ``2 ** -((ref - at) / half-life)``, held at the reference time ``ref`` (epoch ms, the
    latest contribution's event time). Adding is a sum, so any order of contacts and any
    combination of two customers give the same values. ``last_contact_at`` is the latest
    assisted contact's event time (0: none)."""

    ref: int = 0
    values: list[float] = field(default_factory=list)
    last_contact_at: int = 0
    #: per case: ``[ref, repeats, switches]``, the case's decayed repeat and switch flags
    #: held at its latest contact (they change with the rest of the case)
    cases: dict[str, list[float]] = field(default_factory=dict)


@dataclass(slots=True)
class Risk:
    """The customer's detractor risk as last scored (``streams.domain.risk``): the
    probability, its band, the event time it was scored at, the model's version, and
    whether it is above the at-risk threshold (armed again once it falls below the
    re-arm level)."""

    p: float
    band: str
    at: int
    model: str
    above: bool = False


@dataclass(slots=True)
class Customer:
    """A customer as its partition keeps it: identity (as the resolver last said) and
    journey.

    ``identifiers`` maps kind to the values it owns, in the order they joined.
    ``absorbed`` lists every customer id that was merged into this one (directly or
    through an earlier merge). ``seq`` is the resolver's sequence number of the last
    item applied to it. ``merged_in`` maps every customer whose state was combined into
    this one (directly or through them) to the sequence number of its merge, so a
    hand-over delivered twice is combined once. ``cases`` lists the ids of its cases
    that have contacts stored (oldest first). ``behaviour`` and ``risk`` feed and hold
    the detractor score (values stored before they existed load without them).
    ``followup`` is its closed-loop follow-up state.
    """

    customer_id: str
    identifiers: dict[str, list[str]] = field(default_factory=dict)
    absorbed: list[str] = field(default_factory=list)
    seq: int = -1
    journey: Journey = field(default_factory=Journey)
    merged_in: dict[str, int] = field(default_factory=dict)
    cases: list[str] = field(default_factory=list)
    #: decayed assisted-contact signals, the behaviour the detractor model reads
    behaviour: Behaviour = field(default_factory=Behaviour)
    #: the latest detractor risk (None until scored)
    risk: Risk | None = None
    #: closed-loop follow-up of its detractor answers (None: never had one)
    followup: FollowupState | None = None

    def count(self, kind: str) -> int:
        return len(self.identifiers.get(kind, ()))

    def has(self, kind: str, value: str) -> bool:
        return value in self.identifiers.get(kind, ())

    def nodes(self) -> list[tuple[str, str]]:
        """Every (kind, value) this customer owns."""
        return [(kind, value) for kind, values in self.identifiers.items() for value in values]


@dataclass(frozen=True, slots=True)
class Merge:
    """``merged_from`` was absorbed into ``merged_into``; ``redirected`` are all ids that
    now point to ``merged_into`` (``merged_from`` and everything it had absorbed)."""

    merged_from: str
    merged_into: str
    reason: str
    event_id: str
    at: int
    redirected: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A link a guard refused: ``kind`` of the event's identifier, and why."""

    event_id: str
    kind: str
    value: str
    customer_id: str
    other_customer_id: str
    reason: str  # "limit:<kind>" or "unique:<kind>"


def customer_to_json(customer: Customer) -> bytes:
    """Serialise for the table (orjson writes dataclasses natively)."""
    return orjson.dumps(customer)


def customer_from_json(data: bytes | str) -> Customer:
    """Read back what :func:`customer_to_json` wrote."""
    raw: dict[str, Any] = orjson.loads(data)
    j = raw["journey"]
    journey = Journey(
        first_seen=j["first_seen"],
        last_seen=j["last_seen"],
        touchpoints=j["touchpoints"],
        stage=j["stage"],
        stage_at=j["stage_at"],
        open_cases={k: OpenCase(**v) for k, v in j["open_cases"].items()},
        closed_cases=j["closed_cases"],
        answers={k: Answer(**v) for k, v in j["answers"].items()},
        recent=[
            Touch(t["event_id"], t["at"], t["channel"], t["type"], t["case_id"])
            for t in j["recent"]
        ],
        answer_history=[
            PastAnswer(a["metric"], a["score"], a["at"], a["event_id"])
            for a in j.get("answer_history", ())
        ],
    )
    return Customer(
        customer_id=raw["customer_id"],
        identifiers=raw["identifiers"],
        absorbed=raw["absorbed"],
        seq=raw["seq"],
        journey=journey,
        merged_in=raw.get("merged_in") or {},
        cases=raw.get("cases") or [],
        behaviour=Behaviour(**raw["behaviour"]) if raw.get("behaviour") else Behaviour(),
        risk=Risk(**raw["risk"]) if raw.get("risk") else None,
        followup=_followup_from_json(raw.get("followup")),
    )


def _followup_from_json(value: dict[str, Any] | None) -> FollowupState | None:
    if value is None:
        return None
    opened = value.get("open")
    return FollowupState(
        [list(f) for f in value.get("pending", ())],
        None if opened is None else FollowUp(**opened),
        value.get("folded_to", 0),
    )
