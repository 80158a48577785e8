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
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

# the bare Faust loop runs this module in a child process (``faust-floor`` below), whose
# peak memory is measured: what else the command needs is imported where it is used

__all__ = [
    "BenchResult",
    "LatencyResult",
    "alert_latency",
    "cmd_benchmark",
    "run_ceiling",
    "run_faust_floor",
]


@dataclass(frozen=True)
class BenchResult:
    """One measured loop: events, seconds from first to last event, peak RSS in MiB."""

    name: str
    events: int
    seconds: float
    peak_rss_mib: float
    #: CPU seconds of the measured processes over the same span (None: not measured)
    cpu_s: float | None = None
    #: bytes of local state (RocksDB) the processes hold at the end, in MiB
    state_mib: float | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_s_per_1k(self) -> float | None:
        """CPU seconds per 1,000 events: holds across machines better than a rate."""
        return None if self.cpu_s is None else 1000 * self.cpu_s / self.events


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
    cpu = 0.0
    try:
        while seen < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                if not first:
                    first = time.perf_counter()
                    cpu = time.process_time()
                for record in records:
                    document = orjson.loads(record.value)
                    identifiers = document["identifiers"]
                    per_customer[next(iter(identifiers.values()))] += 1
                seen += len(records)
        elapsed = time.perf_counter() - first
    finally:
        await consumer.stop()
    return BenchResult(
        "ceiling (aiokafka getmany + orjson)",
        seen,
        elapsed,
        peak_rss_mib(),
        time.process_time() - cpu,
    )


def run_resolver(messages: Any, events: int, partitions: int) -> BenchResult:
    """(r) the resolver alone, in this process: identity, global repeats, watermarks and
    routing of events ingest has already turned into rows, against in-memory state, in
    records of 2,000 rows: the ceiling of the one global step of the pipeline."""
    from datetime import UTC, datetime

    import orjson

    from schemas.ingested import SourceRecord
    from streams.domain.dedup import DuplicateWindow
    from streams.domain.identity import Identity, IdentityRules, Resolver
    from streams.domain.ingest import triage
    from streams.domain.resolve import resolve_records
    from streams.domain.scores import Watermarks
    from streams.runtime.app import ingest_rules
    from streams.settings import Settings

    now = datetime.now(UTC)
    rules = ingest_rules(Settings.model_validate({"max_age_s": 10 * 365 * 86400}))
    ingest_window = DuplicateWindow(window_ms=86_400_000, max_ids_per_partition=10**7)
    rows: list[list[Any]] = []
    for offset, message in enumerate(messages):
        record = SourceRecord(message.topic, 0, offset, None, message.key, message.value)
        accepted = triage([record], rules, ingest_window, now).accepted
        rows += [orjson.loads(e.row) for e in accepted]
    nodes: dict[str, str | None] = {}
    identities: dict[str, Identity | None] = {}
    window = DuplicateWindow(window_ms=86_400_000, max_ids_per_partition=10**7)
    watermarks = Watermarks(60_000, {})
    cpu = time.process_time()
    started = time.perf_counter()
    for n, start in enumerate(range(0, len(rows), 2000)):
        resolver = Resolver(IdentityRules(), nodes.get, identities.get)
        resolve_records(
            [(n, rows[start : start + 2000])],
            resolver,
            window,
            "resolve",
            partitions,
            watermarks,
            0,
        )
        changes = resolver.changes()
        nodes.update(changes.nodes)
        identities.update(changes.identities)
    elapsed = time.perf_counter() - started
    return BenchResult(
        "the resolver alone (identity, repeats, routing)",
        len(rows),
        elapsed,
        peak_rss_mib(),
        time.process_time() - cpu,
    )


def run_faust_floor(bootstrap: str, topics: list[str], events: int, workdir: Path) -> BenchResult:
    """(b) a bare Faust agent, one event at a time, no state; in its own process."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.tools.benchmark",
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
    state = {"seen": 0, "first": 0.0, "cpu": 0.0}

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for _value in stream:
            if not state["seen"]:
                state["first"] = time.perf_counter()
                state["cpu"] = time.process_time()
            state["seen"] += 1
            if state["seen"] >= events:
                elapsed = time.perf_counter() - state["first"]
                result = BenchResult(
                    "bare Faust agent (one event at a time)",
                    int(state["seen"]),
                    elapsed,
                    peak_rss_mib(),
                    time.process_time() - state["cpu"],
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
        raise SystemExit(
            "usage: python -m streams.tools.benchmark faust-floor BOOTSTRAP TOPICS N DIR"
        )


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


# --- the command: touchpoint benchmark ---------------------------------------------------


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Ceiling, bare Faust and this worker on the same broker and data, in one run."""
    from streams.console import say
    from streams.tools.demo import _create_topics
    from streams.tools.embedded.clickhouse import EmbeddedClickHouse
    from streams.tools.embedded.kafka import ApacheKafka
    from streams.tools.generator import benchmark_events, publish

    loops = {loop.strip() for loop in args.loops.split(",") if loop.strip()}
    known = {"a", "b", "r", "c1", "c2"}
    if not loops or loops - known:
        raise SystemExit(
            "--only takes a comma-separated list among a, b, r, c1 and c2, e.g. --only c1,c2"
        )
    work = Path(tempfile.mkdtemp(prefix="touchpoint-bench-"))
    channels = ["web", "mobile_app", "email", "call_center"]
    topics = [f"touchpoints.{c}" for c in channels]
    results: dict[str, BenchResult] = {}
    customers_stored: int | None = None
    latency: Any = None

    def events(count: int) -> Any:
        return benchmark_events(
            args.seed, count, args.customers, every_customer=args.every_customer
        )

    try:
        with (
            ApacheKafka(work / "kafka", heap="1g") as kafka,
            EmbeddedClickHouse(work / "clickhouse") as clickhouse,
        ):
            asyncio.run(_create_topics(kafka.bootstrap, topics, args.partitions))
            say(f"publishing {args.events:,} events over {args.customers:,} customers ...")
            stats = asyncio.run(
                publish(
                    events(args.events),
                    kafka.bootstrap,
                    compression="lz4",
                    progress=lambda n: say(f"  published {n:,}"),
                    progress_every=50_000,
                )
            )
            size = sum(len(m.value) for m in events(2000))
            say(
                f"  {stats.total:,} events (~{size / 2000:.0f} bytes each) in {stats.seconds:.1f} s"
            )

            if "a" in loops:
                say("(a) ceiling: aiokafka getmany + orjson ...")
                results["a"] = asyncio.run(run_ceiling(kafka.bootstrap, topics, args.events))
                say(f"    {results['a'].rate:,.0f} events/s")
            if "b" in loops:
                say("(b) bare Faust agent ...")
                results["b"] = run_faust_floor(kafka.bootstrap, topics, args.events, work / "faust")
                say(f"    {results['b'].rate:,.0f} events/s")
            if "r" in loops:
                say("(r) the resolver alone, on events ingest has turned into rows ...")
                results["r"] = run_resolver(events(args.events), args.events, args.partitions)
                say(f"    {results['r'].rate:,.0f} events/s")
            for loop in ("c1", "c2"):
                if loop in loops:
                    workers = int(loop[1])
                    say(f"({loop}) this worker, {workers} process(es): into ClickHouse ...")
                    results[loop], customers_stored = _bench_worker(
                        kafka.bootstrap, clickhouse.url, args, work, workers
                    )
                    say(f"    {results[loop].rate:,.0f} events/s, {customers_stored:,} customers")
            if args.latency:
                offered = args.latency_rate or 0.75 * (results["c1"].rate if "c1" in results else 0)
                if offered <= 0:
                    raise SystemExit("--latency needs loop c1 in the run, or --latency-rate")
                say(f"alert latency: {offered:,.0f} events/s for {args.latency_seconds:.0f} s ...")
                latency = _bench_alert_latency(
                    kafka.bootstrap, clickhouse.url, offered, args.latency_seconds, args, work
                )
                say(
                    f"    p50 {latency.p50_s:.2f} s, p99 {latency.p99_s:.2f} s "
                    f"({latency.delivered:,} of {latency.tipping:,} detractor answers)"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report: dict[str, Any] = {
        "events": args.events,
        "customers": args.customers,
        "every_customer": args.every_customer,
        "partitions": args.partitions,
        "customers_stored": customers_stored,
    }
    for k, r in results.items():
        report[k] = {
            "name": r.name,
            "rate": round(r.rate),
            "cpu_s_per_1k": None if r.cpu_s_per_1k is None else round(r.cpu_s_per_1k, 4),
            "peak_rss_mib": round(r.peak_rss_mib, 1),
            "events": r.events,
            "seconds": round(r.seconds, 3),
            "cpu_s": None if r.cpu_s is None else round(r.cpu_s, 3),
            "state_mib": None if r.state_mib is None else round(r.state_mib, 1),
        }
    ratios = [
        (f"{x}/{y}", results[x].rate / results[y].rate)
        for x, y in (("c1", "b"), ("c2", "c1"), ("c1", "a"), ("b", "a"), ("r", "b"))
        if x in results and y in results and results[y].rate
    ]
    report.update({name.replace("/", "_over_"): round(r, 3) for name, r in ratios})
    if latency is not None:
        report["alert_latency"] = asdict(latency)

    def cpu(r: BenchResult) -> str:
        return "" if r.cpu_s_per_1k is None else f"{r.cpu_s_per_1k:.3f}"

    lines = [
        "",
        f"{'loop':<52} {'events/s':>10} {'CPU s/1k ev':>12} {'peak RSS MiB':>13}",
        *(
            f"({k}) {r.name:<48} {r.rate:>10,.0f} {cpu(r):>12} {r.peak_rss_mib:>13.0f}"
            for k, r in sorted(results.items())
        ),
        "",
        "   ".join(f"{name} = {r:.3f}" for name, r in ratios),
    ]
    if customers_stored is not None:
        lines.append(f"customers in the worker's state and in customer_360: {customers_stored:,}")
    if latency is not None:
        lines.append(
            f"alert latency at {latency.rate:,.0f} events/s offered: p50 {latency.p50_s:.2f} s, "
            f"p99 {latency.p99_s:.2f} s, max {latency.max_s:.2f} s "
            f"({latency.delivered:,} of {latency.tipping:,} detractor answers delivered)"
        )
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used so far (0 where /proc is absent)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields after the command name: state is [0], utime [11], stime [12] (clock ticks)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bench_worker(
    bootstrap: str, clickhouse_url: str, args: argparse.Namespace, work: Path, workers: int
) -> tuple[BenchResult, int]:
    """(c1, c2): from the first consumed event until ClickHouse holds every event and
    every customer's journey, with ``workers`` worker processes in one group; CPU
    seconds are the workers' own over the same span. Returns the result and how many
    customers were stored."""
    from streams.tools.demo import _clickhouse_client, _worker_env, _WorkerProcess

    database = f"bench_c{workers}"
    procs = [
        _WorkerProcess(
            _worker_env(
                bootstrap,
                clickhouse_url,
                work / f"state-c{workers}-{n}",
                TOUCHPOINT_TOPIC_PARTITIONS=str(args.partitions),
                TOUCHPOINT_APP_ID=f"bench-c{workers}",
                TOUCHPOINT_CLICKHOUSE_DATABASE=database,
                TOUCHPOINT_LOG_LEVEL="WARNING",
                # every benchmark event lies in the past; flag them, as in production
                TOUCHPOINT_MAX_AGE_S=str(10 * 365 * 86400),
            ),
            work / f"worker-c{workers}-{n}.log",
        )
        for n in range(workers)
    ]

    def check_alive() -> None:
        for proc in procs:
            if proc.proc.poll() is not None:
                raise SystemExit(f"a worker exited:\n{proc.tail()}")

    try:
        for proc in procs:
            proc.wait_ready()
        client = _clickhouse_client(clickhouse_url)
        first = 0.0
        cpu_at_first = 0.0
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            consumed = sum((p.accounting() or {}).get("consumed", 0) for p in procs)
            if not first and consumed > 0:
                first = time.perf_counter()
                cpu_at_first = sum(cpu_seconds(p.proc.pid) for p in procs)
            if consumed >= args.events:
                break
            check_alive()
            time.sleep(0.05)
        while time.monotonic() < deadline:
            events = client.query(f"SELECT count() FROM {database}.events_store")
            # the journeys are stored in the same flush as their events; checked once those are in
            if events.result_rows[0][0] >= args.events:
                journeys = client.query(f"SELECT sum(touchpoints) FROM {database}.customer_360")
                if journeys.result_rows[0][0] >= args.events:
                    break
            check_alive()
            time.sleep(0.05)
        else:
            raise SystemExit(f"the workers did not finish within the hour:\n{procs[0].tail()}")
        elapsed = time.perf_counter() - first
        cpu = sum(cpu_seconds(p.proc.pid) for p in procs) - cpu_at_first
        rss = max(peak_rss_mib(p.proc.pid) for p in procs)
        customers = client.query(f"SELECT count() FROM {database}.customer_360").result_rows[0][0]
        state = sum(
            f.stat().st_size
            for n in range(workers)
            for f in (work / f"state-c{workers}-{n}").rglob("*")
            if f.is_file()
        )
    finally:
        for proc in procs:
            proc.stop()
    name = f"this worker, {workers} process{'es' if workers > 1 else ''}: into ClickHouse"
    return BenchResult(name, args.events, elapsed, rss, cpu, state / 2**20), int(customers)


def _bench_alert_latency(
    bootstrap: str,
    clickhouse_url: str,
    rate: float,
    seconds: float,
    args: argparse.Namespace,
    work: Path,
) -> Any:
    """A fresh worker with a webhook endpoint on loopback, offered ``rate`` events/s live."""
    import base64

    from streams.tools.demo import _create_topics, _worker_env, _WorkerProcess
    from streams.tools.embedded.process import free_port

    topics = ["touchpoints.lat_web", "touchpoints.lat_call_center"]
    asyncio.run(_create_topics(bootstrap, topics, args.partitions))
    port = free_port()
    endpoint = {
        "name": "bench",
        "url": f"http://127.0.0.1:{port}/hook",
        "types": ["customer.detractor"],
        "allow_http": True,
        "allow_private": True,
    }
    worker = _WorkerProcess(
        _worker_env(
            bootstrap,
            clickhouse_url,
            work / "latency-state",
            TOUCHPOINT_TOPIC_PARTITIONS=str(args.partitions),
            TOUCHPOINT_APP_ID="bench-latency",
            TOUCHPOINT_TOPIC_PATTERN=r"^touchpoints\.lat_[a-z0-9_]+$",
            TOUCHPOINT_CLICKHOUSE_DATABASE="touchpoints_latency",
            TOUCHPOINT_ALERTS_TOPIC="touchpoints.bench-latency-alerts",
            TOUCHPOINT_MERGES_TOPIC="touchpoints.bench-latency-merges",
            TOUCHPOINT_ALERTS=json.dumps({"endpoints": [endpoint]}),
            TOUCHPOINT_WEBHOOK_SECRET_BENCH="whsec_" + base64.b64encode(os.urandom(32)).decode(),
            TOUCHPOINT_LOG_LEVEL="WARNING",
        ),
        work / "latency-worker.log",
    )
    try:
        worker.wait_ready()
        return asyncio.run(alert_latency(bootstrap, topics, rate, seconds, port))
    finally:
        worker.stop()
