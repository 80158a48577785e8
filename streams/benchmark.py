"""The throughput benchmark: ceiling, bare Faust, and this worker, side by side in one run.

All three read the same events from the same Apache Kafka broker:

(a) ceiling: an aiokafka ``getmany`` loop that parses each value with orjson and
    counts events per customer in a dict: what Python can pull off the broker;
(b) bare Faust: a Faust agent iterating the events one by one with no state: the
    framework's floor, what any Faust agent pays per message;
(c) this worker, end to end: ``touchpoint worker`` validating, normalising and
    de-duplicating every event and storing it in ClickHouse; measured from its first
    consumed event until ClickHouse holds every event.

Each rate is events divided by the time from the first to the last event, so start-up
and group joins are excluded for all three alike. Peak RSS is the kernel's high-water
mark (VmHWM) of each process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["BenchResult", "run_ceiling", "run_faust_floor"]


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
