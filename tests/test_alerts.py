"""What fires an alert: significance against a naive reference, hysteresis, cooldown,
detractors and effort spikes."""

from __future__ import annotations

import math
import random
import statistics

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.alert_rules import DetractorRule, EffortSpikeRule, ScoreDropRule
from schemas.alerts import Alert
from schemas.customer import Customer, Journey, OpenCase, Touch
from streams.domain.alerts import (
    DropDetector,
    compare,
    detractor_alert,
    effort_spike_alert,
    is_detractor,
    looks,
)
from streams.domain.effort import Contact
from streams.domain.scores import Answer, Rolling, Tally, answer_tally, tally_answers

MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
SEGMENTS = (("all", "all"), ("channel", "web"))


def tally_of(metric: str, scores: list[float]) -> Tally:
    out = Tally()
    for score in scores:
        out.add(answer_tally(metric, score, 5 if metric == "csat" else None))
    return out


def naive_z(metric: str, before: list[float], after: list[float]) -> float | None:
    """The worsening in standard errors, from the raw answers (CONTRACT section 2)."""

    def value_and_variance(xs: list[float]) -> tuple[float, float] | None:
        n = len(xs)
        if metric == "nps":
            p = sum(x >= 9 for x in xs) / n
            d = sum(x <= 6 for x in xs) / n
            return 100 * (p - d), 100**2 * (p + d - (p - d) ** 2) / n
        if metric == "csat":
            share = sum(x >= 4 for x in xs) / n
            return 100 * share, 100**2 * share * (1 - share) / n
        if n < 2:
            return None
        return statistics.fmean(xs), statistics.variance(xs) / n

    b, a = value_and_variance(before), value_and_variance(after)
    if b is None or a is None:
        return None
    se = math.sqrt(b[1] + a[1])
    worse = (a[0] - b[0]) if metric == "effort" else (b[0] - a[0])
    if se == 0:
        return 0.0 if worse == 0 else math.copysign(math.inf, worse)
    return worse / se


scores_of = {
    "nps": st.integers(0, 10).map(float),
    "csat": st.integers(1, 5).map(float),
    "ces": st.integers(1, 7).map(float),
    "effort": st.integers(0, 100).map(float),
}


@given(st.data())
def test_the_z_of_a_drop_equals_the_naive_reference(data: st.DataObject) -> None:
    metric = data.draw(st.sampled_from(sorted(scores_of)))
    before = data.draw(st.lists(scores_of[metric], min_size=1, max_size=60))
    after = data.draw(st.lists(scores_of[metric], min_size=1, max_size=60))
    got = compare(metric, tally_of(metric, before), tally_of(metric, after))
    expected = naive_z(metric, before, after)
    if expected is None:
        assert got is None
        return
    assert got is not None
    if math.isinf(expected):
        assert got.z == expected
    else:
        assert got.z == pytest.approx(expected, rel=1e-9, abs=1e-9)


def rolling_with(metric: str, before: list[float], after: list[float], now: int) -> Rolling:
    """Answers spread over the baseline week before the last day, and over the last day."""
    rolling = Rolling(MINUTE, 36 * DAY)
    answers = [
        Answer(now - DAY - 1 - i * (6 * DAY // max(1, len(before))), metric, s, 5, SEGMENTS)
        for i, s in enumerate(before)
    ] + [
        Answer(now - 1 - i * (DAY // max(1, len(after)) - 1), metric, s, 5, SEGMENTS)
        for i, s in enumerate(after)
    ]
    rolling.add(tally_answers(answers, MINUTE))
    return rolling


RULE = ScoreDropRule(min_responses=20)
NOW = 1_800_000_000_000


@settings(max_examples=200)
@given(st.data())
def test_a_difference_within_the_margin_never_fires(data: st.DataObject) -> None:
    metric = data.draw(st.sampled_from(sorted(scores_of)))
    before = data.draw(st.lists(scores_of[metric], min_size=20, max_size=80))
    after = data.draw(st.lists(scores_of[metric], min_size=20, max_size=80))
    z = naive_z(metric, before, after)
    detector = DropDetector(RULE)
    alerts = detector.evaluate(
        rolling_with(metric, before, after, NOW), NOW, [("channel", "web", metric)], NOW
    )
    if z is not None and z < RULE.z_critical:
        assert alerts == []
    else:
        assert [a.type for a in alerts] == ["score.dropped"]


def test_a_significant_drop_fires_once_and_recovers_once() -> None:
    rng = random.Random(3)
    good = [float(rng.choice([9, 10, 10, 8, 7, 9])) for _ in range(200)]
    bad = [float(rng.choice([0, 3, 5, 6, 8, 9])) for _ in range(200)]
    detector = DropDetector(RULE)
    key = ("channel", "web", "nps")
    fired = []
    for step in range(5):  # the dip lasts: one alert
        now = NOW + step * MINUTE
        fired += detector.evaluate(rolling_with("nps", good, bad, now), now, [key], now)
    assert [a.type for a in fired] == ["score.dropped"]
    drop = fired[0]
    assert drop.data["before"]["responses"] == 200 and drop.data["after"]["responses"] == 200
    assert drop.data["difference"] < -drop.data["margin_of_error"] < 0
    assert drop.data["z"] >= RULE.z_critical
    assert drop.segments == ("channel:web",)
    recovered = []
    for step in range(5, 10):  # the window is back to the baseline: recovered, once
        now = NOW + step * MINUTE
        recovered += detector.evaluate(rolling_with("nps", good, good, now), now, [key], now)
    assert [a.type for a in recovered] == ["score.recovered"]
    assert recovered[0].data["dropped_alert_id"] == drop.id
    # a new dip inside the cooldown stays quiet; after it, fires again
    later = NOW + 10 * MINUTE
    assert detector.evaluate(rolling_with("nps", good, bad, later), later, [key], later) == []
    after_cooldown = NOW + int(RULE.cooldown * 1000) + MINUTE
    again = detector.evaluate(
        rolling_with("nps", good, bad, after_cooldown), after_cooldown, [key], after_cooldown
    )
    assert [a.type for a in again] == ["score.dropped"] and again[0].id != drop.id


def test_too_few_answers_on_either_side_never_fire() -> None:
    detector = DropDetector(ScoreDropRule(min_responses=30))
    rolling = rolling_with("nps", [10.0] * 100, [0.0] * 29, NOW)
    assert detector.evaluate(rolling, NOW, [("channel", "web", "nps")], NOW) == []


def test_effort_fires_when_it_rises_and_other_segments_are_not_watched() -> None:
    detector = DropDetector(ScoreDropRule(min_responses=20, segments=("channel",)))
    rolling = rolling_with("effort", [10.0, 20.0] * 30, [60.0, 80.0] * 30, NOW)
    alerts = detector.evaluate(
        rolling, NOW, [("channel", "web", "effort"), ("all", "all", "effort")], NOW
    )
    assert [(a.type, a.subject, a.data["direction"]) for a in alerts] == [
        ("score.dropped", "channel:web:effort", "up")
    ]
    falling = rolling_with("effort", [60.0, 80.0] * 30, [10.0, 20.0] * 30, NOW)
    assert DropDetector(RULE).evaluate(falling, NOW, [("channel", "web", "effort")], NOW) == []


def test_the_noise_fires_at_most_at_the_confidence_rate() -> None:
    """Same distribution on both sides: a one-sided 95 % test fires in about 2.5 % of
    independent trials."""
    rng = random.Random(11)
    trials, fired = 400, 0
    for _ in range(trials):
        before = [float(rng.randint(0, 10)) for _ in range(60)]
        after = [float(rng.randint(0, 10)) for _ in range(60)]
        detector = DropDetector(RULE)
        fired += bool(
            detector.evaluate(
                rolling_with("nps", before, after, NOW), NOW, [("channel", "web", "nps")], NOW
            )
        )
    assert fired / trials < 0.05


def test_the_detector_state_survives_a_round_trip() -> None:
    detector = DropDetector(RULE)
    good, bad = [10.0] * 50 + [9.0] * 50, [0.0] * 50 + [9.0] * 50
    fired = detector.evaluate(
        rolling_with("nps", good, bad, NOW), NOW, [("all", "all", "nps")], NOW
    )
    assert len(fired) == 1
    restored = DropDetector.from_json(RULE, detector.to_json())
    assert restored.states == detector.states
    later = NOW + MINUTE
    assert (
        restored.evaluate(
            rolling_with("nps", good, bad, later), later, [("all", "all", "nps")], later
        )
        == []
    )


# --- customer alerts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "score", "bottom_box", "expected"),
    [
        ("nps", 6, 1, True),
        ("nps", 7, 1, False),
        ("nps", 0, 1, True),
        ("csat", 1, 1, True),
        ("csat", 2, 1, False),
        ("csat", 2, 2, True),
        ("ces", 1, 1, True),
        ("ces", 1.5, 1, False),
        ("ces", 7, 1, False),
    ],
)
def test_who_is_a_detractor(metric: str, score: float, bottom_box: int, expected: bool) -> None:
    assert is_detractor(DetractorRule(bottom_box=bottom_box), metric, score) is expected


def test_a_detractor_alert_carries_the_recent_journey() -> None:
    journey = Journey(
        first_seen=NOW - DAY,
        last_seen=NOW,
        touchpoints={"web": 3, "call_center": 2},
        stage="support",
        open_cases={"case-1": OpenCase(NOW - HOUR, NOW, 2, ["call_center"])},
        recent=[Touch(f"e{i}", NOW - (5 - i) * MINUTE, "web", "page_view") for i in range(5)],
    )
    customer = Customer("cust-1", journey=journey)
    answer = Answer(NOW, "nps", 2.0, None, SEGMENTS, "ev-9", "cust-1", "web")
    alert = detractor_alert(
        DetractorRule(recent_touchpoints=3), answer, customer, {"case-1": 45}, NOW
    )
    assert alert is not None
    assert alert.type == "customer.detractor" and alert.subject == "cust-1"
    data = alert.data
    assert data["score"] == 2.0 and data["event_id"] == "ev-9"
    assert [t["event_id"] for t in data["journey"]["recent"]] == ["e4", "e3", "e2"]
    assert data["journey"]["open_cases"][0]["effort_points"] == 45
    assert data["journey"]["stage"] == "support"
    # the id follows the answer: a replay of the same answer fires the same alert
    again = detractor_alert(DetractorRule(), answer, None, {}, NOW + 5000)
    assert again is not None and again.id == alert.id
    promoter = Answer(NOW, "nps", 10.0, None, SEGMENTS, "ev-10", "cust-1", "web")
    assert detractor_alert(DetractorRule(), promoter, customer, {}, NOW) is None


def contact(event_id: str, at: int, **flags: bool) -> Contact:
    signals = {"transferred": False, "escalated": False, "unresolved": False, **flags}
    return Contact(
        event_id, at, "call_center", "cust-1", "case-1", "support", {}, wait_s=0.0, **signals
    )


def test_an_effort_spike_needs_the_contacts_within_the_span() -> None:
    rule = EffortSpikeRule(contacts=3, within="24h", case_points_above=None)
    spread = [contact("c1", NOW), contact("c2", NOW + 20 * HOUR), contact("c3", NOW + 40 * HOUR)]
    assert effort_spike_alert(rule, "cust-1", "case-1", spread, SEGMENTS, NOW) is None
    close = [*spread, contact("c4", NOW + 41 * HOUR)]
    alert = effort_spike_alert(rule, "cust-1", "case-1", close, SEGMENTS, NOW)
    assert alert is not None and alert.data["contacts_within"] == 3
    assert alert.data["reasons"] == ["contacts"]
    # one alert per customer and case, whatever contact tipped it
    more = effort_spike_alert(
        rule, "cust-1", "case-1", [*close, contact("c5", NOW + 42 * HOUR)], SEGMENTS, NOW
    )
    assert more is not None and more.id == alert.id


def test_an_effort_spike_on_the_case_points() -> None:
    rule = EffortSpikeRule(contacts=10, case_points_above=50)
    heavy = [
        contact("c1", NOW, escalated=True, repeat=True),
        contact("c2", NOW + DAY * 2, unresolved=True, switch=True),
    ]
    alert = effort_spike_alert(rule, "cust-1", "case-1", heavy, SEGMENTS, NOW)
    assert alert is not None and alert.data["reasons"] == ["effort_points"]
    assert alert.data["case_effort_points"] == sum(c.points for c in heavy) > 50


def test_an_alert_round_trips_through_its_kafka_message_and_has_the_contract_body() -> None:
    alert = Alert(
        "msg_1", "customer.detractor", "cust-1", NOW, ("channel:web",), {"k": [1, 2]}, "cust-1"
    )
    assert Alert.from_json(alert.to_json()) == alert
    body = orjson.loads(alert.body())
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "customer.detractor" and body["timestamp"].endswith("Z")


@given(
    st.none() | st.integers(0, 10_000),
    st.integers(0, 20_000),
    st.integers(1, 700),
    st.integers(1, 50),
)
def test_the_looks_are_every_step_after_the_previous_then_the_end(
    previous: int | None, end: int, step: int, limit: int
) -> None:
    if previous is None:
        expected = [end]
    elif end <= previous:
        expected = []
    else:
        expected = [*range(previous + step, end, step), end][-limit:]
    assert looks(previous, end, step, limit) == expected


def test_a_backlog_fires_what_a_live_stream_fires() -> None:
    """The same answers, looked at in one go at every step of event time (a backlog) or
    live, a look per step: the same alerts, with the same ids and numbers."""
    rng = random.Random(5)
    good = [float(rng.choice([9, 10, 10, 8, 7, 9])) for _ in range(200)]
    bad = [float(rng.choice([0, 3, 5, 6, 8, 9])) for _ in range(200)]
    rule = ScoreDropRule(window=3600, baseline=6 * 3600, min_responses=20, cooldown=3600)
    key = ("channel", "web", "nps")
    rolling = Rolling(MINUTE, 30 * DAY)
    start = NOW - 12 * HOUR
    for i, score in enumerate(good + bad + good):  # a dip in the middle
        at = start + i * 90_000
        rolling.add({(at - at % MINUTE, *key): answer_tally("nps", score, None)})
    end = start + 600 * 90_000
    live, backlog = DropDetector(rule), DropDetector(rule)
    fired_live = []
    for look in range(start, end, 5 * MINUTE):
        fired_live += live.evaluate(rolling, look, [key], look)
    ends = looks(start - 5 * MINUTE, end - 1, 5 * MINUTE, 1000)[:-1]  # one batch, many looks
    fired_backlog = backlog.evaluate_looks(rolling, ends, [key], end)
    assert [a.type for a in fired_live] == ["score.dropped", "score.recovered"]
    assert [(a.id, a.type, a.data) for a in fired_backlog] == [
        (a.id, a.type, a.data) for a in fired_live
    ]
