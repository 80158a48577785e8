"""What fires an alert (pure): significant score drops, detractors, effort spikes.

Every alert has an id derived from what fired it, so a batch replayed after a crash
fires the same ids again and the delivery ledger sends each one once:

* ``customer.detractor``: the answer's ``event_id``;
* ``customer.effort_spike``: the customer and the case (one alert per case);
* ``customer.at_risk``: the customer and the event (or hand-over) whose score crossed
  the threshold (one alert per crossing: ``streams.domain.risk``);
* ``customer.followup_overdue``: the follow-up, named by the detractor answer that
  opened it (``streams.domain.followup``);
* ``score.dropped``: the segment, the metric and the event-time minute it fired at;
  ``score.recovered``: the drop it ends.

Score drops compare a segment's score over the last ``window`` of event time with the
``baseline`` before it. With ``s`` the standard error of each side (its 95 % margin of
error over 1.96; for NPS the variance of CONTRACT section 2, for CSAT that of a share,
for CES and effort the sample variance of a mean), the worsening is
``z = (before - after) / sqrt(s_before^2 + s_after^2)`` (``after - before`` for the
effort index, where higher is worse). A drop fires when ``z`` reaches the critical value
of the confidence (1.96 at 95 %) with at least ``min_responses`` on both sides and the
segment's cooldown over; it is reported recovered once ``z`` falls under ``recover_z``
(hysteresis: one dip fires once, however long it lasts).
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.alert_rules import AtRiskRule, DetractorRule, EffortSpikeRule, ScoreDropRule
from schemas.alerts import Alert, alert_id, iso
from schemas.customer import Customer, FollowUp
from streams.domain.effort import Contact
from streams.domain.scores import Z95, Answer, Rolling, ScoreValue, Tally, value_of

__all__ = [
    "Comparison",
    "DropDetector",
    "at_risk_alert",
    "compare",
    "detractor_alert",
    "effort_spike_alert",
    "followup_overdue_alert",
    "is_detractor",
    "looks",
]

SeriesKey = tuple[str, str, str]
"""(segment_kind, segment_value, metric) of the rolling view."""


# --- Score drops ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """A window's score against its baseline's."""

    metric: str
    before: ScoreValue
    after: ScoreValue
    #: standard error of the difference
    se: float
    #: standard errors by which ``after`` is worse than ``before`` (negative: better)
    z: float

    @property
    def difference(self) -> float:
        assert self.after.value is not None and self.before.value is not None
        return self.after.value - self.before.value


def _standard_error(score: ScoreValue) -> float | None:
    return None if score.margin is None else score.margin / Z95


def compare(metric: str, before: Tally, after: Tally) -> Comparison | None:
    """How much worse ``after`` is than ``before``, in standard errors of the difference;
    ``None`` when either side has no score or no standard error (a mean of one answer)."""
    b, a = value_of(metric, before), value_of(metric, after)
    se_b, se_a = _standard_error(b), _standard_error(a)
    if b.value is None or a.value is None or se_b is None or se_a is None:
        return None
    se = math.hypot(se_b, se_a)
    worse = (a.value - b.value) if metric == "effort" else (b.value - a.value)
    if se > 0:
        z = worse / se
    elif worse:  # every answer alike on both sides, and different
        z = math.copysign(math.inf, worse)
    else:
        z = 0.0
    return Comparison(metric, b, a, se, z)


@dataclass(slots=True)
class DropState:
    """Where one segment and metric stands: in a drop or not, and since when."""

    dropped: bool = False
    drop_id: str = ""
    fired_at: int = 0  # event time of the last score.dropped (for the cooldown)


def looks(previous: int | None, end: int, step: int, limit: int) -> list[int]:
    """The event times to look at the scores at, up to ``end``: every ``step`` after the
    ``previous`` look, then ``end`` itself; the last ``limit`` of them at most (a clock far
    ahead must not cost a look per step). Nothing when ``end`` is not past ``previous``."""
    if previous is None:
        return [end]
    if end <= previous:
        return []
    first = previous + step
    count = max(0, (end - 1 - first) // step + 1)  # previous + k * step < end, k >= 1
    skip = max(0, count + 1 - limit)
    return [first + k * step for k in range(skip, count)] + [end]


def _between(starts: list[int], totals: list[tuple[int, ...]], low: int, high: int) -> Tally:
    """The sum of the buckets starting in [low, high), from the running totals
    (``totals[i]``: the sum of the first ``i`` of the sorted ``starts``)."""
    first, last = bisect_left(starts, low), bisect_left(starts, high)
    return Tally(*map(operator.sub, totals[last], totals[first]))


@dataclass(slots=True)
class DropDetector:
    """Significant drops and recoveries of the rolling scores, with hysteresis."""

    rule: ScoreDropRule
    states: dict[SeriesKey, DropState] = field(default_factory=dict)
    #: the states changed since the caller last persisted them
    changed: bool = False

    def watches(self, key: SeriesKey) -> bool:
        kind, _value, metric = key
        return kind in self.rule.segments and metric in self.rule.metrics

    def evaluate(
        self, rolling: Rolling, now_ms: int, keys: Iterable[SeriesKey], wall_ms: int
    ) -> list[Alert]:
        """Compare each watched series over the windows ending at ``now_ms`` (event time,
        the watermark) and return the alerts that fire."""
        return self.evaluate_looks(rolling, [now_ms], keys, wall_ms)

    def evaluate_looks(
        self, rolling: Rolling, ends: Sequence[int], keys: Iterable[SeriesKey], wall_ms: int
    ) -> list[Alert]:
        """:meth:`evaluate` at each of ``ends`` (ascending event times), in order. Window
        sums come from running totals over each series' sorted buckets, so a thousand
        looks cost little more than one."""
        rule = self.rule
        window_ms, baseline_ms = int(rule.window * 1000), int(rule.baseline * 1000)
        alerts = []
        for key in keys:
            if not self.watches(key):
                continue
            buckets = rolling.series.get(key, {})
            starts = sorted(buckets)
            totals: list[tuple[int, ...]] = [(0,) * 7]
            for at in starts:
                totals.append(tuple(map(operator.add, totals[-1], buckets[at].as_tuple())))
            for end in ends:
                middle = end - window_ms
                start = middle - baseline_ms
                before = _between(starts, totals, start, middle)
                after = _between(starts, totals, middle, end)
                alert = self._judge(key, before, after, start, middle, end, wall_ms)
                if alert is not None:
                    alerts.append(alert)
        alerts.sort(key=lambda a: a.data["after"]["to"])  # in event-time order
        return alerts

    def _judge(
        self,
        key: SeriesKey,
        before: Tally,
        after: Tally,
        start: int,
        middle: int,
        now_ms: int,
        wall_ms: int,
    ) -> Alert | None:
        rule = self.rule
        if min(before.responses, after.responses) < rule.min_responses:
            return None
        comparison = compare(key[2], before, after)
        if comparison is None:
            return None
        state = self.states.get(key) or DropState()
        cooled = not state.fired_at or now_ms - state.fired_at >= rule.cooldown * 1000
        if not state.dropped and comparison.z >= rule.z_critical and cooled:
            minute = now_ms - now_ms % 60_000
            state = DropState(True, alert_id("score.dropped", *key, minute), now_ms)
            fired, the_id, ends = "score.dropped", state.drop_id, ""
        elif state.dropped and comparison.z < rule.recover_z:
            fired, the_id = "score.recovered", alert_id("score.recovered", state.drop_id)
            ends = state.drop_id
            state = DropState(False, "", state.fired_at)
        else:
            return None
        self.states[key] = state
        self.changed = True
        return self._alert(fired, the_id, key, comparison, start, middle, now_ms, wall_ms, ends)

    def _alert(
        self,
        alert_type: str,
        the_id: str,
        key: SeriesKey,
        c: Comparison,
        start: int,
        middle: int,
        end: int,
        wall_ms: int,
        drop_id: str = "",
    ) -> Alert:
        kind, value, metric = key
        z_critical = self.rule.z_critical

        def side(score: ScoreValue, since: int, until: int) -> dict[str, Any]:
            return {
                "value": _round(score.value),
                "responses": score.responses,
                "margin": _round(score.margin),
                "from": iso(since),
                "to": iso(until),
            }

        data: dict[str, Any] = {
            "segment": {"kind": kind, "value": value},
            "metric": metric,
            "direction": "up" if metric == "effort" else "down",
            "before": side(c.before, start, middle),
            "after": side(c.after, middle, end),
            "difference": _round(c.difference),
            "margin_of_error": _round(z_critical * c.se),
            "z": _round(c.z) if math.isfinite(c.z) else None,
            "confidence": self.rule.confidence,
        }
        if drop_id:
            data["dropped_alert_id"] = drop_id
        return Alert(
            the_id, alert_type, f"{kind}:{value}:{metric}", wall_ms, (f"{kind}:{value}",), data
        )

    def to_json(self) -> bytes:
        return orjson.dumps(
            [[*key, s.dropped, s.drop_id, s.fired_at] for key, s in self.states.items()]
        )

    @classmethod
    def from_json(cls, rule: ScoreDropRule, raw: bytes | None) -> DropDetector:
        detector = cls(rule)
        for kind, value, metric, dropped, drop_id, fired_at in orjson.loads(raw or b"[]"):
            detector.states[(kind, value, metric)] = DropState(dropped, drop_id, fired_at)
        return detector


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- Customer alerts -----------------------------------------------------------------


def is_detractor(rule: DetractorRule, metric: str, score: float) -> bool:
    """NPS 0..6; CSAT and CES at most ``bottom_box`` (their scales start at 1)."""
    if metric not in rule.metrics:
        return False
    if metric == "nps":
        return score <= 6
    return score <= rule.bottom_box


def detractor_alert(
    rule: DetractorRule,
    answer: Answer,
    customer: Customer | None,
    case_points: Mapping[str, int],
    wall_ms: int,
) -> Alert | None:
    """A ``customer.detractor`` alert for a detractor answer, with the customer's recent
    journey (``case_points``: effort points of the customer's open cases)."""
    if not is_detractor(rule, answer.metric, answer.score):
        return None
    journey: dict[str, Any] = {}
    if customer is not None:
        j = customer.journey
        journey = {
            "stage": j.stage,
            "first_seen": iso(j.first_seen),
            "last_seen": iso(j.last_seen),
            "touchpoints": sum(j.touchpoints.values()),
            "channels": sorted(j.touchpoints),
            "recent": [
                {
                    "event_id": t.event_id,
                    "at": iso(t.at),
                    "channel": t.channel,
                    "type": t.type,
                    "case_id": t.case_id,
                }
                for t in j.recent[-rule.recent_touchpoints :][::-1]
            ]
            if rule.recent_touchpoints
            else [],
            "open_cases": [
                {
                    "case_id": case_id,
                    "opened_at": iso(c.opened_at),
                    "last_at": iso(c.last_at),
                    "contacts": c.contacts,
                    "channels": c.channels,
                    "effort_points": case_points.get(case_id, 0),
                }
                for case_id, c in sorted(j.open_cases.items())
            ],
            "latest_answers": {m: a.score for m, a in sorted(j.answers.items())},
        }
    data = {
        "customer_id": answer.customer_id,
        "event_id": answer.event_id,
        "metric": answer.metric,
        "score": float(answer.score),
        "scale_max": answer.scale_max,
        "channel": answer.channel,
        "occurred_at": iso(answer.at),
        "journey": journey,
    }
    return Alert(
        alert_id("customer.detractor", answer.event_id),
        "customer.detractor",
        answer.customer_id,
        wall_ms,
        tuple(f"{k}:{v}" for k, v in answer.segments),
        data,
        answer.customer_id,
    )


def most_within(times: Sequence[int], span_ms: int) -> int:
    """The most of ``times`` (sorted) that fit in any ``span_ms`` interval."""
    best, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] > span_ms:
            first += 1
        best = max(best, last - first + 1)
    return best


def effort_spike_alert(
    rule: EffortSpikeRule,
    customer_id: str,
    case_id: str,
    contacts: Sequence[Contact],
    segments: tuple[tuple[str, str], ...],
    wall_ms: int,
) -> Alert | None:
    """A ``customer.effort_spike`` alert when the case's contacts cross a threshold."""
    ordered = sorted(contacts, key=lambda c: (c.at, c.event_id))
    if not ordered:
        return None
    most = most_within([c.at for c in ordered], int(rule.within * 1000))
    points = sum(c.points for c in ordered)
    reasons = []
    if most >= rule.contacts:
        reasons.append("contacts")
    if rule.case_points_above is not None and points > rule.case_points_above:
        reasons.append("effort_points")
    if not reasons:
        return None
    data = {
        "customer_id": customer_id,
        "case_id": case_id,
        "reasons": reasons,
        "contacts_within": most,
        "within_seconds": rule.within,
        "case_effort_points": points,
        "contacts": [
            {
                "event_id": c.event_id,
                "at": iso(c.at),
                "channel": c.channel,
                "points": c.points,
                "repeat": c.repeat,
                "switch": c.switch,
                "transferred": c.transferred,
                "escalated": c.escalated,
                "unresolved": c.unresolved,
                "wait_seconds": c.wait_s,
            }
            for c in ordered
        ],
    }
    return Alert(
        alert_id("customer.effort_spike", customer_id, case_id),
        "customer.effort_spike",
        customer_id,
        wall_ms,
        tuple(f"{k}:{v}" for k, v in segments),
        data,
        customer_id,
    )


def at_risk_alert(
    rule: AtRiskRule,
    customer_id: str,
    cause: str,
    at: int,
    p: float,
    band: str,
    model: str,
    reasons: Sequence[Mapping[str, Any]],
    customer: Customer | None,
    wall_ms: int,
) -> Alert:
    """A ``customer.at_risk`` alert: the customer's detractor probability crossed the
    threshold at event ``cause`` (``merge:<id>`` for a hand-over), event time ``at``."""
    journey: dict[str, Any] = {}
    segments: tuple[str, ...] = ()
    if customer is not None:
        j = customer.journey
        journey = {
            "stage": j.stage,
            "last_seen": iso(j.last_seen),
            "touchpoints": sum(j.touchpoints.values()),
            "open_cases": sorted(j.open_cases),
            "latest_answers": {m: a.score for m, a in sorted(j.answers.items())},
        }
        segments = (f"journey_stage:{j.stage}",) if j.stage else ()
    data = {
        "customer_id": customer_id,
        "p_detractor": round(p, 4),
        "predicted_nps_band": band,
        "threshold": rule.threshold,
        "rearm_below": rule.rearm_below,
        "model_version": model,
        "reasons": [dict(r) for r in reasons],
        "event_id": cause,
        "occurred_at": iso(at),
        "journey": journey,
    }
    return Alert(
        alert_id("customer.at_risk", customer_id, cause),
        "customer.at_risk",
        customer_id,
        wall_ms,
        segments,
        data,
        customer_id,
    )


def followup_overdue_alert(customer_id: str, followup: FollowUp, wall_ms: int) -> Alert:
    """``customer.followup_overdue``: the follow-up opened by a detractor answer is past
    its due time (event time) with no outbound contact and no resolution of its case."""
    data = {
        "customer_id": customer_id,
        "followup_id": followup.id,
        "answer_event_id": followup.id,
        "metric": followup.metric,
        "score": float(followup.score),
        "channel": followup.channel,
        "opened_at": iso(followup.opened_at),
        "due_at": iso(followup.due_at),
        "answers": followup.answers,
        "case_ids": list(followup.cases),
    }
    return Alert(
        alert_id("customer.followup_overdue", followup.id),
        "customer.followup_overdue",
        customer_id,
        wall_ms,
        (f"channel:{followup.channel}",),
        data,
        customer_id,
    )
