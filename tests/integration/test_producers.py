"""The example producers in other languages, built and run against the test broker.

``examples/producers/java`` is built with Maven (kafka-clients from Maven Central, as the
broker's own jars are fetched; the build is cached outside the repository) and
``examples/producers/go`` with the Go toolchain (franz-go from the Go module proxy,
``go vet`` first). Each publishes to the session's Apache Kafka broker; every record it
wrote must be an event ``streams.domain.ingest`` accepts, keyed by the customer's CRM id.
Like the broker, these skip on a laptop without the toolchain and fail in CI.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from schemas.ingested import IngestedEvent, SourceRecord
from streams.domain.ingest import ingest
from streams.runtime.app import ingest_rules
from streams.settings import Settings
from streams.tools.embedded.kafka import cache_dir
from tests.integration.kafka_records import end_offsets, records_after

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "producers"


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        reason = f"the {tool} toolchain is not on the PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; example producers are built in CI")
        pytest.skip(reason)


def sources_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def built_java_producer() -> Path:
    """The compiled example and its runtime jars, built once per version of its sources."""
    source = EXAMPLES / "java"
    target = cache_dir() / f"java-producer-{sources_digest(source)}"
    if (target / ".complete").is_file():
        return target
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    built = subprocess.run(
        ["mvn", "-B", "-q", "compile", "dependency:copy-dependencies", "-DincludeScope=runtime"],
        cwd=target, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (target / ".complete").write_text("built\n")
    return target


async def create(bootstrap: str, topics: list[str]) -> None:
    """Create those of ``topics`` that do not exist (the producers share touchpoints.web)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        missing = [t for t in topics if t not in set(await admin.list_topics())]
        if missing:
            await admin.create_topics([NewTopic(t, 4, 1) for t in missing])
    finally:
        await admin.close()


async def every_record_is_an_accepted_event_keyed_by_the_customer(
    bootstrap: str, topics: list[str], starts: dict[str, dict[int, int]], expected: int
) -> None:
    rules = ingest_rules(Settings())
    now = datetime.now(UTC)
    seen = 0
    for topic in topics:
        for record in await records_after(bootstrap, topic, starts[topic]):
            result = ingest(
                SourceRecord(
                    record.topic,
                    record.partition,
                    record.offset,
                    record.timestamp,
                    record.key,
                    record.value,
                    tuple(record.headers),
                ),
                rules,
                now,
            )
            assert isinstance(result, IngestedEvent), (record.value, result)
            assert record.key == orjson.loads(record.value)["identifiers"]["crm_id"].encode()
            seen += 1
    assert seen == expected


async def test_the_java_example_producer_publishes_events_the_processor_accepts(
    kafka_bootstrap: str,
) -> None:
    need("mvn")
    need("java")
    prefix = "touchpoints."  # the real topic names: an event's channel must match its topic
    topics = [prefix + channel for channel in ("web", "call_center", "survey")]
    await create(kafka_bootstrap, topics)
    starts = {t: await end_offsets(kafka_bootstrap, t) for t in topics}
    build = await asyncio.to_thread(built_java_producer)
    ran = await asyncio.to_thread(
        subprocess.run,
        ["java", "-cp", f"{build / 'target' / 'classes'}{os.pathsep}{build / 'target' / 'dependency'}/*",
         "example.touchpoints.TouchpointProducer", kafka_bootstrap, prefix, "12"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "published 36 touchpoints" in ran.stdout
    await every_record_is_an_accepted_event_keyed_by_the_customer(
        kafka_bootstrap, topics, starts, 36
    )


async def test_the_go_example_producer_is_vetted_builds_and_publishes_accepted_events(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    need("go")
    env = {
        **os.environ,
        "GOMODCACHE": str(cache_dir() / "go-mod"),
        "GOFLAGS": "-mod=readonly",
        "CGO_ENABLED": "0",
    }
    source = EXAMPLES / "go"
    binary = tmp_path / "producer"
    for step in (["go", "vet", "./..."], ["go", "build", "-o", str(binary), "."]):
        done = await asyncio.to_thread(
            subprocess.run,
            step, cwd=source, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{' '.join(step)}:\n{done.stdout}{done.stderr}"
    prefix = "touchpoints."
    topics = [prefix + channel for channel in ("web", "chat", "survey")]
    await create(kafka_bootstrap, topics)
    starts = {t: await end_offsets(kafka_bootstrap, t) for t in topics}
    ran = await asyncio.to_thread(
        subprocess.run,
        [str(binary), "-bootstrap", kafka_bootstrap, "-prefix", prefix, "-customers", "12"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    await every_record_is_an_accepted_event_keyed_by_the_customer(
        kafka_bootstrap, topics, starts, 36
    )
