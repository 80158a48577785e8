"""The throughput benchmark: ceiling, bare Faust, and this worker, side by side in one run.

All three read the same events from the same Apache Kafka broker:

(a) ceiling: an aiokafka ``getmany`` loop that parses each value with orjson and
    counts events per customer in a dict: what Python can pull off the broker;
(b) bare Faust: a Faust agent iterating the events one by one with no state: the
    framework's floor, what any Faust agent pays per message;
(c) this worker, end to end: ``touchpoint worker`` validating, normalising and
    de-duplicating every event and storing it in ClickHouse; measured from its first
    consumed event until ClickHouse holds every event.

With ``--latency``, a fourth phase offers 75 % of (c)'s rate, live, to a fresh worker
with a webhook endpoint, and times each detractor answer from its send to the webhook
that names it (p50, p99).

Each rate is events divided by the time from the first to the last event, so start-up
and group joins are excluded for all three alike. Peak RSS is the kernel's high-water
mark (VmHWM) of each process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["BenchResult", "LatencyResult", "alert_latency", "run_ceiling", "run_faust_floor"]


@dataclass(frozen=True)
class BenchResult:
    """One measured loop: events, seconds from first to last event, peak RSS in MiB."""

    name: str
    events: int
    seconds: float
    peak_rss_mib: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def peak_rss_mib(pid: int | None = None) -> float:
    """The VmHWM of a process (this one by default), in MiB; 0 where /proc is absent."""
    path = Path(f"/proc/{pid or 'self'}/status")
    try:
        for line in path.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def run_ceiling(bootstrap: str, topics: list[str], events: int) -> BenchResult:
    """(a) aiokafka getmany + orjson + a dict aggregate: the ceiling."""
    import orjson
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"bench-ceiling-{os.getpid()}-{time.monotonic_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    per_customer: Counter[str] = Counter()
    seen = 0
    first = 0.0
    try:
        while seen < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                if not first:
                    first = time.perf_counter()
                for record in records:
                    document = orjson.loads(record.value)
                    identifiers = document["identifiers"]
                    per_customer[next(iter(identifiers.values()))] += 1
                seen += len(records)
        elapsed = time.perf_counter() - first
    finally:
        await consumer.stop()
    return BenchResult("ceiling (aiokafka getmany + orjson)", seen, elapsed, peak_rss_mib())


def run_faust_floor(bootstrap: str, topics: list[str], events: int, workdir: Path) -> BenchResult:
    """(b) a bare Faust agent, one event at a time, no state; in its own process."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.benchmark",
            "faust-floor",
            bootstrap,
            ",".join(topics),
            str(events),
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    # Faust's terminal handling may put escape codes before the line
    lines = [line.split("RESULT ", 1)[1] for line in proc.stdout.splitlines() if "RESULT " in line]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bare Faust run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return BenchResult(**json.loads(lines[-1]))


def _faust_floor_main(bootstrap: str, topics: str, events: int, workdir: str) -> None:
    """Child process of :func:`run_faust_floor`: prints one JSON result line."""
    import faust

    app = faust.App(
        f"bench-faust-floor-{os.getpid()}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=workdir,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
    )
    topic = app.topic(*topics.split(","), value_serializer="raw", key_serializer="raw")
    state = {"seen": 0, "first": 0.0}

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for _value in stream:
            if not state["seen"]:
                state["first"] = time.perf_counter()
            state["seen"] += 1
            if state["seen"] >= events:
                elapsed = time.perf_counter() - state["first"]
                result = BenchResult(
                    "bare Faust agent (one event at a time)",
                    int(state["seen"]),
                    elapsed,
                    peak_rss_mib(),
                )
                sys.stdout.write("RESULT " + json.dumps(asdict(result)) + "\n")
                sys.stdout.flush()
                os._exit(0)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "faust-floor":
        _faust_floor_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        raise SystemExit("usage: python -m streams.benchmark faust-floor BOOTSTRAP TOPICS N DIR")


@dataclass(frozen=True)
class LatencyResult:
    """Alert latency: from producing the answer that tips a rule to the webhook request."""

    rate: float  # events per second offered
    seconds: float
    produced: int
    tipping: int  # detractor answers produced
    delivered: int  # of those, webhooks received
    p50_s: float
    p99_s: float
    max_s: float


async def alert_latency(
    bootstrap: str, topics: list[str], rate: float, seconds: float, port: int
) -> LatencyResult:
    """Offer ``rate`` events/s for ``seconds`` to ``topics`` (one in 20 an NPS answer,
    most of those detractors) and time each detractor answer until the webhook naming
    it reaches a receiver on ``port``."""
    import statistics

    import orjson
    from aiohttp import web
    from aiokafka import AIOKafkaProducer

    sent_at: dict[str, float] = {}
    arrived: dict[str, float] = {}
    all_in = asyncio.Event()
    done_producing = False

    def every_one_arrived() -> bool:
        return done_producing and len(arrived) >= len(sent_at)

    async def receive(request: web.Request) -> web.Response:
        now = time.time()
        body = orjson.loads(await request.read())
        if body.get("type") == "customer.detractor":
            arrived.setdefault(body["data"]["event_id"], now)  # only ours are detractors
            if every_one_arrived():
                all_in.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    produced = 0
    try:
        tick = 0.01
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) - produced
            for _ in range(max(0, due)):
                i = produced
                produced += 1
                person = f"lat-{i % 20_000}"
                doc: dict[str, Any] = {
                    "event_id": f"lat-{i}",
                    "occurred_at": int(time.time() * 1000),
                    "type": "page_view",
                    "identifiers": {"email": f"{person}@example.com"},
                }
                if i % 20 == 0:
                    score = (3, 9, 5, 0, 6, 10, 2, 8, 4, 7, 1)[(i // 20) % 11]
                    doc.update(type="survey_response", survey={"metric": "nps", "score": score})
                    if score <= 6:
                        sent_at[doc["event_id"]] = time.time()
                await producer.send(topics[i % len(topics)], orjson.dumps(doc), key=person.encode())
            await asyncio.sleep(tick)
        await producer.flush()
        done_producing = True
        if not every_one_arrived():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_in.wait(), 120)
        duration = time.monotonic() - started
    finally:
        await producer.stop()
        await runner.cleanup()
    waits = sorted(arrived[e] - sent_at[e] for e in sent_at if e in arrived)
    cuts = statistics.quantiles(waits, n=100, method="inclusive") if len(waits) > 1 else waits * 99
    return LatencyResult(
        rate,
        duration,
        produced,
        len(sent_at),
        len(waits),
        cuts[49] if cuts else 0.0,
        cuts[98] if cuts else 0.0,
        waits[-1] if waits else 0.0,
    )
