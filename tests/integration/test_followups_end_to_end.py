"""Closed-loop follow-up end to end: the worker on the real broker and ClickHouse opens a
follow-up per detractor answer, closes it on an outbound contact or a resolution, and
fires ``customer.followup_overdue`` exactly once for each one missed, through a crash,
a restart and a restart from the changelog alone."""

from __future__ import annotations

import base64
import json
import signal
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from schemas.alerts import alert_id
from tests.integration.test_worker_end_to_end import (
    Stack,
    ch,
    channel_topic,
    create_topics,
    event,
    produce,
    scalar,
    settled,
    stack,
    started,
    wait_for,
)
from tests.standard_webhooks import verify
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.integration
__all__ = ["ch", "stack"]  # fixtures used by name

SECRET = "whsec_" + base64.b64encode(b"follow-up-signing-key-0123456789").decode()
HOUR = 3_600_000
MINUTE = 60_000


def touch(event_id: str, person: str, at: int, channel: str, **extra: Any) -> dict[str, Any]:
    document = event(event_id, occurred_at=at, identifiers={"email": f"{person}@example.com"})
    document.update(extra)
    document["to"] = channel
    return document


def answer(event_id: str, person: str, at: int, metric: str, score: int, **extra: Any) -> Any:
    return touch(
        event_id,
        person,
        at,
        "survey",
        type="survey_response",
        survey={"metric": metric, "score": score},
        **extra,
    )


def call_back(event_id: str, person: str, at: int, channel: str = "call_center") -> Any:
    return touch(
        event_id,
        person,
        at,
        channel,
        type="call" if channel == "call_center" else "email_sent",
        interaction={"direction": "outbound", "queue": "retention", "agent_id": "agent-007"},
    )


async def test_a_missed_follow_up_fires_once_through_crashes_and_restarts(
    stack: Stack, ch: Any
) -> None:
    t0 = int(time.time() * 1000) - 6 * 24 * HOUR
    t0 -= t0 % HOUR
    first = [
        # alice: her call back comes two minutes after her answer, and reaches the
        # broker before it (within the watermark: the order of arrival does not matter)
        call_back("alice-call", "alice", t0 + 2 * MINUTE),
        answer("alice-nps", "alice", t0, "nps", 3),
        # bob: nobody calls back
        answer("bob-nps", "bob", t0 + HOUR, "nps", 2),
        # carol: called back after 60 hours, 12 hours late
        answer("carol-csat", "carol", t0, "csat", 1),
        call_back("carol-mail", "carol", t0 + 60 * HOUR, channel="email"),
        # dave: the case his answer was about is resolved five hours later
        answer("dave-nps", "dave", t0, "nps", 1, case_id="case-d"),
        touch(
            "dave-done",
            "dave",
            t0 + 5 * HOUR,
            "support",
            type="ticket_resolved",
            case_id="case-d",
            interaction={"resolved": True},
        ),
        # erin: a second detractor answer while one is open extends it (due 48 h after
        # the second), and the call at 60 h is in time for it
        answer("erin-nps-1", "erin", t0, "nps", 4),
        answer("erin-nps-2", "erin", t0 + 40 * HOUR, "nps", 5),
        call_back("erin-call", "erin", t0 + 60 * HOUR),
        # a promoter: no follow-up
        answer("fred-nps", "fred", t0, "nps", 10),
        # the next answers: after the call back (alice, carol), after the resolution
        # (dave), after the due time passed with nobody calling (bob)
        touch("alice-browse", "alice", t0 + 2 * HOUR, "web", type="page_view"),  # no answer
        answer("alice-next", "alice", t0 + 3 * HOUR, "nps", 9),
        answer("carol-next", "carol", t0 + 61 * HOUR, "nps", 10),
        answer("dave-next", "dave", t0 + 6 * HOUR, "csat", 5),
        answer("bob-next", "bob", t0 + 50 * HOUR, "nps", 7),
    ]
    async with Receiver() as receiver:
        stack.env["TOUCHPOINT_WEBHOOK_SECRET_HOOKS"] = SECRET
        stack.env["TOUCHPOINT_WATERMARK_IDLE_S"] = "3"
        stack.env["TOUCHPOINT_ALERTS"] = json.dumps(
            {
                "detractor": {"enabled": False},
                "effort_spike": {"enabled": False},
                "endpoints": [
                    {
                        "name": "hooks",
                        "url": f"{receiver.url}/hooks",
                        "allow_http": True,
                        "allow_private": True,
                        "types": ["customer.followup_overdue"],
                    }
                ],
            }
        )
        channels = ("survey", "call_center", "email", "support", "web")
        topics = {c: channel_topic(stack, c) for c in channels}
        await create_topics(stack, list(topics.values()))

        def messages(documents: list[dict[str, Any]]) -> list[Any]:
            out = []
            for d in documents:
                d = dict(d)
                topic = topics[d.pop("to")]
                out.append((topic, d["identifiers"]["email"].encode(), orjson.dumps(d), []))
            return out

        db = stack.database
        missed = {
            alert_id("customer.followup_overdue", "bob-nps"),
            alert_id("customer.followup_overdue", "carol-csat"),
        }

        async def overdue_delivered() -> bool:
            ids = (
                await ch.query(
                    f"SELECT alert_id FROM {db}.alerts WHERE type = 'customer.followup_overdue' "
                    "AND delivery_status = 'delivered'"
                )
            ).result_rows
            return {i for (i,) in ids} >= missed

        worker = await started(stack.start_worker())
        try:
            await produce(stack.bootstrap, messages(first), None)
            await wait_for(overdue_delivered, worker, what="the two overdue alerts delivered")
        finally:
            # a crash, right after the deliveries were recorded (a crash between an
            # endpoint's 2xx and that record may send one again: receivers de-duplicate
            # on webhook-id, README "Alerts")
            worker.stop(signal.SIGKILL)

        # restarted on its own local state: event time moves past every due time
        worker = await started(stack.start_worker())
        try:
            clock = [touch("later-1", "zoe", t0 + 5 * 24 * HOUR, "web", type="page_view")]
            await produce(stack.bootstrap, messages(clock + first[:2]), None)

            async def closed() -> bool:
                return (
                    await scalar(ch, f"SELECT countIf(outcome != 'open') FROM {db}.followups")
                ) == 5

            await wait_for(closed, worker, what="every follow-up due")
            await settled(stack, list(topics.values()), worker)
        finally:
            worker.stop()

        # restarted on another machine: its state only from the changelog
        worker = await started(stack.start_worker("w2", state=stack.tmp / "elsewhere"))
        try:
            clock = [touch("later-2", "zoe", t0 + 6 * 24 * HOUR - HOUR, "web", type="page_view")]
            await produce(stack.bootstrap, messages(clock), None)

            async def seen() -> bool:
                return bool(
                    await scalar(ch, f"SELECT count() FROM {db}.events WHERE event_id = 'later-2'")
                )

            await wait_for(seen, worker, what="the last event")
            await settled(stack, list(topics.values()), worker)
        finally:
            worker.stop()

    rows = (
        await ch.query(
            f"SELECT followup_id, outcome, closed_how, closed_channel, closed_queue, "
            f"closed_agent, answers, overdue FROM {db}.followups ORDER BY followup_id"
        )
    ).result_rows
    email = topics["email"].removeprefix("touchpoints.")
    call = topics["call_center"].removeprefix("touchpoints.")
    support = topics["support"].removeprefix("touchpoints.")
    assert rows == [
        ("alice-nps", "in_time", "contact", call, "retention", "agent-007", 1, 0),
        ("bob-nps", "overdue", "", None, None, None, 1, 1),
        ("carol-csat", "late", "contact", email, "retention", "agent-007", 1, 1),
        ("dave-nps", "in_time", "resolution", support, None, None, 1, 0),
        ("erin-nps-1", "in_time", "contact", call, "retention", "agent-007", 2, 0),
    ]
    hours = dict(
        (await ch.query(f"SELECT followup_id, hours_to_follow_up FROM {db}.followups")).result_rows
    )
    assert hours["alice-nps"] == pytest.approx(2 / 60)
    assert hours["carol-csat"] == pytest.approx(60)
    assert hours["bob-nps"] is None
    stored = Counter(
        i
        for (i,) in (
            await ch.query(
                f"SELECT alert_id FROM {db}.alerts_store FINAL "
                "WHERE type = 'customer.followup_overdue'"
            )
        ).result_rows
    )
    assert set(stored) == missed and max(stored.values()) == 1
    delivered = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert set(delivered) == missed and max(delivered.values()) == 1, delivered
    bodies = {verify(SECRET, r.headers, r.body)["data"]["followup_id"] for r in receiver.requests}
    assert bodies == {"bob-nps", "carol-csat"}
    weekly = (
        await ch.query(
            f"SELECT sum(due), sum(in_time), sum(late), sum(never), sum(closed_loop_rate * due) "
            f"FROM {db}.followup_weekly WHERE dimension = 'all'"
        )
    ).result_rows[0]
    assert weekly[:4] == (5, 3, 1, 1)
    assert weekly[4] == pytest.approx(4)
    effect = (
        await ch.query(
            f"SELECT followed_up, answers, detractor_share, nps_answers, nps "
            f"FROM {db}.followup_effect ORDER BY followed_up"
        )
    ).result_rows
    assert effect == [
        ("in_time", 2, 0.0, 1, 100.0),
        ("late", 1, 0.0, 1, 100.0),
        ("never", 1, 0.0, 1, 0.0),
    ]
