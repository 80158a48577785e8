"""The accounting can see a loss: offsets committed that nothing read.

A worker reads a topic to its end; `touchpoint verify` finds every offset accounted
for. Then the consumer group's offsets are moved past messages nobody read, as the
loss of the trust issue's finding 3 did (the group committed past a range the returning
worker never processed): `touchpoint verify` reports exactly those offsets and exits
non-zero, and the worker that holds the partitions exports them in
`touchpoint_unaccounted_offsets`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.integration.test_worker_end_to_end import (
    PARTITIONS,
    Stack,
    ch,
    channel_topic,
    create_topics,
    event,
    produce,
    settled,
    stack,
    started,
    wait_for,
)

__all__ = ["ch", "stack"]  # fixtures used by name

pytestmark = pytest.mark.integration


def verify(stack: Stack) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "streams", "verify", "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def run_status(stack: Stack, web: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "streams", "status", "--worker", web],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


async def commit_past(stack: Stack, topic: str) -> int:
    """Move the group's committed offsets to the end of every partition of ``topic``, as
    a worker with the finding-3 defect did; return how many offsets that skipped."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap,
        group_id=stack.env["TOUCHPOINT_APP_ID"],
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)  # manual assignment: it never joins the group
        ends = await consumer.end_offsets(parts)
        skipped = 0
        for tp in parts:
            skipped += ends[tp] - (await consumer.committed(tp) or 0)
        await consumer.commit({tp: ends[tp] for tp in parts})
        return skipped
    finally:
        await consumer.stop()


async def unaccounted(web: str) -> int:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{web}/metrics", timeout=5)).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("touchpoint_unaccounted_offsets{")
    )


async def test_offsets_committed_without_being_read_are_reported(stack: Stack, ch: Any) -> None:
    topic = channel_topic(stack, "web")
    await create_topics(stack, [topic])
    stack.env["TOUCHPOINT_RECONCILE_INTERVAL_S"] = "1"
    first = [(topic, None, orjson.dumps(event(f"r-{i}")), []) for i in range(120)]
    worker = await started(stack.start_worker("w1"))
    try:
        await produce(stack.bootstrap, first, None)
        await settled(stack, [topic], worker)
        status, report = verify(stack)
        assert (status, report["unread"], report["missing"]) == (0, 0, 0), report
        assert sum(p["read"] for p in report["partitions"]) == 120
        assert await unaccounted(worker.web) == 0
    finally:
        worker.stop(signal.SIGTERM)

    # messages nobody reads, and a group that commits past them anyway
    lost = [(topic, None, orjson.dumps(event(f"lost-{i}")), []) for i in range(80)]
    await produce(stack.bootstrap, lost, None)
    assert await commit_past(stack, topic) == 80

    status, report = verify(stack)
    assert status == 1
    assert report["unread"] == 80
    assert report["missing"] == 0

    worker = await started(stack.start_worker("w1-again"))
    try:

        async def reported() -> bool:
            return await unaccounted(worker.web) == 80

        await wait_for(reported, worker, timeout=60, what="the worker to export the loss")
        # and it said so in its log (before it set the metric), with the way to look closer
        assert "were never read; see touchpoint verify" in worker.log_tail()
        # and touchpoint status fails on it
        code, out = run_status(stack, worker.web)
        assert code == 1, out
        assert "offsets committed without being read" in out
    finally:
        worker.stop(signal.SIGTERM)
