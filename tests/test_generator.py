"""The generator: deterministic, contract-shaped, and realistic where later features need it."""

from __future__ import annotations

import dataclasses
import hashlib
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.alert_rules import AlertRules
from schemas.dead_letter import DeadLetter
from schemas.ingested import IngestedEvent, SourceRecord
from streams.domain.alerts import DropDetector, compare
from streams.domain.ingest import FLAG_SKEW_CORRECTED, ingest
from streams.domain.scores import Rolling, answer_tally
from streams.runtime.app import ingest_rules
from streams.settings import Settings
from streams.tools import commands
from streams.tools.demo import DEMO_ALERTS, demo_config
from streams.tools.generator import (
    ANSWER_MODELS,
    BAD_KINDS,
    GeneratorConfig,
    benchmark_events,
    generate,
)

RULES = ingest_rules(Settings())
NOW = datetime(2026, 11, 15, tzinfo=UTC)


def _ingest_all(config: GeneratorConfig) -> list[tuple[str, IngestedEvent | DeadLetter]]:
    return [
        (
            m.kind,
            ingest(
                SourceRecord(m.topic, 0, i, m.timestamp_ms, m.key, m.value, m.headers), RULES, NOW
            ),
        )
        for i, m in enumerate(generate(config))
    ]


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    config = GeneratorConfig(seed=3, events=500, customers=50, bad_share=0.1)
    first = [(m.topic, m.key, m.value, m.headers) for m in generate(config)]
    again = [(m.topic, m.key, m.value, m.headers) for m in generate(config)]
    other_config = GeneratorConfig(seed=4, events=500, customers=50, bad_share=0.1)
    other = [(m.topic, m.key, m.value, m.headers) for m in generate(other_config)]
    assert first == again
    assert first != other


def test_skewed_device_clocks_are_corrected_back_onto_the_true_timeline() -> None:
    messages = list(generate(GeneratorConfig(events=3000, customers=200)))
    corrected = 0
    for i, m in enumerate(messages):
        if m.timestamp_ms is None:
            assert b'"sent_at"' not in m.value
            continue
        outcome = ingest(
            SourceRecord(m.topic, 0, i, m.timestamp_ms, m.key, m.value, m.headers), RULES, NOW
        )
        assert isinstance(outcome, IngestedEvent)
        assert FLAG_SKEW_CORRECTED in outcome.flags
        # the device sent it a second after the event, by the true clock
        assert int(outcome.occurred_at.timestamp() * 1000) == m.timestamp_ms - 1000
        assert 5_000 <= abs(outcome.clock_skew_ms) <= 600_000
        corrected += 1
    assert corrected > 20


def test_every_valid_message_is_accepted_on_its_own_topic() -> None:
    outcomes = _ingest_all(GeneratorConfig(events=3000, customers=200))
    rejected = [o for kind, o in outcomes if isinstance(o, DeadLetter)]
    assert rejected == []
    for _kind, outcome in outcomes:
        assert isinstance(outcome, IngestedEvent)
        assert outcome.source.topic == f"touchpoints.{outcome.channel}"


def test_each_bad_kind_is_dead_lettered_for_exactly_that_reason() -> None:
    outcomes = _ingest_all(GeneratorConfig(events=3000, customers=100, bad_share=0.2))
    seen: Counter[str] = Counter()
    for kind, outcome in outcomes:
        if kind.startswith("bad:"):
            assert isinstance(outcome, DeadLetter), kind
            assert outcome.reason.value == kind.removeprefix("bad:")
            seen[outcome.reason.value] += 1
    assert set(seen) == set(BAD_KINDS)


def test_anonymous_visitors_later_log_in_with_the_same_cookie() -> None:
    alone: set[str] = set()
    linked: set[str] = set()
    for message in generate(GeneratorConfig(events=4000, customers=100)):
        identifiers = orjson.loads(message.value)["identifiers"]
        anonymous = identifiers.get("anonymous_id")
        if anonymous and len(identifiers) == 1:
            alone.add(anonymous)
        elif anonymous and ("account_id" in identifiers or "email" in identifiers):
            linked.add(anonymous)
    assert len(alone & linked) >= 20


def test_support_cases_span_channels_with_transfers_and_end_in_surveys() -> None:
    channels: defaultdict[str, set[str]] = defaultdict(set)
    transfers = 0
    surveys_on_cases = 0
    for message in generate(GeneratorConfig(events=6000, customers=150)):
        document = orjson.loads(message.value)
        case = document.get("case_id")
        if case is None:
            continue
        channels[case].add(message.topic)
        transfers += bool(document.get("interaction", {}).get("transferred"))
        surveys_on_cases += "survey" in document
    assert sum(1 for topics in channels.values() if len(topics) >= 2) >= 20
    assert transfers >= 20
    assert surveys_on_cases >= 20


def test_shared_devices_and_a_placeholder_phone_appear_for_several_customers() -> None:
    owners: defaultdict[str, set[str]] = defaultdict(set)
    for message in generate(GeneratorConfig(events=20000, customers=300)):
        identifiers = orjson.loads(message.value)["identifiers"]
        for kind in ("device_id", "phone"):
            if kind in identifiers:
                others = {v for k, v in identifiers.items() if k != kind}
                owners[identifiers[kind]].update(others)
    assert len(owners["dev-family-tablet-0001"]) >= 2
    assert len(owners["+44 20 7946 0000"]) >= 2


def test_benchmark_events_are_about_300_bytes_and_zipf_distributed() -> None:
    messages = list(benchmark_events(1, 20000, 10000))
    sizes = [len(m.value) for m in messages]
    assert 250 <= sum(sizes) / len(sizes) <= 400
    per_customer = Counter(m.key for m in messages)
    top = sum(n for _key, n in per_customer.most_common(100))  # top 1 % of customers
    assert top / len(messages) > 0.25


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    events=st.integers(0, 200),
    bad=st.floats(0, 0.5),
    dup=st.floats(0, 0.3),
)
def test_generation_is_deterministic_and_kinds_add_up(
    seed: int, events: int, bad: float, dup: float
) -> None:
    config = GeneratorConfig(
        seed=seed, events=events, customers=20, bad_share=bad, duplicate_share=dup
    )
    first = list(generate(config))
    assert first == list(generate(config))
    kinds = Counter(m.kind.split(":")[0] for m in first)
    call_backs = sum(1 for m in first if m.kind == "valid" and b'"event_id":"fu-' in m.value)
    assert sum(kinds.values()) == events + call_backs
    assert set(kinds) <= {"valid", "bad", "duplicate"}


def test_detractors_hear_back_promptly_late_or_never_and_it_shows_in_their_next_answer() -> None:
    config = GeneratorConfig(seed=11, events=30_000, customers=1500)
    documents = [orjson.loads(m.value) for m in generate(config) if m.kind == "valid"]
    without = [
        orjson.loads(m.value) for m in generate(dataclasses.replace(config, followups=False))
    ]
    calls = [d for d in documents if d["event_id"].startswith("fu-")]
    assert len(calls) > 100 and not any(d["event_id"].startswith("fu-") for d in without)
    assert all(d["interaction"]["direction"] == "outbound" for d in calls)
    # the other events are the same ones (answers aside, which the follow-ups move)
    rest = [d["event_id"] for d in documents if not d["event_id"].startswith("fu-")]
    assert rest == [d["event_id"] for d in without]
    # a follow-up moves the customer's next answer: up after a call back (prompt: two
    # NPS points, late: less), down when nobody called
    score = {d["event_id"]: d["survey"]["score"] for d in without if "survey" in d}
    moved = [
        d["survey"]["score"] - score[d["event_id"]]
        for d in documents
        if "survey" in d and d["survey"]["score"] != score[d["event_id"]]
    ]
    up, down = sum(m > 0 for m in moved), sum(m < 0 for m in moved)
    assert len(moved) >= 50 and up > 2 * down > 0, (up, down)


def test_the_demo_incident_is_the_one_significant_drop_whenever_the_stream_looks() -> None:
    """The demo's scripted incident (mobile_app, three days from 60 % of the span) against
    the demo's alert rules, looked at every ten minutes of event time: the incident's
    channel is significantly down for more than a day (the stream, looking several times
    a second, cannot miss it), no other channel ever reaches the bar, and one dip fires
    one ``score.dropped`` and one ``score.recovered``."""
    config = demo_config(start=NOW - timedelta(days=14))
    rule = AlertRules.model_validate(DEMO_ALERTS).score_drop
    rolling = Rolling(60_000, 30 * 86_400_000)
    for kind, result in _ingest_all(config):
        if kind != "valid":
            continue
        assert isinstance(result, IngestedEvent)
        survey = result.event.survey
        if survey is None or survey.metric != "nps":
            continue
        at = int(result.occurred_at.timestamp() * 1000)
        tally = answer_tally("nps", survey.score, None)
        rolling.add({(at - at % 60_000, "channel", result.channel, "nps"): tally})
    window, baseline = int(rule.window * 1000), int(rule.baseline * 1000)
    detector = DropDetector(rule)
    fired: list[tuple[str, str]] = []
    significant: dict[str, int] = Counter()
    first = int(config.start.timestamp() * 1000)
    for step in range(14 * 24 * 6):
        end = first + step * 600_000
        keys = list(rolling.series)
        for kind, channel, metric in keys:
            before = rolling.window(kind, channel, metric, end - window, baseline)
            after = rolling.window(kind, channel, metric, end, window)
            if min(before.responses, after.responses) < rule.min_responses:
                continue
            comparison = compare(metric, before, after)
            if comparison is not None and comparison.z >= rule.z_critical:
                significant[channel] += 1
        fired += [(a.type, a.subject) for a in detector.evaluate(rolling, end, keys, end)]
    assert set(significant) == {"mobile_app"}
    assert significant["mobile_app"] * 600_000 > 86_400_000
    assert fired == [
        ("score.dropped", "channel:mobile_app:nps"),
        ("score.recovered", "channel:mobile_app:nps"),
    ]


def _digest(config: GeneratorConfig) -> str:
    digest = hashlib.sha256()
    for m in generate(config):
        for part in (m.topic.encode(), m.key or b"-", m.value, repr(m.headers).encode()):
            digest.update(part)
        digest.update(f"{m.timestamp_ms}/{m.kind}".encode())
    return digest.hexdigest()


def test_the_default_answers_give_the_bytes_they_always_gave() -> None:
    """Adding answer models and follow-ups changed nothing in the output without the
    follow-ups (digests taken before either)."""
    demo = dataclasses.replace(
        demo_config(start=datetime(2026, 11, 1, tzinfo=UTC)), followups=False
    )
    assert demo.answers == "effort"
    assert _digest(demo) == "cbdf36bd54ca0b6d6a21b54439b971bb6322894bc1da8fcb16b7c0c35ae8bb54"
    mixed = GeneratorConfig(
        events=3000, customers=200, bad_share=0.1, duplicate_share=0.05, followups=False
    )
    assert _digest(mixed) == "444992d4a24855c03e3811208777eabbd640a89c42fc70b3b40186e94afbd767"


def test_independent_answers_change_the_scores_and_nothing_else() -> None:
    # without follow-ups: which answers are detractors decides who is called back
    config = GeneratorConfig(
        events=4000, customers=200, bad_share=0.05, duplicate_share=0.02, followups=False
    )
    other = dataclasses.replace(config, answers="independent")
    scores_differ = 0
    for mine, theirs in zip(generate(config), generate(other), strict=True):
        assert (mine.topic, mine.kind, mine.key) == (theirs.topic, theirs.kind, theirs.key)
        if mine.kind != "valid":
            continue
        a, b = orjson.loads(mine.value), orjson.loads(theirs.value)
        if "survey" in a:
            assert a["survey"]["metric"] == b["survey"]["metric"]
            scores_differ += a["survey"]["score"] != b["survey"]["score"]
            a["survey"].pop("score"), b["survey"].pop("score")
        assert a == b
    assert scores_differ > 50
    assert _digest(other) == _digest(other)  # deterministic too


def test_an_unknown_answer_model_is_refused_and_the_commands_offer_the_known_ones() -> None:
    with pytest.raises(ValueError, match="answers must be one of"):
        GeneratorConfig(answers="random")
    assert commands.ANSWER_MODELS == ANSWER_MODELS


def _when(occurred_at: str | int) -> datetime:
    if isinstance(occurred_at, int):
        return datetime.fromtimestamp(occurred_at / 1000, UTC)
    return datetime.fromisoformat(occurred_at)


def _ces_by_case(config: GeneratorConfig) -> list[tuple[int, float, float, int]]:
    """For each CES answer about a case: the case's transfers, total wait (s), time from
    its first contact to the answer (days), and the score."""
    cases: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    answers = []
    for m in generate(config):
        document = orjson.loads(m.value)
        if document.get("case_id") is None:
            continue
        if document.get("survey", {}).get("metric") == "ces":
            answers.append(document)
        elif "survey" not in document:
            cases[document["case_id"]].append(document)
    out = []
    for answer in answers:
        contacts = cases[answer["case_id"]]
        if not contacts:
            continue
        first = min(_when(c["occurred_at"]) for c in contacts)
        answered = _when(answer["occurred_at"])
        out.append(
            (
                sum(bool(c["interaction"]["transferred"]) for c in contacts),
                sum(c["interaction"]["wait_seconds"] for c in contacts),
                (answered - first) / timedelta(days=1),
                answer["survey"]["score"],
            )
        )
    return out


def test_independent_answers_follow_waits_and_resolution_time_not_transfers() -> None:
    """With answers="effort" a transferred case answers much lower; with "independent"
    transfers count for far less (only through the longer cases they come with), and long
    waits or slow resolutions lower the answers."""
    config = GeneratorConfig(seed=11, events=60_000, customers=3000)
    by_effort = _ces_by_case(config)
    by_other = _ces_by_case(dataclasses.replace(config, answers="independent"))

    def mean(rows: list[tuple[int, float, float, int]]) -> float:
        return statistics.mean(r[3] for r in rows)

    def transferred(rows: list[Any]) -> float:
        return mean([r for r in rows if r[0] == 0]) - mean([r for r in rows if r[0] >= 1])

    assert transferred(by_effort) > 1.0
    assert abs(transferred(by_other)) < 0.4 * transferred(by_effort)
    slow = [r for r in by_other if r[1] > 600 or r[2] > 1]
    quick = [r for r in by_other if r[1] < 180 and r[2] < 0.1]
    assert len(slow) > 30 and len(quick) > 30
    assert mean(quick) - mean(slow) > 0.5
