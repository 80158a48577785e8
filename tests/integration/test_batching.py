"""Record batches through Faust on a real broker: offsets commit exactly what was acked.

Each test runs a small Faust app in a child process (Faust owns its event loop) and
reads back what the consumer group committed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration

_APP = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    import faust
    from aiokafka import TopicPartition
    from streams.runtime.batching import BatchingApp, RecordBatch

    bootstrap, topic_name, group, total, skip_batch, workdir, reseek = sys.argv[1:8]
    total, skip_batch, reseek = int(total), int(skip_batch), reseek == "1"
    app = BatchingApp(group, broker=f"kafka://{bootstrap}", store="memory://",
                      datadir=workdir, web_enabled=False, topic_partitions=2,
                      broker_max_poll_records=100, broker_commit_interval=0.5)
    app.batched_topics = frozenset([topic_name])
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw", acks=True)
    seen = {"records": 0, "batches": [], "started": 0.0}
    offsets = set()

    def done():
        return len(offsets) >= total

    def finish():
        print("RESULT " + json.dumps(seen), flush=True)
        os._exit(0)

    @app.timer(interval=1.0)
    async def give_up():
        # without a redelivery nothing more arrives: report what was seen
        if seen["batches"] and time.monotonic() - seen["started"] > 30:
            finish()

    @app.agent(topic)
    async def agent(stream):
        async for event in stream.noack().events():
            batch = event.value
            assert isinstance(batch, RecordBatch)
            index = len(seen["batches"])
            seen["batches"].append([batch.partition, batch.first_offset, batch.last_offset])
            seen["records"] += len(batch)
            offsets.update((batch.partition, o) for o in range(batch.first_offset, batch.last_offset + 1))
            if index != skip_batch:
                event.ack()
            if index == 0:
                seen["started"] = time.monotonic()
            if index == 0 and reseek:
                # what a rebalance leaves behind: the flow stops, records the client
                # fetched are dropped, the consumer seeks to the committed offsets
                consumer = app.consumer
                consumer.stop_flow()
                await asyncio.sleep(1.5)  # the fetcher parks until the flow resumes
                thread = consumer._thread
                client = thread._ensure_consumer()
                tp = TopicPartition(batch.topic, batch.partition)
                dropped = await thread.call_thread(
                    client.getmany, tp, timeout_ms=5000, max_records=50)
                seen["dropped"] = sum(len(r) for r in dropped.values())
                await consumer.perform_seek()
                consumer.resume_flow()
            if done():
                seen["distinct"] = len(offsets)
                await asyncio.sleep(2.0)  # two commit intervals
                await app.consumer.commit()
                print("RESULT " + json.dumps(seen), flush=True)
                os._exit(0)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    """
)


async def _produce(bootstrap: str, topic: str, per_partition: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(per_partition * 2):
            await producer.send(topic, json.dumps({"i": i}).encode(), partition=i % 2)
        await producer.flush()
    finally:
        await producer.stop()


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)}
    finally:
        await consumer.stop()


def _run_app(
    tmp_path: Path,
    bootstrap: str,
    topic: str,
    group: str,
    total: int,
    skip: int,
    reseek: bool = False,
) -> dict:
    script = tmp_path / "app.py"
    script.write_text(_APP)
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            bootstrap,
            topic,
            group,
            str(total),
            str(skip),
            str(tmp_path),
            "1" if reseek else "0",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    # Faust's terminal handling may put escape codes before the line
    lines = [line.split("RESULT ", 1)[1] for line in proc.stdout.splitlines() if "RESULT " in line]
    assert lines, f"app failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return dict(json.loads(lines[-1]))


async def test_acked_batches_commit_to_the_end_of_every_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic, group = f"touchpoints.batch_{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await _produce(kafka_bootstrap, topic, per_partition=450)

    seen = await asyncio.to_thread(_run_app, tmp_path, kafka_bootstrap, topic, group, 900, -1)

    assert seen["records"] == 900
    assert len(seen["batches"]) < 900 / 10, "records must arrive in batches, not one by one"
    assert await _committed(kafka_bootstrap, group, topic) == {0: 450, 1: 450}


async def test_commit_never_passes_a_batch_that_was_not_acked(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic, group = f"touchpoints.batch_{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await _produce(kafka_bootstrap, topic, per_partition=450)

    seen = await asyncio.to_thread(_run_app, tmp_path, kafka_bootstrap, topic, group, 900, 1)

    skipped_partition, skipped_first, _ = seen["batches"][1]
    committed = await _committed(kafka_bootstrap, group, topic)
    assert committed[skipped_partition] == skipped_first
    assert committed[1 - skipped_partition] == 450


async def test_a_seek_on_a_partition_nobody_committed_rereads_the_dropped_records_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Faust seeks to the committed offsets after dropping records it fetched (flow
    stopped for a rebalance or recovery). A partition without a commit must go back to
    its beginning, or the dropped records are skipped for good; what the agent already
    received in this generation must not reach it a second time."""
    topic, group = f"touchpoints.batch_{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await _produce(kafka_bootstrap, topic, per_partition=450)

    seen = await asyncio.to_thread(_run_app, tmp_path, kafka_bootstrap, topic, group, 900, 0, True)

    assert seen["dropped"] > 0, "the test must drop fetched records to mean anything"
    assert seen.get("distinct") == 900, f"records were skipped: {seen['batches'][:10]}"
    # and what this consumer generation delivered before the seek is not delivered again
    assert seen["records"] == 900, f"records were delivered twice: {seen['batches'][:10]}"
