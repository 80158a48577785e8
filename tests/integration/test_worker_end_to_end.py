"""The worker end to end: real Apache Kafka in, the real ClickHouse engine out.

Touchpoints of every kind go in (valid, repeated, broken; every compression codec;
with and without keys and headers); the test reads back what analysts see and what
the dead-letter topic holds, and checks that every message is accounted for.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.runtime.topics import uncommitted
from streams.tools.embedded.process import free_port

pytestmark = pytest.mark.integration

PARTITIONS = 4
CUSTOMER_PARTITIONS = 8
CODECS = (None, "gzip", "snappy", "lz4", "zstd")


@dataclass
class RunningWorker:
    proc: subprocess.Popen[bytes]
    web: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@dataclass
class Stack:
    bootstrap: str
    clickhouse_url: str
    database: str
    env: dict[str, str]
    tmp: Path

    def start_worker(self, name: str = "w1", state: Path | None = None) -> RunningWorker:
        port = free_port()
        log = self.tmp / f"{name}.log"
        env = {**self.env, "TOUCHPOINT_WEB_PORT": str(port)}
        if state is not None:  # another machine: local state only from the changelog
            env["TOUCHPOINT_DATA_DIR"] = str(state)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return RunningWorker(proc, f"http://127.0.0.1:{port}", log)


@pytest.fixture
def stack(
    kafka_bootstrap: str, clickhouse_server: Any, clickhouse_database: str, tmp_path: Path
) -> Iterator[Stack]:
    app_id = f"it-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "TOUCHPOINT_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TOUCHPOINT_CLICKHOUSE_URL": clickhouse_server.url,
        "TOUCHPOINT_CLICKHOUSE_DATABASE": clickhouse_database,
        "TOUCHPOINT_APP_ID": app_id,
        "TOUCHPOINT_DATA_DIR": str(tmp_path / "state"),
        "TOUCHPOINT_TOPIC_PARTITIONS": str(PARTITIONS),
        # customers live on more partitions than the input has: merges cross them
        "TOUCHPOINT_CUSTOMER_PARTITIONS": str(CUSTOMER_PARTITIONS),
        "TOUCHPOINT_TOPIC_PATTERN": rf"^touchpoints\.{app_id.replace('-', '_')}_[a-z0-9_]+$",
        "TOUCHPOINT_DLQ_TOPIC": f"touchpoints.{app_id}-dlq",
        "TOUCHPOINT_ALERTS_TOPIC": f"touchpoints.{app_id}-alerts",
        "TOUCHPOINT_MERGES_TOPIC": f"touchpoints.{app_id}-merges",
        "TOUCHPOINT_TOPIC_DISCOVERY_INTERVAL_S": "2",
        "TOUCHPOINT_SINK_LINGER_S": "0.2",
        "TOUCHPOINT_COMMIT_INTERVAL_S": "0.5",
        "TOUCHPOINT_KAFKA_SESSION_TIMEOUT_S": "10",
        "TOUCHPOINT_LOG_LEVEL": "INFO",
    }
    yield Stack(kafka_bootstrap, clickhouse_server.url, clickhouse_database, env, tmp_path)


def channel_topic(stack: Stack, channel: str) -> str:
    return f"touchpoints.{stack.env['TOUCHPOINT_APP_ID'].replace('-', '_')}_{channel}"


async def create_topics(stack: Stack, names: list[str], partitions: int = PARTITIONS) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


def event(event_id: str, channel: str | None = None, **extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": event_id,
        "occurred_at": int(time.time() * 1000) - 60_000,
        "type": "page_view",
        "identifiers": {"email": f" {event_id}@Example.com ", "device_id": "null"},
    }
    if channel:
        document["channel"] = channel
    document.update(extra)
    return document


async def produce(
    bootstrap: str,
    messages: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]],
    compression: str | None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=compression)
    await producer.start()
    try:
        for topic, key, value, headers in messages:
            await producer.send(topic, value, key=key, headers=headers or None)
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture
async def ch(stack: Stack) -> AsyncIterator[Any]:
    client = await clickhouse_connect.get_async_client(
        dsn=stack.clickhouse_url, autogenerate_session_id=False
    )
    yield client
    await client.close()


async def scalar(client: Any, sql: str) -> Any:
    return (await client.query(sql)).result_rows[0][0]


async def wait_for(
    predicate: Any, worker: RunningWorker, timeout: float = 120.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        assert worker.proc.poll() is None, f"worker exited:\n{worker.log_tail()}"
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{worker.log_tail()}")


async def settled(
    stack: Stack, topics: list[str], worker: RunningWorker, timeout: float = 90.0
) -> None:
    """Wait until the workers have committed every record of these topics and of the
    internal topics (resolve, customers, tallies).

    A worker commits an offset only once the rows it produced are stored in every table
    (tables are written one after the other), so a count in one table is no sign that
    the others are complete; committed offsets at the end of every partition are.
    """
    app_id = stack.env["TOUCHPOINT_APP_ID"]
    names = [*topics, f"{app_id}-resolve", f"{app_id}-customers", f"{app_id}-tallies"]
    behind: dict[tuple[str, int], tuple[int, int]] = {}

    async def caught_up() -> bool:
        behind.clear()
        behind.update(await uncommitted(stack.bootstrap, stack.env["TOUCHPOINT_APP_ID"], names))
        return not behind

    try:
        await wait_for(caught_up, worker, timeout=timeout, what="every record committed")
    except AssertionError as exc:
        lag = ", ".join(f"{t}[{p}] {a} of {e}" for (t, p), (a, e) in behind.items())
        raise AssertionError(f"not committed: {lag}") from exc


async def accounting(worker: RunningWorker) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{worker.web}/accounting", timeout=5)
        response.raise_for_status()
        return dict(response.json())


async def started(worker: RunningWorker) -> RunningWorker:
    """Wait until the worker serves its endpoints (schema migrated, topics subscribed)."""

    async def answers() -> bool:
        return await try_accounting(worker) is not None

    await wait_for(answers, worker, what="the worker to start")
    return worker


async def try_accounting(worker: RunningWorker) -> dict[str, Any] | None:
    try:
        return await accounting(worker)
    except httpx.HTTPError:
        return None


BAD_MESSAGES: dict[str, bytes] = {
    "not_json": b"{not json",
    "not_utf8": b"\xff\xfe\x00",
    "not_object": b"[1, 2, 3]",
    "missing_field": orjson.dumps(
        {"event_id": "m1", "type": "x", "identifiers": {"email": "a@b.c"}}
    ),
    "invalid_timestamp": orjson.dumps(event("bad-ts", occurred_at="yesterday")),
    "score_out_of_range": orjson.dumps(event("bad-nps", survey={"metric": "nps", "score": 11})),
    "channel_mismatch": orjson.dumps(event("bad-ch", channel="sms")),
    "no_usable_identifier": orjson.dumps(
        event("bad-ids", identifiers={"email": "null", "phone": "0"})
    ),
    "too_large": orjson.dumps(
        event("bad-big", properties={f"k{i}": "x" * 4000 for i in range(20)})
    ),
    "too_many_identifiers": orjson.dumps(
        event("bad-many", identifiers={f"x_k{i}": f"v{i}" for i in range(21)})
    ),
}


async def test_every_message_is_accepted_deduplicated_or_dead_lettered_and_nothing_is_lost(
    stack: Stack, ch: Any
) -> None:
    web, sms = channel_topic(stack, "web"), channel_topic(stack, "sms")
    dlq = stack.env["TOUCHPOINT_DLQ_TOPIC"]
    await create_topics(stack, [web, sms])
    worker = stack.start_worker()
    try:
        valid = 0
        for codec in CODECS:
            batch: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []
            for i in range(200):
                eid = f"{codec}-{i}"
                key = eid.encode() if i % 2 else None
                headers = [("trace", b"t-1")] if i % 3 == 0 else []
                topic = web if i % 4 else sms
                batch.append((topic, key, orjson.dumps(event(eid)), headers))
                valid += 1
            # repeats of already sent event ids, on another partition (other key) of the
            # same topic: which copy arrives first is up to the broker, not the count
            for i in range(0, 200, 10):
                topic = web if i % 4 else sms
                batch.append((topic, b"other-key", orjson.dumps(event(f"{codec}-{i}")), []))
            await produce(stack.bootstrap, batch, codec)
        bad = [(web, b"bad", raw, [("origin", b"test")]) for raw in BAD_MESSAGES.values()]
        await produce(stack.bootstrap, bad, None)
        total = valid + 20 * len(CODECS) + len(BAD_MESSAGES)

        async def all_consumed() -> bool:
            totals = await try_accounting(worker)
            return totals is not None and totals["consumed"] >= total

        await wait_for(all_consumed, worker, what="all messages consumed")
        totals = await accounting(worker)
        assert totals == {
            "consumed": total,
            "accepted": valid,
            "duplicates": 20 * len(CODECS),
            "dead_lettered": len(BAD_MESSAGES),
            "balanced": True,
        }

        db = stack.database

        async def stored() -> bool:
            events = await scalar(ch, f"SELECT count() FROM {db}.events")
            letters = await scalar(ch, f"SELECT count() FROM {db}.dead_letters")
            return bool(events == valid and letters == len(BAD_MESSAGES))

        await wait_for(stored, worker, what="rows in ClickHouse")
        reasons = (
            await ch.query(f"SELECT reason, hex(raw) FROM {db}.dead_letters ORDER BY reason")
        ).result_rows
        assert {r: bytes.fromhex(h) for r, h in reasons} == BAD_MESSAGES
        identifiers = await scalar(
            ch, f"SELECT identifiers FROM {db}.events WHERE event_id = 'gzip-3'"
        )
        assert identifiers == {"email": "gzip-3@example.com"}
        assert await scalar(ch, f"SELECT uniqExact(event_id) FROM {db}.events") == valid
        sms_channel = sms.rsplit(".", 1)[1]  # the channel is the topic's suffix
        sms_rows = await scalar(ch, f"SELECT countIf(channel = '{sms_channel}') FROM {db}.events")
        assert sms_rows == 50 * len(CODECS)

        letters = await consume_all(stack.bootstrap, dlq, len(BAD_MESSAGES))
        by_reason = {dict(m.headers)["touchpoint.dlq.reason"].decode(): m for m in letters}
        assert set(by_reason) == set(BAD_MESSAGES)
        for reason, message in by_reason.items():
            headers = dict(message.headers)
            assert message.value == BAD_MESSAGES[reason]
            assert message.key == b"bad"
            assert headers["origin"] == b"test"
            assert headers["touchpoint.dlq.source_topic"] == web.encode()
            assert int(headers["touchpoint.dlq.source_offset"]) >= 0

        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{worker.web}/metrics")).text
        assert 'touchpoint_messages_dead_lettered_total{reason="not_json"} 1.0' in metrics
    finally:
        worker.stop()


async def consume_all(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        while len(found) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                found.extend(records)
    finally:
        await consumer.stop()
    return found


async def test_a_worker_killed_mid_stream_resumes_without_loss_or_visible_duplicates(
    stack: Stack, ch: Any
) -> None:
    web = channel_topic(stack, "web")
    await create_topics(stack, [web])
    events = [(web, None, orjson.dumps(event(f"k-{i}")), []) for i in range(30_000)]
    await produce(stack.bootstrap, events[:15_000], "lz4")
    worker = await started(stack.start_worker("before-kill"))
    db = stack.database

    async def some_stored() -> bool:
        return bool(await scalar(ch, f"SELECT count() FROM {db}.events_store") > 2000)

    await wait_for(some_stored, worker, what="first rows stored")
    worker.stop(signal.SIGKILL)  # no flush, no commit: a crash
    await produce(stack.bootstrap, events[15_000:], "lz4")

    restarted = stack.start_worker("after-kill")
    try:

        async def all_stored() -> bool:
            return bool(await scalar(ch, f"SELECT count() FROM {db}.events") == 30_000)

        await wait_for(all_stored, restarted, timeout=180, what="every event after restart")
        assert await scalar(ch, f"SELECT uniqExact(event_id) FROM {db}.events") == 30_000
        totals = await accounting(restarted)
        assert totals["balanced"]
        # replays of messages the crashed worker had read are not mistaken for duplicates
        assert totals["duplicates"] == 0
    finally:
        restarted.stop()


async def test_a_new_channel_topic_is_read_without_a_restart(stack: Stack, ch: Any) -> None:
    web, chat = channel_topic(stack, "web"), channel_topic(stack, "chat")
    await create_topics(stack, [web])
    worker = await started(stack.start_worker())
    try:
        await produce(stack.bootstrap, [(web, None, orjson.dumps(event("w-1")), [])], None)
        await create_topics(stack, [chat])
        await produce(stack.bootstrap, [(chat, None, orjson.dumps(event("c-1")), [])], None)
        db = stack.database

        async def both() -> bool:
            rows = await ch.query(f"SELECT channel FROM {db}.events ORDER BY channel")
            return [r[0] for r in rows.result_rows] == [
                chat.rsplit(".", 1)[1],
                web.rsplit(".", 1)[1],
            ]

        await wait_for(both, worker, timeout=120, what="the new channel's event")
    finally:
        worker.stop()


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
async def test_events_from_the_java_client_are_accepted(
    stack: Stack, ch: Any, kafka_broker: Any, codec: str
) -> None:
    """Any producer works: here Apache Kafka's own console producer (the Java client)."""
    from streams.tools.embedded.kafka import fetch_kafka_jars

    web = channel_topic(stack, "web")
    await create_topics(stack, [web])
    worker = await started(stack.start_worker())
    try:
        lines = "".join(
            f"key-{i}|{orjson.dumps(event(f'java-{codec}-{i}')).decode()}\n" for i in range(50)
        )
        jars = fetch_kafka_jars(kafka_broker.version)
        produced = await asyncio.to_thread(
            subprocess.run,
            ["java", "-cp", f"{jars}/*", "org.apache.kafka.tools.ConsoleProducer",
             "--bootstrap-server", stack.bootstrap, "--topic", web,
             "--compression-codec", codec,
             "--property", "parse.key=true", "--property", "key.separator=|"],
            input=lines, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert produced.returncode == 0, produced.stderr
        db = stack.database

        async def all_there() -> bool:
            return bool(
                await scalar(ch, f"SELECT count() FROM {db}.events WHERE event_id LIKE 'java-%'")
                == 50
            )

        await wait_for(all_there, worker, what="events from the Java producer")
    finally:
        worker.stop()


# A worker on an empty state directory must restore the window from the changelog; that
# case stalled intermittently (recovery completes, then nothing is consumed) and is left
# out until the stall is understood: see "Known issues" in the README.
@pytest.mark.parametrize("new_machine", [False, True], ids=["same-state-dir", "empty-state-dir"])
async def test_the_duplicate_window_survives_a_restart(
    stack: Stack, ch: Any, new_machine: bool
) -> None:
    web = channel_topic(stack, "web")
    await create_topics(stack, [web])
    original = [(web, b"k1", orjson.dumps(event(f"p-{i}")), []) for i in range(100)]
    await produce(stack.bootstrap, original, None)
    first = await started(stack.start_worker("first"))
    db = stack.database

    async def stored() -> bool:
        return bool(await scalar(ch, f"SELECT count() FROM {db}.events") == 100)

    await wait_for(stored, first, what="the first hundred events")
    first.stop()  # a graceful stop: offsets and the window's changelog are committed

    second = await started(
        stack.start_worker("second", stack.tmp / "elsewhere" if new_machine else None)
    )
    try:
        # the same events again, as a producer retrying after a timeout would send them
        await produce(stack.bootstrap, original[:40], None)

        async def consumed() -> bool:
            totals = await try_accounting(second)
            return totals is not None and totals["consumed"] >= 40

        await wait_for(consumed, second, what="the re-sent events")
        totals = await accounting(second)
        assert (totals["accepted"], totals["duplicates"]) == (0, 40)
        assert await scalar(ch, f"SELECT count() FROM {db}.events") == 100
    finally:
        second.stop()
