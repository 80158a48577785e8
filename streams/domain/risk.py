"""Detractor risk: a customer's behaviour as a fixed feature vector, and its score (pure).

Only a few customers answer surveys. The model learns, from those who do, which
behaviour comes before a detractor answer, and scores every customer with it.

**Behaviour summary.** Each assisted contact (``streams.domain.effort``) adds its
signals to the customer's :class:`~schemas.customer.Behaviour`: one contact, and its
repeat, switch, transfer, escalation and unresolved flags and waiting minutes (at most
60), each weighted ``2 ** -(age / HALF_LIFE)`` (a week's half-life). The values are held
at a reference time (the latest contribution); adding a contribution or combining two
customers on a merge is a sum, so it gives the same values in any order (to the last
bits of a float). Repeat and switch flags depend on the rest of the case (a late
contact changes its successor's, a merge combines cases), so they are summed per case
and recomputed from the case's contacts whenever it changes: idempotent, so a replay
over a state persisted in part gives the same values too.

**Features** (:data:`FEATURES`, computed by :func:`features` from the customer's state
at event time ``t``, the customer's last seen event time in the stream):

* behaviour, decayed to ``t``: ``contacts``, ``repeats``, ``switches``, ``transfers``,
  ``escalations``, ``unresolved``, ``wait_minutes``;
* open cases: how many, the most contacts and the most channels of one, and of one
  case's assisted contacts the most effort points, transfers and escalations, and
  waiting minutes;
* recency (days, at most 90; 90 when never): since the last assisted contact and since
  the last survey answer; tenure since first seen (days, at most 365);
* volume and channel mix: ``log(1 + touchpoints)``, distinct channels, the shares of
  touchpoints on assisted channels, digital (web, app), messaging (e-mail, SMS, push)
  and billing;
* answers (the last 20 of any metric): how many, whether the latest was a detractor
  answer, its score on a 0..1 scale (0 when none), the share of detractor answers;
* the journey stage, one indicator per default stage.

**Model.** A logistic regression on standardised features (trained with scikit-learn by
``touchpoint model train``, never imported here), stored as a small JSON artifact
(:class:`Model`): feature names, means, scales, coefficients, intercept, band
thresholds, what it was trained on, and a version that is the hash of all that. The
stream scores with a dot product and the logistic function, so a replay or a restart
gives the same scores. The *reasons* of a score are the features that raise it most:
``coefficient * (x - mean) / scale``, the largest positive ones.

**At risk.** A customer is at risk when ``p`` reaches the threshold; it fires once per
crossing and is armed again only once ``p`` falls below the re-arm level (hysteresis:
:func:`crossing`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from schemas.alert_rules import DetractorRule
from schemas.customer import Behaviour, Customer, Risk
from streams.domain.alerts import is_detractor
from streams.domain.effort import DEFAULT_ASSISTED_CHANNELS, WEIGHTS, Contact

__all__ = [
    "FEATURES",
    "HALF_LIFE_MS",
    "SIGNALS",
    "AtRisk",
    "Model",
    "RiskRules",
    "add_contacts",
    "band_of",
    "combine_behaviour",
    "crossing",
    "decayed",
    "default_model",
    "features",
    "load_model",
    "note_case",
    "open_case_stats",
    "rescore",
    "signals_of",
]

DAY_MS = 86_400_000
#: Half-life of a contact's weight in the behaviour summary.
HALF_LIFE_MS = 7 * DAY_MS
#: The behaviour summary's values, in order.
SIGNALS: tuple[str, ...] = (
    "contacts",
    "repeats",
    "switches",
    "transfers",
    "escalations",
    "unresolved",
    "wait_minutes",
)
#: Waiting minutes one contact adds at most.
WAIT_CAP_MINUTES = 60.0
RECENCY_CAP_DAYS = 90.0
TENURE_CAP_DAYS = 365.0
#: The journey stages with an indicator (the default stage names).
STAGES: tuple[str, ...] = (
    "awareness",
    "consideration",
    "purchase",
    "onboarding",
    "usage",
    "support",
    "renewal",
    "churn_risk",
    "advocacy",
)
_DIGITAL = frozenset({"web", "mobile_app"})
_MESSAGING = frozenset({"email", "sms", "push"})
_SCALES = {"nps": (0.0, 10.0), "csat": (1.0, 5.0), "ces": (1.0, 7.0)}
_DETRACTOR = DetractorRule()

FEATURES: tuple[str, ...] = (
    *SIGNALS,
    "open_cases",
    "open_case_contacts",
    "open_case_channels",
    "open_case_points",
    "open_case_troubles",
    "open_case_wait_minutes",
    "days_since_contact",
    "days_since_answer",
    "tenure_days",
    "touchpoints_log",
    "channels",
    "share_assisted",
    "share_digital",
    "share_messaging",
    "share_billing",
    "answers",
    "last_answer_detractor",
    "last_answer_score",
    "detractor_share",
    *(f"stage_{s}" for s in STAGES),
)


# -- behaviour summary ---------------------------------------------------------------------


def _weight(age_ms: int) -> float:
    return math.pow(2.0, -age_ms / HALF_LIFE_MS)


def _add(b: Behaviour, at: int, signals: Sequence[float]) -> None:
    if len(b.values) != len(SIGNALS):
        b.values = [0.0] * len(SIGNALS)
    if at > b.ref:
        factor = _weight(at - b.ref) if b.ref else 0.0
        b.values = [v * factor for v in b.values]
        b.ref = at
    w = _weight(b.ref - at)
    b.values = [v + w * s for v, s in zip(b.values, signals, strict=True)]


def signals_of(c: Contact) -> tuple[float, ...]:
    """A contact's contribution to the summary (:data:`SIGNALS` order)."""
    return (
        1.0,
        float(c.repeat),
        float(c.switch),
        float(c.transferred),
        float(c.escalated),
        float(c.unresolved),
        min(WAIT_CAP_MINUTES, max(0.0, c.wait_s) / 60.0),
    )


_REPEAT, _SWITCH = SIGNALS.index("repeats"), SIGNALS.index("switches")


def add_contacts(b: Behaviour, changed: Iterable[tuple[Contact, int]], event_id: str) -> None:
    """Add the contact of the event ``event_id``, just applied to the customer, from
    what :meth:`CaseBook.apply` returned: its own signals but repeat and switch, which
    depend on the rest of its case and are kept per case (:func:`note_case`)."""
    for c, _before in changed:
        if c.event_id == event_id:
            signals = list(signals_of(c))
            signals[_REPEAT] = signals[_SWITCH] = 0.0
            _add(b, c.at, signals)
            b.last_contact_at = max(b.last_contact_at, c.at)


def note_case(b: Behaviour, case_id: str, contacts: Sequence[Contact]) -> None:
    """Recompute what the summary keeps of a case from its contacts as the case flags
    them now: ``[ref, repeats, switches, points, troubles, wait]``, the decayed repeat
    and switch sums held at the case's latest contact (``ref``), and the case's effort
    points, transfers and escalations, and waiting minutes (the open-case features, so
    that scoring an event does not walk every open case's contacts). Idempotent: a
    replay over a state persisted in part, a late contact that changed its successor's
    flags and a merge that combined the case all end up right."""
    if not contacts:
        b.cases.pop(case_id, None)
        return
    ref = max(c.at for c in contacts)
    repeats = switches = wait = 0.0
    points = troubles = 0
    for c in contacts:
        if c.repeat or c.switch:
            w = _weight(ref - c.at)
            repeats += w * c.repeat
            switches += w * c.switch
        points += _points(c)
        troubles += c.transferred + c.escalated
        wait += min(WAIT_CAP_MINUTES, c.wait_s / 60)
    b.cases[case_id] = [float(ref), repeats, switches, float(points), float(troubles), wait]


def open_case_stats(customer: Customer) -> list[list[float]]:
    """Effort points, transfers and escalations, and waiting minutes of each of the
    customer's open cases whose contacts it holds (as :func:`note_case` keeps them)."""
    held, kept = customer.cases, customer.behaviour.cases
    out = []
    for case_id in customer.journey.open_cases:
        entry = kept.get(case_id)
        if entry is not None and len(entry) >= 6 and case_id in held:
            out.append(entry[3:6])
    return out


def combine_behaviour(into: Behaviour, other: Behaviour) -> None:
    """Fold ``other`` into ``into`` (in place), as if one customer had made both's
    contacts; the cases both hold are recomputed by the caller (:func:`note_case`)
    once their contacts are combined."""
    if len(other.values) == len(SIGNALS):
        if len(into.values) != len(SIGNALS):
            into.values = [0.0] * len(SIGNALS)
        ref = max(into.ref, other.ref)
        mine, theirs = _weight(ref - into.ref), _weight(ref - other.ref)
        into.values = [
            a * mine + o * theirs for a, o in zip(into.values, other.values, strict=True)
        ]
        into.ref = ref
    into.last_contact_at = max(into.last_contact_at, other.last_contact_at)
    for case_id, entry in other.cases.items():
        into.cases.setdefault(case_id, list(entry))


def decayed(b: Behaviour, t: int) -> list[float]:
    """The summary's values at event time ``t`` (a contribution after ``t`` counts at its
    full weight: ``t`` is at least the latest event's time in practice)."""
    values = [0.0] * len(SIGNALS)
    if len(b.values) == len(SIGNALS):
        factor = _weight(max(0, t - b.ref))
        values = [v * factor for v in b.values]
    for ref, repeats, switches, *_open in b.cases.values():
        factor = _weight(max(0, t - int(ref)))
        values[_REPEAT] += repeats * factor
        values[_SWITCH] += switches * factor
    return [max(0.0, v) for v in values]


# -- features ------------------------------------------------------------------------------


_W_CONTACT, _W_REPEAT, _W_SWITCH = WEIGHTS["contact"], WEIGHTS["repeat"], WEIGHTS["switch"]
_W_TRANSFERRED, _W_ESCALATED = WEIGHTS["transferred"], WEIGHTS["escalated"]
_W_UNRESOLVED, _W_MINUTE, _W_WAIT_CAP = (
    WEIGHTS["unresolved"],
    WEIGHTS["wait_minute"],
    WEIGHTS["wait_cap"],
)


def _points(c: Contact) -> int:
    """:func:`streams.domain.effort.points`, with the weights bound once (it runs for
    every contact of every open case on every event; a test keeps the two equal)."""
    return (
        _W_CONTACT
        + _W_REPEAT * c.repeat
        + _W_SWITCH * c.switch
        + _W_TRANSFERRED * c.transferred
        + _W_ESCALATED * c.escalated
        + _W_UNRESOLVED * c.unresolved
        + min(_W_WAIT_CAP, int(c.wait_s // 60) * _W_MINUTE)
    )


def _days(since: int, t: int, cap: float) -> float:
    if not since:
        return cap
    return min(cap, max(0.0, (t - since) / DAY_MS))


def features(
    customer: Customer,
    t: int,
    assisted: frozenset[str] = DEFAULT_ASSISTED_CHANNELS,
    open_cases: Iterable[Sequence[float]] = (),
) -> list[float]:
    """The customer's feature vector at event time ``t`` (:data:`FEATURES` order);
    ``open_cases``: the effort points, transfers and escalations, and waiting minutes
    of the assisted contacts of each of its open cases (:func:`open_case_stats`)."""
    j = customer.journey
    x = decayed(customer.behaviour, t)
    cases = list(j.open_cases.values())
    most_points, most_troubles, most_wait = 0, 0, 0.0
    for case_points, troubles, wait in open_cases:
        most_points = max(most_points, int(case_points))
        most_troubles = max(most_troubles, int(troubles))
        most_wait = max(most_wait, wait)
    x += [
        float(len(cases)),
        float(max((c.contacts for c in cases), default=0)),
        float(max((len(c.channels) for c in cases), default=0)),
        float(most_points),
        float(most_troubles),
        most_wait,
        _days(customer.behaviour.last_contact_at, t, RECENCY_CAP_DAYS),
        _days(j.answer_history[0].at if j.answer_history else 0, t, RECENCY_CAP_DAYS),
        _days(j.first_seen, t, TENURE_CAP_DAYS) if j.first_seen else 0.0,
    ]
    total = on_assisted = digital = messaging = billing = 0
    for channel, n in j.touchpoints.items():  # one pass: this runs for every event
        total += n
        if channel in assisted:
            on_assisted += n
        if channel in _DIGITAL:
            digital += n
        elif channel in _MESSAGING:
            messaging += n
        elif channel == "billing":
            billing += n
    share = 1.0 / total if total else 0.0
    x += [
        math.log1p(total),
        float(len(j.touchpoints)),
        on_assisted * share,
        digital * share,
        messaging * share,
        billing * share,
    ]
    history = j.answer_history
    if history:
        detractors = sum(is_detractor(_DETRACTOR, a.metric, a.score) for a in history)
        latest = history[0]
        low, high = _SCALES.get(latest.metric, (0.0, 10.0))
        x += [
            float(len(history)),
            float(is_detractor(_DETRACTOR, latest.metric, latest.score)),
            min(1.0, max(0.0, (latest.score - low) / (high - low))),
            detractors / len(history),
        ]
    else:
        x += [0.0, 0.0, 0.0, 0.0]
    x += [float(j.stage == s) for s in STAGES]
    return x


# -- the model -----------------------------------------------------------------------------


def _logistic(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class Model:
    """A trained detractor model (logistic regression on standardised features).

    ``bands``: the lowest ``p`` of the ``detractor`` and ``passive`` bands (below the
    passive one: ``promoter``). ``trained``: what it was trained on (range, counts, seed,
    regularisation). ``version``: ``dm-`` and 16 hex digits of the SHA-256 of everything
    else, so the same data and seed give the same version.
    """

    features: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float
    bands: Mapping[str, float] = field(default_factory=lambda: {"detractor": 0.5, "passive": 0.25})
    trained: Mapping[str, Any] = field(default_factory=dict)
    version: str = ""

    def __post_init__(self) -> None:
        n = len(self.features)
        if not (len(self.means) == len(self.scales) == len(self.coefficients) == n):
            raise ValueError("a model needs a mean, a scale and a coefficient per feature")
        if tuple(self.features) != FEATURES:
            raise ValueError(
                "the model was trained on other features than this version computes "
                f"({n} features, expected {len(FEATURES)}): train it again"
            )
        if any(s <= 0 for s in self.scales):
            raise ValueError("feature scales must be positive")
        if not self.version:
            object.__setattr__(self, "version", self.content_version())

    def _body(self) -> dict[str, Any]:
        return {
            "kind": "touchpoint-detractor-model",
            "format": 1,
            "features": list(self.features),
            "means": list(self.means),
            "scales": list(self.scales),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
            "bands": dict(self.bands),
            "trained": dict(self.trained),
        }

    def content_version(self) -> str:
        digest = hashlib.sha256(orjson.dumps(self._body(), option=orjson.OPT_SORT_KEYS))
        return "dm-" + digest.hexdigest()[:16]

    def to_json(self) -> bytes:
        body = {"version": self.version, **self._body()}
        return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"

    @classmethod
    def from_json(cls, raw: bytes | str) -> Model:
        value = orjson.loads(raw)
        if value.get("kind") != "touchpoint-detractor-model" or value.get("format") != 1:
            raise ValueError("not a touchpoint detractor model (kind and format 1)")
        model = cls(
            tuple(value["features"]),
            tuple(float(v) for v in value["means"]),
            tuple(float(v) for v in value["scales"]),
            tuple(float(v) for v in value["coefficients"]),
            float(value["intercept"]),
            dict(value.get("bands") or {"detractor": 0.5, "passive": 0.25}),
            dict(value.get("trained") or {}),
        )
        if value.get("version") and value["version"] != model.version:
            raise ValueError(
                f"the model's version {value['version']} does not match its content "
                f"({model.version}): the file was edited"
            )
        return model

    def contributions(self, x: Sequence[float]) -> list[float]:
        """Each feature's term of the logit: ``coefficient * (x - mean) / scale``."""
        return [
            c * (v - m) / s
            for c, v, m, s in zip(self.coefficients, x, self.means, self.scales, strict=True)
        ]

    def probability(self, x: Sequence[float]) -> float:
        """The probability that the customer's next answer is a detractor answer: the
        logistic of ``intercept + sum(coefficient * (x - mean) / scale)``, computed as
        ``offset + sum(weight * x)`` with both folded once (it runs for every event)."""
        weights, offset = self._folded
        return _logistic(offset + math.fsum(map(operator.mul, weights, x)))

    @functools.cached_property
    def _folded(self) -> tuple[tuple[float, ...], float]:
        weights = tuple(c / s for c, s in zip(self.coefficients, self.scales, strict=True))
        offset = self.intercept - math.fsum(w * m for w, m in zip(weights, self.means, strict=True))
        return weights, offset

    def reasons(self, x: Sequence[float], top: int = 3) -> list[dict[str, Any]]:
        """The features that raise the score most (positive terms, largest first)."""
        terms = sorted(
            zip(self.contributions(x), self.features, x, strict=True),
            key=lambda t: (-t[0], t[1]),
        )
        return [
            {"feature": name, "value": round(v, 4), "contribution": round(c, 4)}
            for c, name, v in terms[:top]
            if c > 0
        ]


def band_of(model: Model, p: float) -> str:
    """``detractor``, ``passive`` or ``promoter``: the band the probability falls in."""
    if p >= model.bands.get("detractor", 0.5):
        return "detractor"
    if p >= model.bands.get("passive", 0.25):
        return "passive"
    return "promoter"


DEFAULT_MODEL = "detractor-v1.json"


def default_model() -> Model:
    """The model shipped with this version (trained on the demo's data, seed 7)."""
    raw = resources.files("streams").joinpath("models", DEFAULT_MODEL).read_bytes()
    return Model.from_json(raw)


def load_model(path: Path | None) -> Model:
    """The model at ``path``, or the shipped one."""
    return default_model() if path is None else Model.from_json(path.read_bytes())


# -- at risk -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RiskRules:
    """How customers are scored: the model, and the at-risk threshold with its re-arm
    level (below the threshold)."""

    model: Model
    threshold: float = 0.35
    rearm_below: float = 0.3
    reasons: int = 3
    assisted: frozenset[str] = DEFAULT_ASSISTED_CHANNELS


@dataclass(frozen=True, slots=True)
class AtRisk:
    """A customer whose score crossed the threshold: at which event (or hand-over) and
    event time, with the score, its band, the model and the reasons."""

    customer_id: str
    cause: str
    at: int
    p: float
    band: str
    model: str
    reasons: tuple[Mapping[str, Any], ...]


def crossing(above: bool, p: float, threshold: float, rearm_below: float) -> tuple[bool, bool]:
    """``(above now, fires)``: fires when ``p`` reaches ``threshold`` while armed (not
    above); above stays set until ``p`` falls below ``rearm_below``."""
    if not above:
        return (True, True) if p >= threshold else (False, False)
    return (p >= rearm_below, False)


def rescore(
    customer: Customer,
    rules: RiskRules,
    cause: str | None,
    open_cases: Iterable[Sequence[float]] = (),
) -> list[AtRisk]:
    """Score the customer at its last seen event time and keep the score in
    ``customer.risk``; the crossing it makes, when ``cause`` (the event or hand-over
    that changed it) is given and the score reaches the threshold while armed.
    ``open_cases``: what :func:`open_case_stats` gives (:func:`features`)."""
    model = rules.model
    t = customer.journey.last_seen
    x = features(customer, t, rules.assisted, open_cases)
    p = model.probability(x)
    band = band_of(model, p)
    before = customer.risk
    above, fires = crossing(
        before is not None and before.above, p, rules.threshold, rules.rearm_below
    )
    if cause is None:  # scored without an event: no crossing is noticed
        above, fires = (before is not None and before.above), False
    customer.risk = Risk(p, band, t, model.version, above)
    if not fires:
        return []
    reasons = tuple(model.reasons(x, rules.reasons))
    return [AtRisk(customer.customer_id, cause or "", t, p, band, model.version, reasons)]
