"""The generator: deterministic, contract-shaped, and realistic where later features need it."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
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
from streams.tools.demo import DEMO_ALERTS, demo_config
from streams.tools.generator import BAD_KINDS, GeneratorConfig, benchmark_events, generate

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
    without = [orjson.loads(m.value) for m in generate(replace(config, followups=False))]
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
