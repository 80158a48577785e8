"""Alerts end to end: the worker on the real broker and ClickHouse fires them, writes them
to the alerts topic and ClickHouse, and delivers them, signed, to a real HTTP server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from streams.tools.demo import DEMO_ALERTS, demo_config
from streams.tools.generator import GeneratedMessage, generate, publish
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

SECRET = "whsec_" + base64.b64encode(b"end-to-end-signing-key-0123456789").decode()
MINUTE = 60_000
#: web's NPS falls in the last hour; chat's answers are the same multiset before and after
BASELINE_WEB = [10, 9, 10, 8, 9, 10, 7, 10]
INCIDENT_WEB = [3, 6, 9, 2, 5, 10, 0, 6]
STEADY_CHAT = [10, 9, 6, 8, 9, 10, 7, 3]


def hooks(receiver: Receiver, **options: Any) -> dict[str, Any]:
    """The test receiver as the endpoint ``hooks`` (its secret: ``SECRET``), plain HTTP on
    loopback allowed."""
    return {
        "name": "hooks",
        "url": f"{receiver.url}/hooks",
        "allow_http": True,
        "allow_private": True,
        **options,
    }


def answer(event_id: str, at: int, channel: str, score: int, person: str) -> dict[str, Any]:
    """A survey answer; ``channel`` says which topic it goes to (the topic names it)."""
    return event(
        event_id,
        to=channel,
        occurred_at=at,
        type="survey_response",
        identifiers={"email": f"{person}@example.com"},
        survey={"metric": "nps", "score": score},
    )


async def test_one_drop_for_the_falling_channel_and_one_alert_per_detractor_answer(
    stack: Stack, ch: Any
) -> None:
    async with Receiver() as receiver:
        stack.env["TOUCHPOINT_WEBHOOK_SECRET_HOOKS"] = SECRET
        stack.env["TOUCHPOINT_ALERTS"] = json.dumps(
            {
                "score_drop": {
                    "metrics": ["nps"],
                    "segments": ["channel"],
                    "window": "1h",
                    "baseline": "6h",
                    "min_responses": 20,
                    "evaluate_every": 0.2,
                },
                "detractor": {"metrics": ["nps"]},
                "endpoints": [hooks(receiver)],
            }
        )
        topics = {c: channel_topic(stack, c) for c in ("web", "chat")}
        await create_topics(stack, list(topics.values()))
        now = int(time.time() * 1000)
        baseline_start, incident_start = now - 7 * 60 * MINUTE, now - 60 * MINUTE
        documents = []
        # six hours of baseline, then an hour of incident, in event-time order
        for i in range(72):
            at = baseline_start + i * 5 * MINUTE
            documents.append(answer(f"w-{i}", at, "web", BASELINE_WEB[i % 8], f"w{i % 9}"))
            documents.append(answer(f"c-{i}", at + 1, "chat", STEADY_CHAT[i % 8], f"c{i % 7}"))
        for i in range(48):
            at = incident_start + i * MINUTE + 30_000
            documents.append(answer(f"wi-{i}", at, "web", INCIDENT_WEB[i % 8], f"v{i % 11}"))
            documents.append(answer(f"ci-{i}", at + 1, "chat", STEADY_CHAT[i % 8], f"d{i % 7}"))
        repeat = answer("wi-3", incident_start + 3 * MINUTE + 30_000, "web", 2, "v3")
        messages = [
            (topics[d.pop("to")], d["identifiers"]["email"].encode(), orjson.dumps(d), [])
            for d in documents
        ]
        del repeat["to"]
        messages.append((topics["web"], b"another-key", orjson.dumps(repeat), []))  # a repeat
        worker = await started(stack.start_worker())
        try:
            await produce(stack.bootstrap, messages, None)
            detractors = {d["event_id"] for d in documents if d["survey"]["score"] <= 6}
            db = stack.database

            async def delivered() -> bool:
                got = Counter(orjson.loads(r.body)["type"] for r in receiver.requests)
                stored = await scalar(
                    ch, f"SELECT countIf(delivery_status = 'delivered') FROM {db}.alerts"
                )
                return (
                    got["customer.detractor"] >= len(detractors)
                    and got["score.dropped"] >= 1
                    and stored >= len(detractors) + 1
                )

            await wait_for(delivered, worker, what="the alerts to be delivered")
            await asyncio.sleep(3)  # anything that would fire twice has had the time to
        finally:
            worker.stop()
        bodies = []
        for request in receiver.requests:
            bodies.append(
                (request.headers["webhook-id"], verify(SECRET, request.headers, request.body))
            )
        ids = [i for i, _ in bodies]
        assert len(ids) == len(set(ids)), "an alert was delivered twice"
        drops = [b for _, b in bodies if b["type"] == "score.dropped"]
        web = topics["web"].removeprefix("touchpoints.")  # the channel the topic names
        assert [d["data"]["segment"] for d in drops] == [{"kind": "channel", "value": web}]
        drop = drops[0]["data"]
        assert drop["before"]["value"] > drop["after"]["value"]
        assert drop["before"]["responses"] >= 20 and drop["after"]["responses"] >= 20
        assert drop["difference"] < -drop["margin_of_error"]
        fired_for = Counter(
            b["data"]["event_id"] for _, b in bodies if b["type"] == "customer.detractor"
        )
        assert set(fired_for) == detractors and max(fired_for.values()) == 1
        detractor = next(b for _, b in bodies if b["type"] == "customer.detractor")["data"]
        assert detractor["journey"]["recent"], "the follow-up needs the recent journey"
        # every alert is on the alerts topic too, with the same id
        consumer = AIOKafkaConsumer(
            stack.env["TOUCHPOINT_ALERTS_TOPIC"],
            bootstrap_servers=stack.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            on_topic: set[str] = set()
            deadline = time.monotonic() + 20
            while not set(ids) <= on_topic and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    on_topic.update(orjson.loads(r.value)["id"] for r in records)
        finally:
            await consumer.stop()
        assert set(ids) <= on_topic
        statuses = await ch.query(
            f"SELECT type, delivery_status, count() FROM {stack.database}.alerts GROUP BY ALL "
            "ORDER BY type"
        )
        assert statuses.result_rows == [
            ("customer.detractor", "delivered", len(detractors)),
            ("score.dropped", "delivered", 1),
        ]


async def test_the_demo_incident_fires_one_drop_for_its_channel_and_none_for_the_others(
    stack: Stack, ch: Any
) -> None:
    """What ``touchpoint demo`` publishes and configures: fourteen days of touchpoints
    with the scripted incident on mobile_app. The worker fires exactly one
    ``score.dropped`` (and, once the incident is over, one ``score.recovered``) for that
    channel, none for the others, and the hook receives the drop once, signed."""
    async with Receiver() as receiver:
        rules = json.loads(json.dumps(DEMO_ALERTS))
        rules["endpoints"] = [hooks(receiver, types=["score.dropped", "score.recovered"])]
        stack.env["TOUCHPOINT_ALERTS"] = json.dumps(rules)
        stack.env["TOUCHPOINT_WEBHOOK_SECRET_HOOKS"] = SECRET
        config = demo_config(start=datetime.now(UTC) - timedelta(days=14))
        generated = list(generate(config))
        channels = sorted({m.topic.removeprefix("touchpoints.") for m in generated})
        topics = {c: channel_topic(stack, c) for c in channels}
        await create_topics(stack, list(topics.values()))

        def ours(message: GeneratedMessage) -> GeneratedMessage:
            """The same message on this test's topic of its channel (the topic names it)."""
            topic = topics[message.topic.removeprefix("touchpoints.")]
            value = message.value
            if message.kind != "valid" and message.kind != "duplicate":
                return replace(message, topic=topic)
            document = orjson.loads(value)
            if "channel" in document:
                document["channel"] = topic.removeprefix("touchpoints.")
            return replace(message, topic=topic, value=orjson.dumps(document))

        worker = await started(stack.start_worker())
        try:
            await publish([ours(m) for m in generated], stack.bootstrap)
            db = stack.database

            async def looked_through() -> bool:
                """Score alerts come once event time is complete: every partition has
                spoken, or gone quiet for the idle time."""
                return bool(
                    await scalar(
                        ch,
                        f"SELECT countIf(type = 'score.recovered' AND "
                        f"delivery_status = 'delivered') FROM {db}.alerts",
                    )
                )

            await wait_for(looked_through, worker, what="the incident's drop and recovery")
            await settled(stack, [*topics.values(), stack.env["TOUCHPOINT_ALERTS_TOPIC"]], worker)
            await asyncio.sleep(3)  # anything that would fire on top has had the time to
        finally:
            worker.stop()
        fired = (
            await ch.query(
                f"SELECT type, subject, delivery_status FROM {stack.database}.alerts "
                "WHERE type LIKE 'score.%' ORDER BY fired_at, type"
            )
        ).result_rows
        incident = topics["mobile_app"].removeprefix("touchpoints.")
        assert fired == [
            ("score.dropped", f"channel:{incident}:nps", "delivered"),
            ("score.recovered", f"channel:{incident}:nps", "delivered"),
        ]
        received = [verify(SECRET, r.headers, r.body) for r in receiver.requests]
        assert sorted(h["type"] for h in received) == ["score.dropped", "score.recovered"]
        drop = next(h["data"] for h in received if h["type"] == "score.dropped")
        assert drop["segment"] == {"kind": "channel", "value": incident}
        assert drop["after"]["value"] < drop["before"]["value"] - drop["margin_of_error"]
