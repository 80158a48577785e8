"""Realistic synthetic touchpoints: customers who move across channels over days.

Deterministic: the same configuration gives the same bytes, every run (one seeded
``random.Random``, no wall clock). What it produces, in event-time order:

* anonymous web visits (``anonymous_id`` only) that later log in, showing the cookie
  together with an ``account_id`` and e-mail, which is what stitches them;
* app sessions from devices whose clocks are off (``sent_at`` carries the skew);
* e-mail opens and clicks, SMS, push; purchases (web, app, store) with ``commerce``;
* support cases (``case_id``) over call centre, chat, e-mail and tickets, with
  waits, transfers, escalations and resolutions, and repeat contacts;
* survey answers: relationship NPS/CSAT where the survey reaches the customer (the
  survey tool, e-mail, the app, SMS), and post-contact surveys (NPS, CSAT, CES) on the
  channel of the case's last contact (an IVR survey after a call, a chat rating);
  high-effort cases give more detractors (``answers="effort"``, the default), or, with
  ``answers="independent"``, answers from another model than the effort points: a
  temperament of each customer plus the case's total wait and time to resolution;
* optionally a scripted incident: for a while, the answers given on one channel fall
  (and, on an assisted channel, its contacts wait long and are transferred): what the
  alerts must notice;
* a shared family tablet (one ``device_id`` for several customers) and a call-centre
  placeholder phone number shown by many customers: links a stitcher must refuse;
* closed-loop follow-up: a detractor answer is followed by an outbound call or e-mail
  from the company, promptly (within 36 hours) for half of them, late (after 54 to 120
  hours) for a quarter, never for the rest; the customer's next answer is better after
  a prompt follow-up, a little after a late one, and worse after none. These come from
  a random stream of their own, so turning them off (``followups=False``) leaves every
  other event as it was, apart from the answers they affect;
* optionally a share of deliberately broken messages (each labelled with why) and
  of re-sent duplicates.

``benchmark_events`` is a faster, simpler stream of about 300-byte valid events,
Zipf-distributed over the customers, for throughput measurements.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

__all__ = [
    "ANSWER_MODELS",
    "BAD_KINDS",
    "GeneratedMessage",
    "GeneratorConfig",
    "Incident",
    "PublishStats",
    "benchmark_events",
    "generate",
    "publish",
]

TOPIC_PREFIX = "touchpoints."
PLACEHOLDER_PHONE = "+44 20 7946 0000"
SHARED_TABLET = "dev-family-tablet-0001"
REGIONS = ("eu-west", "eu-central", "uk", "us-east", "us-west", "apac")
PRODUCTS = ("broadband", "mobile", "tv", "energy", "insurance")
SEGMENTS = ("consumer", "smb", "premium")
LOCALES = ("en-GB", "de-DE", "fr-FR", "en-US", "es-ES")
QUEUES = ("billing", "technical", "sales", "retention")

#: The kinds of deliberately broken messages, each violating one rule of the contract.
BAD_KINDS = (
    "not_json",
    "not_utf8",
    "not_object",
    "missing_field",
    "no_usable_identifier",
    "score_out_of_range",
    "invalid_timestamp",
    "channel_mismatch",
    "too_large",
    "too_many_identifiers",
)


#: How survey answers are drawn (``GeneratorConfig.answers``): ``effort`` from the hardship
#: of the case the answer is about (the switches, transfers, escalations, long waits and
#: extra contacts the effort points also count); ``independent`` from another model,
#: which shares only the waiting with the points, see :meth:`_Journeys._independent_hardship`.
ANSWER_MODELS = ("effort", "independent")

#: What an incident adds to the effort behind an answer given on its channel (the
#: answers then come from the hardest journeys: mostly detractors).
INCIDENT_EFFORT = 6
#: How a detractor hears back: (share, earliest, latest hours after the answer); the
#: rest never do.
FOLLOW_UPS = {"prompt": (0.5, 1.0, 36.0), "late": (0.25, 54.0, 120.0)}
#: What a follow-up does to the customer's next answer, in NPS points (CSAT and CES move
#: by the same share of their scale); "never" is a detractor nobody called back.
FOLLOW_UP_EFFECT = {"prompt": 2.0, "late": 0.6, "never": -1.0}
_NO_CALL_BACK_AFTER = timedelta(hours=48)


@dataclass(frozen=True)
class Incident:
    """A service incident on one channel, from ``begins`` (a fraction of the span) for
    ``lasts``: the answers given on it fall well below the usual, and its contacts (on
    an assisted channel) wait long and are often transferred."""

    channel: str = "mobile_app"
    begins: float = 0.6
    lasts: timedelta = timedelta(days=3)


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. ``span`` spreads events over event time from ``start``."""

    seed: int = 7
    events: int = 10_000
    customers: int = 1_000
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    span: timedelta = timedelta(days=14)
    zipf_exponent: float = 1.1
    bad_share: float = 0.0
    duplicate_share: float = 0.0
    incident: Incident | None = None
    #: the shared family tablet and the call-centre placeholder phone: links a stitcher
    #: must refuse (off when a test needs identity to equal the connected components)
    link_traps: bool = True
    #: detractors hear back (an outbound call or e-mail), promptly, late or never
    followups: bool = True
    #: how answers are drawn (:data:`ANSWER_MODELS`); ``independent`` draws from a random
    #: stream of its own, so the touchpoints are those of ``effort`` and only the scores
    #: differ
    answers: str = "effort"

    def __post_init__(self) -> None:
        if self.answers not in ANSWER_MODELS:
            raise ValueError(f"answers must be one of {ANSWER_MODELS}, not {self.answers!r}")

    def in_incident(self, channel: str, when: datetime) -> bool:
        """Whether a contact on ``channel`` at ``when`` is hit by the incident."""
        incident = self.incident
        if incident is None or channel != incident.channel:
            return False
        begins = self.start + self.span * incident.begins
        return begins <= when < begins + incident.lasts


@dataclass(frozen=True, slots=True)
class GeneratedMessage:
    """One Kafka message to publish; ``kind`` is ``valid``, ``duplicate`` or ``bad:<reason>``."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    kind: str
    #: Kafka record timestamp (epoch ms): the true moment a producer with a skewed clock
    #: sent it, so ingest can measure the skew; None lets the producer stamp it
    timestamp_ms: int | None = None


@dataclass
class _Customer:
    index: int
    email: str
    phone: str
    account_id: str
    anonymous_id: str
    device_id: str
    loyalty_id: str | None
    crm_id: str | None
    region: str
    product: str
    segment: str
    locale: str
    logged_in: bool = False
    open_case: str | None = None
    case_contacts: int = 0
    case_effort: int = 0
    case_channel: str | None = None
    #: a follow-up call scheduled, or the outcome of the last follow-up and from when it
    #: shows in the next answer
    call_scheduled: bool = False
    followed_up: str | None = None
    followed_up_at: datetime | None = None
    #: when the open case began and its contacts' total wait (the independent answers)
    case_opened: datetime | None = None
    case_wait_s: float = 0.0


def _zipf_weights(n: int, exponent: float) -> list[float]:
    weights = [1.0 / (rank**exponent) for rank in range(1, n + 1)]
    return list(itertools.accumulate(weights))


def _customers(rng: random.Random, n: int, link_traps: bool = True) -> list[_Customer]:
    people = []
    for i in range(n):
        # spellings vary (spaces, national formats); every one is a valid number
        national = rng.randrange(10**8)
        phone = (
            f"+49 151 {national:08d}"
            if i % 3 == 0
            else f"+49 1512 {national % 10**7:07d}"
            if i % 3 == 1
            else f"+1 415 555 {national % 10**4:04d}"
        )
        tld = "com" if i % 2 else "org"
        people.append(
            _Customer(
                index=i,
                # some producers send mixed case; normalisation makes them equal
                email=f"{'Customer' if i % 5 == 0 else 'customer'}.{i}@example.{tld}",
                phone=phone,
                account_id=f"acc-{i:07d}",
                anonymous_id=f"anon-{rng.getrandbits(64):016x}",
                device_id=(
                    SHARED_TABLET
                    if i % 97 == 0 and link_traps
                    else f"dev-{rng.getrandbits(48):012x}"
                ),
                loyalty_id=f"loy-{i:07d}" if i % 4 == 0 else None,
                crm_id=f"crm-{i:07d}" if i % 6 == 0 else None,
                region=rng.choice(REGIONS),
                product=rng.choice(PRODUCTS),
                segment=rng.choice(SEGMENTS),
                locale=rng.choice(LOCALES),
            )
        )
    return people


def _timestamp(rng: random.Random, when: datetime) -> Any:
    """occurred_at in the spellings producers use: Z, another offset, or epoch ms."""
    roll = rng.random()
    if roll < 0.6:
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if roll < 0.8:
        return when.astimezone(_OFFSETS[rng.randrange(len(_OFFSETS))]).isoformat(
            timespec="milliseconds"
        )
    return int(when.timestamp() * 1000)


_OFFSETS = tuple(timezone(timedelta(hours=h)) for h in (-5, -8, 1, 2, 5.5, 9))


class _Journeys:
    """Chooses the next touchpoint of a customer from what happened to them so far."""

    def __init__(self, rng: random.Random, config: GeneratorConfig) -> None:
        self.rng = rng
        self.config = config
        self.case_seq = 0
        #: follow-ups draw from their own stream: the main one stays as it was
        self.follow_rng = random.Random(config.seed * 7919 + 1)
        #: call-backs to make: (when, sequence, customer index, "prompt" or "late")
        self.scheduled: list[tuple[datetime, int, int, str]] = []
        self.calls = 0
        # a stream of its own, so that independent answers leave every other draw as it is
        self.answers_rng = random.Random(f"answers-{config.seed}")
        self.temperament: dict[int, float] = {}

    def call_back(self, c: _Customer, when: datetime, outcome: str, event_id: str) -> Any:
        """The company's outbound call or e-mail to a detractor."""
        rng = self.follow_rng
        c.call_scheduled = False
        c.followed_up, c.followed_up_at = outcome, when
        interaction: dict[str, Any] = {
            "direction": "outbound",
            "queue": rng.choice(("retention", "retention", "billing", "technical")),
            "agent_id": f"agent-{rng.randrange(200):03d}",
        }
        if rng.random() < 0.7:
            interaction["handle_seconds"] = round(rng.uniform(120, 900), 1)
            channel, type_ = "call_center", "call"
            identifiers = {"phone": c.phone, "account_id": c.account_id}
        else:
            channel, type_, identifiers = "email", "email_sent", {"email": c.email}
        # its own time spelling: the main random stream is not drawn from
        stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return self._base(
            c, when, event_id, channel, type_, identifiers, stamp=stamp, interaction=interaction
        )

    def _schedule_follow_up(self, c: _Customer, when: datetime) -> None:
        if not self.config.followups or c.call_scheduled:
            return  # one call back covers the answers before it
        roll = self.follow_rng.random()
        for outcome, (share, earliest, latest) in FOLLOW_UPS.items():
            if roll < share:
                at = when + timedelta(hours=self.follow_rng.uniform(earliest, latest))
                self.calls += 1
                heapq.heappush(self.scheduled, (at, self.calls, c.index, outcome))
                c.call_scheduled = True
                return
            roll -= share
        c.followed_up, c.followed_up_at = "never", when + _NO_CALL_BACK_AFTER

    def _effect(self, c: _Customer, when: datetime) -> float:
        """What the last follow-up does to this answer (NPS points), once."""
        if c.followed_up is None or c.followed_up_at is None or when < c.followed_up_at:
            return 0.0
        effect = FOLLOW_UP_EFFECT[c.followed_up]
        c.followed_up = c.followed_up_at = None
        return effect

    def next_event(self, c: _Customer, when: datetime, event_id: str) -> dict[str, Any]:
        rng = self.rng
        if c.open_case is not None and rng.random() < 0.55:
            return self._support_contact(c, when, event_id)
        roll = rng.random()
        if not c.logged_in:
            if roll < 0.6:
                return self._base(
                    c,
                    when,
                    event_id,
                    "web",
                    rng.choice(("page_view", "search")),
                    {"anonymous_id": c.anonymous_id},
                )
            c.logged_in = True
            return self._base(
                c,
                when,
                event_id,
                "web",
                "login",
                {"anonymous_id": c.anonymous_id, "account_id": c.account_id, "email": c.email},
            )
        if roll < 0.22:
            return self._base(
                c,
                when,
                event_id,
                "web",
                rng.choice(("page_view", "search")),
                {"anonymous_id": c.anonymous_id, "account_id": c.account_id},
            )
        if roll < 0.40:
            return self._app(c, when, event_id)
        if roll < 0.52:
            return self._base(
                c,
                when,
                event_id,
                "email",
                rng.choice(("email_open", "email_click")),
                {"email": c.email},
            )
        if roll < 0.57:
            return self._base(c, when, event_id, "sms", "sms_delivered", {"phone": c.phone})
        if roll < 0.61:
            return self._base(c, when, event_id, "push", "push_open", {"device_id": c.device_id})
        if roll < 0.70:
            return self._purchase(c, when, event_id)
        if roll < 0.73:
            return self._base(
                c,
                when,
                event_id,
                "billing",
                "payment_failed",
                {"account_id": c.account_id},
                commerce={"amount": 42.0, "currency": "EUR"},
            )
        if roll < 0.77 and c.loyalty_id:
            return self._base(
                c,
                when,
                event_id,
                "store",
                "store_visit",
                {"loyalty_id": c.loyalty_id, "phone": c.phone},
            )
        if roll < 0.87:
            return self._open_case(c, when, event_id)
        # relationship surveys, answered where they reach the customer
        channel = rng.choice(("survey", "survey", "email", "mobile_app", "sms"))
        return self._survey(
            c,
            when,
            event_id,
            rng.choice(("nps", "csat")),
            effort=0,
            channel=channel,
        )

    def _base(
        self,
        c: _Customer,
        when: datetime,
        event_id: str,
        channel: str,
        type_: str,
        identifiers: dict[str, str],
        stamp: Any = None,
        **extra: Any,
    ) -> dict[str, Any]:
        document: dict[str, Any] = {
            "event_id": event_id,
            "occurred_at": _timestamp(self.rng, when) if stamp is None else stamp,
            "type": type_,
            "channel": channel,
            "identifiers": identifiers,
            "source": f"{channel}-service",
            "context": {
                "region": c.region,
                "product": c.product,
                "segment": c.segment,
                "locale": c.locale,
            },
        }
        document.update({k: v for k, v in extra.items() if v is not None})
        return document

    def _app(self, c: _Customer, when: datetime, event_id: str) -> dict[str, Any]:
        document = self._base(
            c,
            when,
            event_id,
            "mobile_app",
            self.rng.choice(("app_open", "screen_view", "search")),
            {"device_id": c.device_id, "account_id": c.account_id},
            session_id=f"s-{c.index}-{when:%Y%m%d}",
        )
        if self.rng.random() < 0.3:  # a device clock that is off by seconds to minutes
            skew = timedelta(seconds=self.rng.choice((-1, 1)) * self.rng.uniform(5, 600))
            document["occurred_at"] = (when + skew).isoformat(timespec="milliseconds")
            document["sent_at"] = (when + skew + timedelta(seconds=1)).isoformat(
                timespec="milliseconds"
            )
        return document

    def _purchase(self, c: _Customer, when: datetime, event_id: str) -> dict[str, Any]:
        channel = self.rng.choice(("web", "mobile_app", "store"))
        identifiers = {"account_id": c.account_id}
        if channel == "store":
            identifiers = {"loyalty_id": c.loyalty_id} if c.loyalty_id else {"phone": c.phone}
        return self._base(
            c,
            when,
            event_id,
            channel,
            "purchase",
            identifiers,
            commerce={
                "order_id": f"o-{event_id}",
                "amount": round(self.rng.uniform(5, 500), 2),
                "currency": self.rng.choice(("EUR", "GBP", "USD")),
            },
        )

    def _open_case(self, c: _Customer, when: datetime, event_id: str) -> dict[str, Any]:
        self.case_seq += 1
        c.open_case, c.case_contacts, c.case_effort = f"case-{self.case_seq:07d}", 0, 0
        c.case_channel, c.case_opened, c.case_wait_s = None, when, 0.0
        return self._support_contact(c, when, event_id)

    def _support_contact(self, c: _Customer, when: datetime, event_id: str) -> dict[str, Any]:
        rng = self.rng
        assert c.open_case is not None
        c.case_contacts += 1
        if c.case_contacts > 1 and rng.random() < 0.45:
            return self._close_case(c, when, event_id)
        channel = rng.choice(("call_center", "chat", "email", "support"))
        if c.case_channel and channel != c.case_channel:
            c.case_effort += 1  # a channel switch within the case
        c.case_channel = channel
        troubled = self.config.in_incident(channel, when)
        transferred = rng.random() < (0.7 if troubled else 0.25)
        escalated = rng.random() < 0.1
        wait = round(rng.expovariate(1 / (1200 if troubled else 120)), 1)
        c.case_wait_s += wait
        c.case_effort += int(transferred) + int(escalated) + int(wait > 300)
        identifiers = self._contact_identifiers(c, channel)
        type_ = {
            "call_center": "call",
            "chat": "chat",
            "email": "email_received",
            "support": "ticket_opened" if c.case_contacts == 1 else "ticket_updated",
        }[channel]
        return self._base(
            c,
            when,
            event_id,
            channel,
            type_,
            identifiers,
            case_id=c.open_case,
            interaction={
                "direction": "inbound",
                "queue": rng.choice(QUEUES),
                "agent_id": f"agent-{rng.randrange(200):03d}",
                "wait_seconds": wait,
                "handle_seconds": round(rng.uniform(60, 900), 1),
                "transferred": transferred,
                "escalated": escalated,
                "resolved": False,
            },
        )

    def _contact_identifiers(self, c: _Customer, channel: str) -> dict[str, str]:
        if channel == "call_center":
            placeholder = self.rng.random() < 0.08 and self.config.link_traps
            shown = {"phone": PLACEHOLDER_PHONE if placeholder else c.phone}
            if c.crm_id:
                shown["crm_id"] = c.crm_id
            return shown
        if channel == "email":
            return {"email": c.email}
        if channel == "sms":
            return {"phone": c.phone}
        if channel == "mobile_app":
            return {"device_id": c.device_id, "account_id": c.account_id}
        return {"account_id": c.account_id}

    def _close_case(self, c: _Customer, when: datetime, event_id: str) -> dict[str, Any]:
        # a case closed in two contacts without trouble is effortless
        case, effort = c.open_case, c.case_effort + c.case_contacts - 2
        c.open_case = None
        if self.rng.random() < 0.7:
            # the post-contact survey, on the channel of the last contact
            channel = c.case_channel or "support"
            return self._survey(
                c,
                when,
                event_id,
                self.rng.choice(("ces", "nps", "nps", "csat")),
                effort=effort,
                case_id=case,
                channel=channel,
            )
        return self._base(
            c,
            when,
            event_id,
            "support",
            "ticket_resolved",
            {"account_id": c.account_id},
            case_id=case,
            interaction={"resolved": True},
        )

    def _survey(
        self,
        c: _Customer,
        when: datetime,
        event_id: str,
        metric: str,
        *,
        effort: int,
        case_id: str | None = None,
        channel: str = "survey",
    ) -> dict[str, Any]:
        rng = self.rng
        incident = self.config.in_incident(channel, when)
        if incident:
            effort += INCIDENT_EFFORT
        hardship = min(1.0, effort / 6)  # high-effort journeys answer lower
        lift = self._effect(c, when) / 10  # a share of the scale
        score = _score(rng, metric, hardship, lift)
        if self.config.answers == "independent":
            # drawn after the default score, from the answers' own stream: the main
            # stream, and with it every touchpoint, stays as in the default model
            hardship = 1.0 if incident else self._independent_hardship(c, when, case_id)
            score = _score(self.answers_rng, metric, hardship, lift)
        if score <= (6 if metric == "nps" else 1):  # a detractor: hears back, or not
            self._schedule_follow_up(c, when)
        survey: dict[str, Any] = {"metric": metric, "score": score}
        if rng.random() < 0.2:
            survey["comment"] = rng.choice(
                ("quick and easy", "too many transfers", "waited too long", "great service", "meh")
            )
        identifiers = (
            {"email": c.email, "account_id": c.account_id}
            if channel == "survey"
            else self._contact_identifiers(c, channel)
        )
        return self._base(
            c,
            when,
            event_id,
            channel,
            "survey_response",
            identifiers,
            case_id=case_id,
            survey=survey,
        )

    def _independent_hardship(self, c: _Customer, when: datetime, case_id: str | None) -> float:
        """Hardship 0..1 behind an answer, mostly from what the effort points do not count: the
        customer's temperament (normal, drawn once per customer), and for an answer about
        a case the total wait of its contacts (full at 10 minutes) and its time to
        resolution (full at 2 days; the generator's cases mostly close within one), so
        that the case and the person weigh about the same. Switches, transfers,
        escalations and the number of contacts play no part, and the wait counts as a
        total, not a capped point a minute per contact."""
        temper = self.temperament.get(c.index)
        if temper is None:
            temper = self.temperament[c.index] = self.answers_rng.gauss(0.0, 1.0)
        hardship = 0.2 + 0.15 * temper
        if case_id is not None and c.case_opened is not None:
            resolution_days = (when - c.case_opened) / timedelta(days=1)
            hardship += 0.3 * min(1.0, c.case_wait_s / 600) + 0.3 * min(1.0, resolution_days / 2)
        return max(0.0, min(1.0, hardship))


def _score(rng: random.Random, metric: str, hardship: float, lift: float = 0.0) -> float:
    """An answer of ``metric`` from a customer whose journey's hardship is 0..1, moved by
    ``lift`` (a share of the scale: a follow-up's effect)."""
    if metric == "nps":
        return max(0, min(10, round(rng.gauss(8.2 - 5 * hardship + 10 * lift, 2.0))))
    if metric == "csat":
        return max(1, min(5, round(rng.gauss(4.2 - 2.5 * hardship + 4 * lift, 0.9))))
    return max(1, min(7, round(rng.gauss(5.8 - 3.5 * hardship + 6 * lift, 1.1))))


def _bad(kind: str, rng: random.Random, valid: dict[str, Any]) -> tuple[str, bytes]:
    """A broken variant of a valid event, violating exactly the rule ``kind`` names."""
    topic = TOPIC_PREFIX + str(valid["channel"])
    doc = dict(valid)
    if kind == "not_json":
        return topic, orjson.dumps(doc)[:-7]
    if kind == "not_utf8":
        return topic, b"\xff\xfe" + orjson.dumps(doc)[2:]
    if kind == "not_object":
        return topic, orjson.dumps([doc])
    if kind == "missing_field":
        doc.pop("event_id")
    elif kind == "no_usable_identifier":
        doc["identifiers"] = {"email": "null", "phone": "unknown", "device_id": "0000-0000"}
    elif kind == "score_out_of_range":
        doc["survey"] = {"metric": "nps", "score": 11}
    elif kind == "invalid_timestamp":
        doc["occurred_at"] = "yesterday"
    elif kind == "channel_mismatch":
        doc["channel"] = "sms" if valid["channel"] != "sms" else "web"
    elif kind == "too_large":
        doc["properties"] = {f"blob{i}": "x" * 4000 for i in range(20)}
    elif kind == "too_many_identifiers":
        doc["identifiers"] = {f"x_id{i}": f"v{i}" for i in range(25)}
    return topic, orjson.dumps(doc)


def generate(config: GeneratorConfig) -> Iterator[GeneratedMessage]:
    """The touchpoints of ``config.customers`` customers, in event-time order."""
    rng = random.Random(config.seed)
    people = _customers(rng, config.customers, config.link_traps)
    cumulative = _zipf_weights(config.customers, config.zipf_exponent)
    order = list(range(config.customers))
    rng.shuffle(order)  # popularity is not customer number
    journeys = _Journeys(rng, config)
    step = config.span / max(1, config.events)
    sent: list[GeneratedMessage] = []
    emitted = 0
    for i in range(config.events):
        when = config.start + step * i + timedelta(milliseconds=rng.randrange(1000))
        scheduled = journeys.scheduled
        while scheduled and scheduled[0][0] <= when:
            at, n, index, outcome = heapq.heappop(scheduled)
            document = journeys.call_back(people[index], at, outcome, f"fu-{config.seed}-{n:07d}")
            emitted += 1
            yield GeneratedMessage(
                TOPIC_PREFIX + document["channel"],
                next(iter(document["identifiers"].values())).encode(),
                orjson.dumps(document),
                (),
                "valid",
            )
        if sent and rng.random() < config.duplicate_share:
            again = sent[rng.randrange(len(sent))]
            emitted += 1
            yield GeneratedMessage(
                again.topic, again.key, again.value, again.headers, "duplicate", again.timestamp_ms
            )
            continue
        customer = people[order[rng.choices(range(config.customers), cum_weights=cumulative)[0]]]
        document = journeys.next_event(customer, when, f"ev-{config.seed}-{i:08d}")
        if rng.random() < config.bad_share:
            kind = BAD_KINDS[rng.randrange(len(BAD_KINDS))]
            topic, value = _bad(kind, rng, document)
            emitted += 1
            yield GeneratedMessage(topic, None, value, (), f"bad:{kind}")
            continue
        key = next(iter(document["identifiers"].values())).encode() if rng.random() < 0.5 else None
        headers: tuple[tuple[str, bytes], ...] = (
            (("producer", str(document["source"]).encode()),) if rng.random() < 0.3 else ()
        )
        if rng.random() < 0.5:
            document.pop("channel")  # optional: the topic names it
        # a producer whose clock is off says so in sent_at; the record time is the truth
        record_ms = (
            int((when + timedelta(seconds=1)).timestamp() * 1000) if "sent_at" in document else None
        )
        message = GeneratedMessage(
            TOPIC_PREFIX + _channel_of(document),
            key,
            orjson.dumps(document),
            headers,
            "valid",
            record_ms,
        )
        if len(sent) < 10_000:
            sent.append(message)
        emitted += 1
        yield message


def _channel_of(document: dict[str, Any]) -> str:
    if "channel" in document:
        return str(document["channel"])
    source = str(document["source"])
    return source.removesuffix("-service")


def benchmark_events(
    seed: int, count: int, customers: int, *, every_customer: bool = False
) -> Iterator[GeneratedMessage]:
    """About 300-byte valid events, Zipf (exponent 1.1) over ``customers``; fast. Every
    fourth is a call-centre contact on a case (effort), one in 20 a survey answer.

    With ``every_customer`` the first ``customers`` events show each customer once (in a
    random order) and only the rest follow the Zipf law, so the state holds the whole
    population; used to measure memory per customer.
    """
    rng = random.Random(seed)
    cumulative = _zipf_weights(customers, 1.1)
    channels = ("web", "mobile_app", "email", "call_center")
    start = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000)
    population = range(customers)
    picks: list[int] = []
    if every_customer:
        picks = rng.sample(population, min(count, customers))
    picks += rng.choices(population, cum_weights=cumulative, k=count - len(picks))
    for i, who in enumerate(picks):
        channel = channels[i % 4]
        document: dict[str, Any] = {
            "event_id": f"bench-{seed}-{i:09d}",
            "occurred_at": start + i * 50,
            "type": "page_view" if channel == "web" else "interaction",
            "identifiers": {
                "email": f"customer.{who}@example.com",
                "account_id": f"acc-{who:07d}",
                "device_id": f"dev-{who:09d}",
            },
            "source": f"{channel}-service",
            "session_id": f"s-{who}-{i // 1000}",
            "context": {"region": REGIONS[who % 6], "product": PRODUCTS[who % 5]},
            "properties": {"page": f"/catalogue/item/{i % 5000}", "ab": "b" if i % 2 else "a"},
        }
        if channel == "call_center":  # an assisted contact on a case: effort signals
            document["type"] = "call"
            document["case_id"] = f"case-{who}-{i // 20_000}"
            document["interaction"] = {"wait_seconds": i % 400, "transferred": i % 7 == 0}
            del document["properties"]
        elif i % 20 == 0:  # one event in 20 is a survey answer: the scores
            metric = ("nps", "csat", "ces")[(i // 20) % 3]
            document["type"] = "survey_response"
            low, high = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}[metric]
            document["survey"] = {"metric": metric, "score": low + (i // 60) % (high - low + 1)}
            del document["properties"]
        yield GeneratedMessage(
            TOPIC_PREFIX + channel, f"acc-{who:07d}".encode(), orjson.dumps(document), (), "valid"
        )


@dataclass
class PublishStats:
    """What was published: messages per topic and per kind, and how long it took."""

    per_topic: Counter[str] = field(default_factory=Counter)
    per_kind: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.per_topic.total()


async def publish(
    messages: Iterable[GeneratedMessage],
    bootstrap: str,
    *,
    rate: float | None = None,
    compression: str | None = None,
    linger_ms: int = 20,
    progress: Callable[[int], None] | None = None,
    progress_every: int = 10_000,
    producer_options: dict[str, Any] | None = None,
) -> PublishStats:
    """Send the messages with aiokafka, at most ``rate`` per second when given.

    Sends are pipelined (not awaited one by one); everything is flushed before it
    returns, so the stats count messages the broker acknowledged.
    """
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        compression_type=compression,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        acks="all",
        **(producer_options or {}),
    )
    await producer.start()
    stats = PublishStats()
    started = time.monotonic()
    pending: list[asyncio.Future[Any]] = []
    try:
        for n, message in enumerate(messages, 1):
            if rate:
                ahead = n / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            pending.append(
                await producer.send(
                    message.topic,
                    message.value,
                    key=message.key,
                    headers=list(message.headers) or None,
                    timestamp_ms=message.timestamp_ms,
                )
            )
            stats.per_topic[message.topic] += 1
            stats.per_kind[message.kind.split(":")[0]] += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
            if progress and n % progress_every == 0:
                progress(n)
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    stats.seconds = time.monotonic() - started
    return stats
