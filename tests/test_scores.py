"""Score tallies, formulas, rolling windows and watermarks against naive references."""

from __future__ import annotations

import math
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.scores import (
    Answer,
    Rolling,
    Tally,
    Watermarks,
    answer_tally,
    bucket_of,
    segments_of,
    tally_answers,
    value_of,
)

MINUTE = 60_000
DAY = 86_400_000

nps_scores = st.integers(0, 10).map(float)
# CSAT and CES may be fractional; producers send at most three decimals that matter
csat_scores = st.integers(1000, 5000).map(lambda m: m / 1000)
ces_scores = st.integers(1000, 7000).map(lambda m: m / 1000)


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    metric = draw(st.sampled_from(("nps", "csat", "ces")))
    score = draw({"nps": nps_scores, "csat": csat_scores, "ces": ces_scores}[metric])
    channel = draw(st.sampled_from(("web", "call_center", "chat")))
    stage = draw(st.sampled_from(("", "support", "usage")))
    context = draw(
        st.dictionaries(st.sampled_from(("region", "product")), st.just("x"), max_size=2)
    )
    return Answer(
        at=draw(st.integers(0, 3 * DAY)),
        metric=metric,
        score=score,
        scale_max=5 if metric == "csat" else None,
        segments=segments_of(channel, stage, context, ("region",)),
    )


def _naive(items: list[Answer], bucket_ms: int) -> dict[tuple[int, str, str, str], list[float]]:
    out: dict[tuple[int, str, str, str], list[float]] = {}
    for a in items:
        for kind, value in a.segments:
            out.setdefault((a.at // bucket_ms * bucket_ms, kind, value, a.metric), []).append(
                a.score
            )
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(answers(), max_size=60), st.randoms(use_true_random=False))
def test_tallies_are_exact_sums_in_any_order_and_any_split(
    items: list[Answer], rng: object
) -> None:
    whole = tally_answers(items, MINUTE)
    shuffled = list(items)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    cut = len(shuffled) // 3
    parts = [tally_answers(shuffled[:cut], MINUTE), tally_answers(shuffled[cut:], MINUTE)]
    summed: dict[tuple[int, str, str, str], Tally] = {}
    for part in parts:
        for key, tally in part.items():
            summed.setdefault(key, Tally()).add(tally)
    assert {k: t.as_tuple() for k, t in summed.items()} == {
        k: t.as_tuple() for k, t in whole.items()
    }
    naive = _naive(items, MINUTE)
    assert whole.keys() == naive.keys()
    for key, scores in naive.items():
        tally = whole[key]
        metric = key[3]
        assert tally.responses == len(scores)
        assert tally.score_milli == sum(round(s * 1000) for s in scores)
        if metric == "nps":
            assert tally.promoters == sum(s >= 9 for s in scores)
            assert tally.passives == sum(7 <= s <= 8 for s in scores)
            assert tally.detractors == sum(s <= 6 for s in scores)
        elif metric == "csat":
            assert tally.positive == sum(s >= 4 for s in scores)
        else:
            assert tally.positive == sum(s >= 5 for s in scores)


@settings(max_examples=200, deadline=None)
@given(st.lists(nps_scores, min_size=1, max_size=200))
def test_nps_and_its_margin_follow_the_contract(scores: list[float]) -> None:
    tally = Tally()
    for s in scores:
        tally.add(answer_tally("nps", s, None))
    n = len(scores)
    p = sum(s >= 9 for s in scores) / n
    d = sum(s <= 6 for s in scores) / n
    value = value_of("nps", tally)
    assert value.value is not None and value.margin is not None
    assert math.isclose(value.value, 100 * (p - d), abs_tol=1e-9)
    # the variance of the per-answer NPS contribution (+1, 0, -1), as in CONTRACT 2
    contributions = [1 if s >= 9 else -1 if s <= 6 else 0 for s in scores]
    variance = statistics.pvariance(contributions)
    assert math.isclose(value.margin, 1.96 * 100 * math.sqrt(variance / n), abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(ces_scores, min_size=1, max_size=200))
def test_ces_mean_and_margin_match_the_textbook_formulas(scores: list[float]) -> None:
    tally = Tally()
    for s in scores:
        tally.add(answer_tally("ces", s, None))
    value = value_of("ces", tally)
    assert value.value is not None
    assert math.isclose(value.value, statistics.fmean(scores), abs_tol=1e-9)
    if len(scores) > 1:
        assert value.margin is not None
        expected = 1.96 * statistics.stdev(scores) / math.sqrt(len(scores))
        assert math.isclose(value.margin, expected, rel_tol=1e-6, abs_tol=1e-9)
    else:
        assert value.margin is None
    share = sum(s >= 5 for s in scores) / len(scores)
    assert value.share_positive is not None
    assert math.isclose(value.share_positive, 100 * share)


def test_csat_is_the_top_two_box_share_on_the_answer_scale() -> None:
    assert answer_tally("csat", 4, 5).positive == 1
    assert answer_tally("csat", 3.999, 5).positive == 0
    assert answer_tally("csat", 9, 10).positive == 1
    assert answer_tally("csat", 8, 10).positive == 0
    tally = Tally()
    for s in (5, 4, 3, 1):
        tally.add(answer_tally("csat", s, 5))
    value = value_of("csat", tally)
    assert value.value == 50.0
    assert value.margin is not None
    assert math.isclose(value.margin, 1.96 * 100 * math.sqrt(0.25 / 4))
    assert value_of("csat", Tally()).value is None


@settings(max_examples=100, deadline=None)
@given(
    st.lists(answers(), max_size=60),
    st.integers(0, 3 * DAY),
    st.integers(1, 3 * DAY),
)
def test_any_rolling_window_is_the_sum_of_the_answers_in_it(
    items: list[Answer], end: int, length: int
) -> None:
    rolling = Rolling(MINUTE, 10 * DAY)
    for a in items:
        rolling.add(tally_answers([a], MINUTE))
    for metric in ("nps", "csat", "ces"):
        got = rolling.window("all", "all", metric, end, length)
        inside = [
            a for a in items if a.metric == metric and end - length <= bucket_of(a.at, MINUTE) < end
        ]
        assert got.responses == len(inside)
        assert got.score_milli == sum(round(a.score * 1000) for a in inside)


def test_rolling_view_forgets_buckets_beyond_its_horizon() -> None:
    rolling = Rolling(MINUTE, DAY)
    old = Answer(0, "nps", 10, None, (("all", "all"),))
    new = Answer(2 * DAY, "nps", 0, None, (("all", "all"),))
    rolling.add(tally_answers([old, new], MINUTE))
    rolling.prune()
    assert rolling.window("all", "all", "nps", 3 * DAY, 3 * DAY).responses == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(("t:0", "t:1")), st.integers(0, 10_000)), max_size=80),
    st.integers(0, 3000),
)
def test_an_event_is_late_when_more_than_the_grace_behind_its_partition(
    events: list[tuple[str, int]], grace: int
) -> None:
    marks = Watermarks(grace)
    seen: dict[str, list[int]] = {}
    for partition, at in events:
        earlier = seen.setdefault(partition, [])
        expected = bool(earlier) and at < max(earlier) - grace
        assert marks.observe(partition, at) is expected
        earlier.append(at)
    for partition, times in seen.items():
        assert marks.marks[partition] == max(times)
    assert marks.low() == (min(max(t) for t in seen.values()) if seen else None)


def test_segments_are_all_channel_stage_and_the_configured_dimensions() -> None:
    assert segments_of("chat", "", {"region": "eu", "locale": "de"}, ("region", "product")) == (
        ("all", "all"),
        ("channel", "chat"),
        ("journey_stage", "unknown"),
        ("region", "eu"),
    )


def test_the_rolling_report_gives_each_segment_its_score_over_the_window() -> None:
    rolling = Rolling(MINUTE, 10 * DAY)
    answers_ = [
        Answer(DAY + i * MINUTE, "nps", score, None, (("all", "all"), ("channel", "chat")))
        for i, score in enumerate((10, 9, 3, 8))
    ]
    old = Answer(0, "nps", 0, None, (("all", "all"),))
    rolling.add(tally_answers([*answers_, old], MINUTE))
    report = rolling.report(DAY + 4 * MINUTE, DAY)
    assert [(r["segment_kind"], r["responses"], r["score"]) for r in report] == [
        ("all", 4, 25.0),
        ("channel", 4, 25.0),
    ]
    rolling.clear()
    assert rolling.report(DAY, DAY) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(("t:0", "t:1", "t:2")), st.integers(0, 10_000), st.floats(0, 5)),
        max_size=60,
    ),
    st.floats(0, 30),
)
def test_event_time_is_complete_to_the_slowest_partition_still_sending(
    events: list[tuple[str, int, float]], quiet_for: float
) -> None:
    """Against a naive reference: partitions heard within the idle time hold event time
    back to the slowest of them; once all are quiet, everything seen is complete; nothing
    is complete before the idle time has passed since the first event."""
    idle = 10.0
    now = [100.0]
    marks = Watermarks(60_000, clock=lambda: now[0])
    heard: dict[str, float] = {}
    newest: dict[str, int] = {}
    for partition, at, pause in events:
        now[0] += pause
        marks.observe(partition, at)
        heard[partition] = now[0]
        newest[partition] = max(at, newest.get(partition, at))
    now[0] += quiet_for
    if not events or now[0] - 100.0 - events[0][2] < idle:
        assert marks.complete_to(idle) is None
        return
    active = [newest[p] for p in newest if now[0] - heard[p] < idle]
    assert marks.complete_to(idle) == (min(active) if active else max(newest.values()))
