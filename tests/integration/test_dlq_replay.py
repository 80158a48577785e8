"""``touchpoint dlq replay`` on the real broker and ClickHouse, with real workers.

A worker dead-letters messages for a cause that is then fixed (its size limit); the
dry run lists them without publishing, ``--execute`` re-publishes each one once with
its original value, key and headers, a second run publishes nothing, and a worker with
the fixed setting accepts them. Concurrent runs share the work: each dead letter is
published by exactly one of them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.clickhouse import quote_identifier
from schemas.dead_letter import DeadLetter, Reason
from sinks.dlq_replay import ReplayFilter, execute_replay, plan_replay
from sinks.rows import dead_letter_row
from tests.integration import test_worker_end_to_end as e2e
from tests.integration.kafka_records import end_offsets, records_after
from tests.integration.test_worker_end_to_end import (
    Stack,
    accounting,
    channel_topic,
    create_topics,
    event,
    produce,
    scalar,
    started,
    wait_for,
)

# the end to end tests' fixtures: a worker stack on the session's broker and ClickHouse
stack = e2e.stack
ch = e2e.ch

pytestmark = pytest.mark.integration

SMALL_LIMIT = 1024  # the cause: a limit too small for real events, later raised
#: Dead letters the concurrent runs share: enough that no query may list them all
LETTERS = 200


def big_event(event_id: str) -> bytes:
    """A valid event of about 1.5 KB: dead-lettered as too_large under SMALL_LIMIT."""
    return orjson.dumps(event(event_id, properties={"note": "x" * 1200}))


def replay(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", "dlq", "replay", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def test_dead_letters_are_listed_replayed_once_and_accepted_after_the_fix(
    stack: Stack, ch: Any
) -> None:
    web = channel_topic(stack, "web")
    await create_topics(stack, [web])
    db = stack.database
    big = {f"big-{i}": big_event(f"big-{i}") for i in range(6)}
    messages = [
        *((web, f"key-{eid}".encode(), raw, [("origin", b"shop")]) for eid, raw in big.items()),
        *((web, None, b"{broken json", []) for _ in range(3)),  # still broken after the fix
        *((web, None, orjson.dumps(event(f"ok-{i}")), []) for i in range(4)),
    ]
    stack.env["TOUCHPOINT_MAX_EVENT_BYTES"] = str(SMALL_LIMIT)
    first = await started(stack.start_worker("small-limit"))
    try:
        await produce(stack.bootstrap, messages, None)

        async def dead_lettered() -> bool:
            return bool(await scalar(ch, f"SELECT count() FROM {db}.dead_letters") == 9)

        await wait_for(dead_lettered, first, what="nine dead letters in ClickHouse")
        assert (await accounting(first))["accepted"] == 4
    finally:
        first.stop()

    before = await end_offsets(stack.bootstrap, web)

    # --- dry run: lists what it would publish, publishes nothing
    dry = replay(stack, "--reason", "too_large", "--topic", web, "--since", "1h", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["mode"] == "dry_run"
    assert (plan["selected"], plan["already_replayed"], plan["failed_again"]) == (6, 0, 0)
    assert plan["by_reason"] == {"too_large": 6}
    assert plan["by_topic"] == {web: 6}
    assert sorted(x["bytes"] for x in plan["dead_letters"]) == sorted(map(len, big.values()))
    assert all("raw" not in x and "key" not in x for x in plan["dead_letters"])  # no content
    text = replay(stack, "--reason", "too_large")
    assert text.returncode == 0, text.stderr
    assert "dry run" in text.stdout and "too_large" in text.stdout
    assert await end_offsets(stack.bootstrap, web) == before

    # --- the cause is fixed: a worker with the default limit
    del stack.env["TOUCHPOINT_MAX_EVENT_BYTES"]
    second = await started(stack.start_worker("fixed"))
    try:
        done = replay(stack, "--reason", "too_large", "--execute", "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["published"] == 6
        assert result["published_counts"]["by_reason"] == {"too_large": 6}
        assert (result["failed"], result["claimed_elsewhere"]) == (0, 0)

        again = replay(stack, "--reason", "too_large", "--execute", "--json")
        assert again.returncode == 0, again.stderr
        repeat = json.loads(again.stdout)
        assert (repeat["selected"], repeat["published"], repeat["already_replayed"]) == (0, 0, 6)

        # exactly the six originals are on the topic again: value, key and headers,
        # without the processor's touchpoint.dlq.* headers
        replayed = await records_after(stack.bootstrap, web, before)
        assert sorted(r.value for r in replayed) == sorted(big.values())
        for record in replayed:
            eid = orjson.loads(record.value)["event_id"]
            assert record.key == f"key-{eid}".encode()
            assert list(record.headers) == [("origin", b"shop")]

        async def accepted() -> bool:
            ids = await scalar(
                ch, f"SELECT groupArray(event_id) FROM {db}.events WHERE event_id LIKE 'big-%'"
            )
            return sorted(ids) == sorted(big)

        await wait_for(accepted, second, what="the replayed events accepted")
        totals = await accounting(second)
        assert (totals["consumed"], totals["accepted"], totals["dead_lettered"]) == (6, 6, 0)

        ledger = (
            await ch.query(
                f"SELECT status, count() FROM {db}.dlq_replays GROUP BY status ORDER BY status"
            )
        ).result_rows
        assert ledger == [("published", 6)]
        # the broken JSON is still a dead letter nobody replayed
        left = replay(stack, "--json")
        assert json.loads(left.stdout)["by_reason"] == {"not_json": 3}

        # replayed while still broken: dead-lettered again, and the next plan says so
        broken = replay(stack, "--reason", "not_json", "--execute", "--json")
        assert json.loads(broken.stdout)["published"] == 3

        async def dead_lettered_again() -> bool:
            letters = await scalar(
                ch, f"SELECT count() FROM {db}.dead_letters WHERE reason = 'not_json'"
            )
            return bool(letters == 6)

        await wait_for(dead_lettered_again, second, what="the broken ones dead-lettered again")
        again = json.loads(replay(stack, "--reason", "not_json", "--json").stdout)
        assert (again["selected"], again["already_replayed"], again["failed_again"]) == (3, 3, 3)
        assert "failed again" in replay(stack, "--reason", "not_json").stdout
    finally:
        second.stop()


async def test_concurrent_runs_publish_each_dead_letter_exactly_once(
    stack: Stack, clickhouse_client: Any, clickhouse_database: str
) -> None:
    topic = channel_topic(stack, "app")
    await create_topics(stack, [topic])
    received = datetime.now(UTC)
    letters = [
        DeadLetter(
            reason=Reason.NOT_JSON,
            detail="test",
            source_topic=topic,
            source_partition=i % 4,
            source_offset=1000 + i,
            source_timestamp=received,
            key=f"k{i}".encode(),
            raw=f"payload-{i}".encode(),
            headers=(("h", b"v"),),
            event_id=None,
            received_at=received,
        )
        for i in range(LETTERS)
    ]
    db = quote_identifier(clickhouse_database)
    await clickhouse_client.insert(
        f"{db}.dead_letters_store",
        [list(dead_letter_row(letter)) for letter in letters],
        settings={"async_insert": 0},
    )
    # both runs plan before either claims: each sees every one as not yet replayed
    plans = [
        await plan_replay(clickhouse_client, clickhouse_database, ReplayFilter()) for _ in range(2)
    ]
    assert [len(p.selected) for p in plans] == [LETTERS, LETTERS]
    before = await end_offsets(stack.bootstrap, topic)

    producers = [AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all") for _ in plans]
    for producer in producers:
        await producer.start()
    try:
        results = await asyncio.gather(
            *(
                execute_replay(
                    clickhouse_client,
                    clickhouse_database,
                    producer,
                    plan,
                    replay_id=uuid.uuid4().hex,
                    partitions={topic: 4},
                    now=datetime.now(UTC),
                )
                for producer, plan in zip(producers, plans, strict=True)
            )
        )
    finally:
        for producer in producers:
            await producer.stop()

    published = [letter.coordinates for r in results for letter, _, _ in r.published]
    assert sorted(published) == sorted(letter.coordinates for letter in plans[0].selected)
    one, two = results
    assert {x.coordinates for x, _, _ in one.published} == {
        x.coordinates for x in two.claimed_elsewhere
    }
    assert {x.coordinates for x, _, _ in two.published} == {
        x.coordinates for x in one.claimed_elsewhere
    }
    on_topic = await records_after(stack.bootstrap, topic, before)
    assert sorted(r.value for r in on_topic) == sorted(
        f"payload-{i}".encode() for i in range(LETTERS)
    )
    # a replayed record goes back to the partition it came from
    by_value = {r.value: r.partition for r in on_topic}
    assert all(by_value[f"payload-{i}".encode()] == i % 4 for i in range(LETTERS))

    # ClickHouse kept one claim per dead letter: the second run's claims were dropped
    claims = await clickhouse_client.query(f"SELECT count() FROM {db}.dlq_replay_claims_store")
    assert claims.result_rows[0][0] == LETTERS
    later = await plan_replay(clickhouse_client, clickhouse_database, ReplayFilter())
    assert (len(later.selected), later.already_replayed) == (0, LETTERS)
