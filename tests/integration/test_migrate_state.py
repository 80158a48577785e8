"""Upgrading a deployment from the single-partition layout (``touchpoint migrate-state``).

The old state is the real thing: the identity table's changelog that a worker of the
single-partition layout wrote for the events in ``tests/data/legacy_identity_changelog.json``.
It is put on a fresh broker, a worker of this version refuses to start on it, the
migration carries it over, and the customers go on: their ids, journeys and cases
continue where the old worker left them, and a merge across partitions combines them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration import test_worker_end_to_end as e2e
from tests.integration.test_worker_end_to_end import (
    Stack,
    channel_topic,
    create_topics,
    produce,
    scalar,
    settled,
    wait_for,
)

# the end to end tests' fixtures: a worker stack on the session's broker and ClickHouse
stack = e2e.stack
ch = e2e.ch

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "legacy_identity_changelog.json"
DAY = 86_400_000
BASE = 1_764_000_000_000


def touchpoint(args: list[str], stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=180,
    )


async def put_legacy_state(stack: Stack, records: list[list[str | None]]) -> None:
    """The old identity changelog, byte for byte, as the old worker left it."""
    name = f"{stack.env['TOUCHPOINT_APP_ID']}-identity-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, 1, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            assert key is not None
            await producer.send(
                name,
                key=bytes.fromhex(key),
                value=None if value is None else bytes.fromhex(value),
                partition=0,
            )
        await producer.flush()
    finally:
        await producer.stop()


async def test_a_single_partition_deployment_is_migrated_and_its_customers_go_on(
    stack: Stack, ch: Any
) -> None:
    legacy = json.loads(FIXTURE.read_text())
    old = {row[0]: row for row in legacy["customer_360"]}  # id -> [id, touchpoints, identifiers]
    by_email = {email: row[0] for row in old.values() for email in row[2]["email"]}
    assert len(old) == 11 and len(by_email) == 12  # one merge among twelve customers
    await put_legacy_state(stack, legacy["changelog"])

    # a worker of this version does not start on old state alone
    refused = touchpoint(["worker"], stack)
    assert refused.returncode != 0
    assert "touchpoint migrate-state" in refused.stderr, refused.stderr[-2000:]

    dry = touchpoint(["migrate-state"], stack)
    assert dry.returncode == 0, dry.stderr
    assert "11 customers, 24 identifiers" in dry.stdout and "would write" in dry.stdout
    applied = touchpoint(["migrate-state", "--apply"], stack)
    assert applied.returncode == 0, applied.stderr
    assert "wrote" in applied.stdout
    again = touchpoint(["migrate-state", "--apply"], stack)
    assert again.returncode != 0 and "already holds" in again.stderr

    channels = ["web", "call_center", "app"]
    topics = [channel_topic(stack, c) for c in channels]
    stack.env["TOUCHPOINT_EFFORT_ASSISTED_CHANNELS"] = json.dumps(
        [channel_topic(stack, "call_center").removeprefix("touchpoints.")]
    )
    await create_topics(stack, topics)
    worker = stack.start_worker()
    try:
        new: list[tuple[str, dict[str, Any]]] = []
        for i in range(12):
            new.append(
                (
                    "web",
                    {
                        "event_id": f"after-{i}",
                        "occurred_at": BASE + 2 * DAY + i,
                        "type": "page_view",
                        "identifiers": {"email": f"legacy{i}@example.org"},
                    },
                )
            )
        # a contact on customer 5's old case, within the repeat window: a repeat contact
        new.append(
            (
                "call_center",
                {
                    "event_id": "after-call-5",
                    "occurred_at": BASE + 3 * DAY,
                    "type": "call",
                    "identifiers": {"email": "legacy5@example.org"},
                    "case_id": "case-1",
                    "interaction": {"direction": "inbound", "resolved": False},
                },
            )
        )
        # customer 2's email with customer 3's phone: customers of two partitions merge
        new.append(
            (
                "app",
                {
                    "event_id": "after-merge",
                    "occurred_at": BASE + 4 * DAY,
                    "type": "login",
                    "identifiers": {"email": "legacy2@example.org", "phone": "+442079460003"},
                },
            )
        )
        await produce(
            stack.bootstrap,
            [(channel_topic(stack, c), None, orjson.dumps(e), []) for c, e in new],
            None,
        )
        db = stack.database

        async def stored() -> bool:
            try:
                return int(await scalar(ch, f"SELECT count() FROM {db}.events")) == len(new)
            except Exception:  # the worker has not created the tables yet
                return False

        await wait_for(stored, worker, 180, "the new events")
        await settled(stack, topics, worker)
        await asyncio.sleep(1)
        rows = (
            await ch.query(f"SELECT customer_id, touchpoints FROM {db}.customer_360")
        ).result_rows
        now = {cid: n for cid, n in rows}
        survivor, absorbed = by_email["legacy2@example.org"], by_email["legacy3@example.org"]
        added: dict[str, int] = {}
        for _channel, e in new:
            cid = by_email[e["identifiers"]["email"]]
            added[cid] = added.get(cid, 0) + 1
        for cid, (_, touchpoints, _ids) in old.items():
            if cid not in (survivor, absorbed):
                # the old journey goes on: its touchpoints, then each new event
                assert now[cid] == touchpoints + added[cid], (cid, now.get(cid), touchpoints)
        assert absorbed not in now  # merged away
        expected = old[survivor][1] + old[absorbed][1] + added[survivor] + added[absorbed]
        assert now[survivor] == expected
        print(
            (
                await ch.query(
                    f"SELECT event_id, customer_id, case_id, repeat_contact FROM {db}.effort"
                )
            ).result_rows
        )
        print(
            (
                await ch.query(f"SELECT event_id, channel, case_id, flags FROM {db}.events")
            ).result_rows
        )
        repeat = await scalar(
            ch, f"SELECT repeat_contact FROM {db}.effort WHERE event_id = 'after-call-5'"
        )
        assert repeat == 1  # the old case came along with its customer
    finally:
        worker.stop()
