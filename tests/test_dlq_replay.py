"""The pure parts of ``touchpoint dlq replay``: what a replay sends, and time filters."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from sinks.dlq_replay import DeadLetterRecord, ReplayPlan
from streams.operate.commands import parse_moment

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def letter(
    reason: str = "not_json", topic: str = "touchpoints.web", **extra: object
) -> DeadLetterRecord:
    fields: dict[str, object] = {
        "source_topic": topic,
        "source_partition": 1,
        "source_offset": 7,
        "reason": reason,
        "received_at": NOW,
        "event_id": None,
        "key": b"k",
        "raw": b"{",
        "headers": (),
        **extra,
    }
    return DeadLetterRecord(**fields)  # type: ignore[arg-type]


def test_a_replay_sends_the_original_headers_without_the_processors_own() -> None:
    headers = (
        ("traceparent", b"00-ab"),
        ("touchpoint.dlq.reason", b"not_json"),
        ("origin", b"shop"),
        ("touchpoint.dlq.source_offset", b"7"),
        ("touchpoint.other", b"kept"),
    )
    assert letter(headers=headers).replay_headers == [
        ("traceparent", b"00-ab"),
        ("origin", b"shop"),
        ("touchpoint.other", b"kept"),
    ]


def test_a_dead_letter_is_named_by_its_source_coordinates() -> None:
    assert letter().label == "touchpoints.web[1]@7"
    assert letter().coordinates == ("touchpoints.web", 1, 7)


def test_the_plan_counts_by_reason_and_topic_most_frequent_first() -> None:
    plan = ReplayPlan(
        (letter("too_large"), letter("not_json"), letter("not_json", "touchpoints.sms")), 4
    )
    assert plan.by_reason() == {"not_json": 2, "too_large": 1}
    assert plan.by_topic() == {"touchpoints.web": 2, "touchpoints.sms": 1}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("24h", NOW - timedelta(hours=24)),
        ("90m", NOW - timedelta(minutes=90)),
        ("7d", NOW - timedelta(days=7)),
        ("2026-11-19T08:00:00Z", datetime(2026, 11, 19, 8, tzinfo=UTC)),
        ("2026-11-19T08:00:00+01:00", datetime(2026, 11, 19, 7, tzinfo=UTC)),
        ("2026-11-19T08:00:00", datetime(2026, 11, 19, 8, tzinfo=UTC)),  # no offset: UTC
        ("2026-11-19", datetime(2026, 11, 19, tzinfo=UTC)),
    ],
)
def test_times_are_moments_or_durations_ago_and_always_aware(
    given: str, expected: datetime
) -> None:
    moment = parse_moment(given, NOW)
    assert moment == expected
    assert moment.tzinfo is not None


@pytest.mark.parametrize("given", ["yesterday", "24 hours", "2026-13-01"])
def test_anything_else_is_refused_saying_what_is_accepted(given: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="duration ago"):
        parse_moment(given, NOW)
