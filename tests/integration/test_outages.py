"""A worker rides out outages of Kafka and ClickHouse, waits for them at start, and ends
promptly and non-zero when it has truly failed (findings 5 and 6 of the trust issue).

Each test runs its own Apache Kafka and ClickHouse engine, so that it can stop and start
them, and real worker processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.tools.embedded.clickhouse import EmbeddedClickHouse
from streams.tools.embedded.kafka import ApacheKafka, java_available
from streams.tools.embedded.process import free_port
from streams.tools.workers import WorkerProcess
from tests.integration.test_worker_end_to_end import produce

pytestmark = pytest.mark.integration

TOPIC = "touchpoints.web"


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[ApacheKafka]:
    if not java_available():
        reason = "Apache Kafka needs Java 17+ and Maven on the PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; integration tests never skip in CI")
        pytest.skip(reason)
    kafka = ApacheKafka(tmp_path / "kafka", partitions=2, heap="512m")
    kafka.port, kafka._controller_port = free_port(), free_port()  # known before it runs
    kafka.bootstrap = f"127.0.0.1:{kafka.port}"
    yield kafka
    kafka.stop()


@pytest.fixture
def own_clickhouse(tmp_path: Path) -> Iterator[EmbeddedClickHouse]:
    clickhouse = EmbeddedClickHouse(tmp_path / "clickhouse")
    clickhouse.port = free_port()
    clickhouse.url = f"http://127.0.0.1:{clickhouse.port}"
    yield clickhouse
    clickhouse.stop()


def worker(tmp_path: Path, kafka: ApacheKafka, clickhouse: EmbeddedClickHouse) -> WorkerProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
    env.update(
        {
            "TOUCHPOINT_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "TOUCHPOINT_CLICKHOUSE_URL": clickhouse.url,
            "TOUCHPOINT_APP_ID": "outages",
            "TOUCHPOINT_TOPIC_PARTITIONS": "2",
            "TOUCHPOINT_DATA_DIR": str(tmp_path / "state"),
            "TOUCHPOINT_KAFKA_SESSION_TIMEOUT_S": "10",
            "TOUCHPOINT_TOPIC_DISCOVERY_INTERVAL_S": "1",
            "TOUCHPOINT_SINK_LINGER_S": "0.2",
        }
    )
    return WorkerProcess("w", env, tmp_path / "worker.log")


async def create_topic(kafka: ApacheKafka) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 2, 1)])
    finally:
        await admin.close()


def events(prefix: str, n: int) -> list[Any]:
    now = int(time.time() * 1000)
    return [
        (
            TOPIC,
            None,
            orjson.dumps(
                {
                    "event_id": f"{prefix}-{i}",
                    "occurred_at": now - 60_000,
                    "type": "page_view",
                    "identifiers": {"anonymous_id": f"{prefix}-visitor-{i % 7}"},
                }
            ),
            [],
        )
        for i in range(n)
    ]


def stored(clickhouse: EmbeddedClickHouse) -> int:
    client = clickhouse_connect.get_client(dsn=clickhouse.url, autogenerate_session_id=False)
    try:
        return int(client.query("SELECT count() FROM touchpoints.events").result_rows[0][0])
    finally:
        client.close()


async def until(predicate: Any, proc: WorkerProcess, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # ClickHouse not there yet
            pass
        assert proc.alive, (
            f"the worker exited ({proc.exit_code}) waiting for {what}:\n{proc.tail()}"
        )
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{proc.tail()}")


async def test_a_worker_started_before_kafka_and_clickhouse_waits_for_them(
    tmp_path: Path, own_kafka: ApacheKafka, own_clickhouse: EmbeddedClickHouse
) -> None:
    proc = worker(tmp_path, own_kafka, own_clickhouse)
    proc.start()
    try:
        await until(lambda: "waiting for Kafka at" in proc.tail(), proc, 30, "it to say it waits")
        await asyncio.to_thread(own_clickhouse.start)
        await asyncio.to_thread(own_kafka.start)
        await create_topic(own_kafka)
        await produce(own_kafka.bootstrap, events("late", 30), None)
        await until(lambda: stored(own_clickhouse) == 30, proc, 120, "the events to be stored")
    finally:
        proc.stop()


async def test_a_worker_rides_out_a_broker_outage_and_loses_nothing(
    tmp_path: Path, own_kafka: ApacheKafka, own_clickhouse: EmbeddedClickHouse
) -> None:
    await asyncio.to_thread(own_clickhouse.start)
    await asyncio.to_thread(own_kafka.start)
    await create_topic(own_kafka)
    proc = worker(tmp_path, own_kafka, own_clickhouse)
    proc.start()
    try:
        await asyncio.to_thread(proc.wait_ready)
        await produce(own_kafka.bootstrap, events("before", 40), None)
        await until(lambda: stored(own_clickhouse) == 40, proc, 90, "the first events")
        await asyncio.to_thread(own_kafka.stop)  # the log stays: it was given a directory
        await asyncio.sleep(12)  # longer than a topic-discovery tick and a heartbeat
        assert proc.alive, f"the worker ended during the outage:\n{proc.tail()}"
        await asyncio.to_thread(own_kafka.start)
        await produce(own_kafka.bootstrap, events("after", 40), None)
        await until(lambda: stored(own_clickhouse) == 80, proc, 120, "the events after it")
    finally:
        proc.stop()


async def test_a_stop_while_clickhouse_is_down_ends_within_the_bound_and_loses_nothing(
    tmp_path: Path, own_kafka: ApacheKafka, own_clickhouse: EmbeddedClickHouse
) -> None:
    await asyncio.to_thread(own_clickhouse.start)
    await asyncio.to_thread(own_kafka.start)
    await create_topic(own_kafka)
    proc = worker(tmp_path, own_kafka, own_clickhouse)
    proc.env["TOUCHPOINT_SHUTDOWN_TIMEOUT_S"] = "20"
    proc.start()
    try:
        await asyncio.to_thread(proc.wait_ready)
        await produce(own_kafka.bootstrap, events("first", 20), None)
        await until(lambda: stored(own_clickhouse) == 20, proc, 90, "the first events")
        await asyncio.to_thread(own_clickhouse.kill)
        await produce(own_kafka.bootstrap, events("unstored", 20), None)
        await asyncio.sleep(3)  # read, and waiting for ClickHouse
        took = await asyncio.to_thread(proc.stop, signal.SIGTERM, 60.0)
        assert took < 25, f"the stop took {took:.0f} s:\n{proc.tail()}"
        await asyncio.to_thread(own_clickhouse.start)
        proc.start()
        await until(lambda: stored(own_clickhouse) == 40, proc, 120, "every event stored")
    finally:
        proc.stop()


_CRASHING_APP = textwrap.dedent(
    """
    import sys
    from mode import CrashingSupervisor
    from streams.runtime.batching import BatchingApp
    from streams.runtime.lifecycle import SupervisedWorker

    bootstrap, topic_name, workdir = sys.argv[1:4]
    app = BatchingApp("crash-" + topic_name, broker=f"kafka://{bootstrap}", store="memory://",
                      datadir=workdir, web_enabled=False, topic_partitions=1,
                      consumer_metadata_max_age_ms=1000)
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw")

    @app.agent(topic, supervisor_strategy=CrashingSupervisor)
    async def agent(stream):
        async for _ in stream:
            raise RuntimeError("a defect in an agent")

    SupervisedWorker(app, loglevel="INFO", quiet=True, redirect_stdouts=False,
                     crash_exit_s=3.0).execute_from_commandline()
    """
)


async def test_a_worker_whose_app_crashed_exits_promptly_and_non_zero(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = f"crash-{os.getpid()}-{int(time.time())}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    log = tmp_path / "crash.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CRASHING_APP,
            kafka_bootstrap,
            topic,
            str(tmp_path / "d"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Produce only once the worker owns the partition: a fixed sleep is
        # too short on a loaded machine.
        deadline = time.monotonic() + 90
        while "Worker ready" not in log.read_text():
            assert proc.returncode is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
        assert f"| {topic} " in log.read_text().split("Setting newly assigned partitions")[-1]
        sent = time.monotonic()
        await produce(kafka_bootstrap, [(topic, None, b"boom", [])], None)
        code = await asyncio.wait_for(proc.wait(), 60)
        assert code == 1, log.read_text()[-3000:]
        assert time.monotonic() - sent < 20, log.read_text()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
