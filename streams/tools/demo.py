"""The commands that orchestrate processes: ``generate``, ``demo`` and ``benchmark``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sinks.reports import EFFORT_VS_CES, EFFORT_VS_CES_BY_SCORE, format_effort_vs_ces
from streams.embedded.process import free_port

__all__ = [
    "DEMO_ALERTS",
    "DEMO_DIR_MARKER",
    "DemoDirRefused",
    "demo_config",
    "prepare_demo_dir",
    "register",
]

CHANNELS = (
    "web", "mobile_app", "email", "sms", "push", "call_center", "chat", "social", "store",
    "survey", "billing", "support", "product",
)  # fmt: skip


#: The demo's alert rules, fitted to its volume (about 15 NPS answers a day on each
#: channel): NPS per channel over two days against the week before, at 99.9 %. Over the
#: demo's fourteen days the noise of the other channels stays under the bar and the
#: incident clears it for more than a day of event time (``tests/test_generator.py``).
DEMO_ALERTS: dict[str, Any] = {
    "score_drop": {
        "metrics": ["nps"],
        "segments": ["channel"],
        "window": "2d",
        "baseline": "7d",
        "confidence": 0.999,
        "min_responses": 25,
        "cooldown": "2d",
        "evaluate_every": 0.2,
    },
}


def demo_config(
    seed: int = 7,
    events: int = 20_000,
    *,
    start: datetime | None = None,
    bad_share: float = 0.02,
    duplicate_share: float = 0.01,
    incident: str | None = "mobile_app",
) -> Any:
    """What ``touchpoint demo`` publishes: fourteen days of touchpoints ending now, with
    the scripted incident on ``incident`` (a channel; None for none)."""
    from streams.generator import GeneratorConfig, Incident

    return GeneratorConfig(
        seed=seed,
        events=events,
        customers=max(10, events // 20),
        start=start or datetime.now(UTC) - timedelta(days=14),
        span=timedelta(days=14),
        bad_share=bad_share,
        duplicate_share=duplicate_share,
        incident=Incident(channel=incident) if incident else None,
    )


#: The file ``touchpoint demo`` writes into each working directory it creates; only a
#: directory holding it is ever emptied by a later demo.
DEMO_DIR_MARKER = ".touchpoint-demo"


class DemoDirRefused(Exception):
    """The demo's ``--dir`` is not one the demo may empty; the message says why and what
    to do instead."""


def prepare_demo_dir(path: Path, cwd: Path | None = None) -> Path:
    """Make ``path`` an empty working directory of the demo, marked as its own; return it.

    A command never deletes what it did not create: ``path`` is emptied only when it
    holds the marker a previous demo wrote there; a missing or empty directory is
    created or used and marked; anything else is refused. The current directory and
    its ancestors are always refused, marker or not (emptying them would delete the
    caller's own tree), and so is a symbolic link.

    Raises:
        DemoDirRefused: the directory is not the demo's to empty.
    """
    here = (cwd or Path.cwd()).resolve()
    if path.is_symlink():
        raise DemoDirRefused(
            f"--dir {path} is a symbolic link; give the demo a directory of its own, "
            "e.g. --dir var/demo"
        )
    target = path.resolve()
    if target == here or target in here.parents:
        raise DemoDirRefused(
            f"--dir {path} is the current directory or one of its parents; the demo "
            "empties its directory, so give it one of its own, e.g. --dir var/demo"
        )
    if target.exists() and not target.is_dir():
        raise DemoDirRefused(f"--dir {path} is a file, not a directory; choose another path")
    if target.is_dir() and any(target.iterdir()):
        if not (target / DEMO_DIR_MARKER).is_file():
            raise DemoDirRefused(
                f"--dir {path} is not empty and was not created by touchpoint demo (no "
                f"{DEMO_DIR_MARKER} file in it), so the demo will not delete its contents; "
                "choose a new or empty directory, e.g. --dir var/demo"
            )
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)
    (target / DEMO_DIR_MARKER).write_text(
        "created by touchpoint demo; the next demo run with this --dir empties it\n",
        encoding="utf-8",
    )
    return target


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# --- generate ----------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    """Publish synthetic touchpoints to the configured Kafka."""
    from streams.cli import _settings, _wait_for_kafka
    from streams.generator import (
        GeneratorConfig,
        Incident,
        benchmark_events,
        generate,
        publish,
    )
    from streams.topics import ensure_topics

    settings = _settings(args)
    if args.benchmark:
        messages = benchmark_events(args.seed, args.events, args.customers)
    else:
        messages = generate(
            GeneratorConfig(
                seed=args.seed,
                events=args.events,
                customers=args.customers,
                start=datetime.now(UTC) - timedelta(days=args.days),
                span=timedelta(days=args.days),
                bad_share=args.bad_share,
                duplicate_share=args.duplicate_share,
                incident=Incident(channel=args.incident) if args.incident else None,
            )
        )

    async def run() -> Any:
        await _wait_for_kafka(settings, args.connect_timeout)
        await ensure_topics(settings, [f"touchpoints.{c}" for c in CHANNELS])
        return await publish(
            messages,
            settings.kafka_bootstrap,
            rate=args.rate,
            compression=args.compression,
            progress=lambda n: _say(f"published {n:,} / {args.events:,}"),
            producer_options=settings.kafka_client_options(),
        )

    stats = asyncio.run(run())
    print(
        json.dumps(
            {
                "published": stats.total,
                "seconds": round(stats.seconds, 2),
                "by_kind": dict(stats.per_kind),
                "by_topic": dict(stats.per_topic),
            },
            indent=2,
        )
    )
    return 0


# --- shared: a worker process ------------------------------------------------------------


class _WorkerProcess:
    """``touchpoint worker`` as a child process with its own environment."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env={**env, "TOUCHPOINT_WEB_PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def accounting(self) -> dict[str, Any] | None:
        return self.get("/accounting")

    def get(self, path: str) -> dict[str, Any] | None:
        """One of the worker's JSON pages; None while it does not answer."""
        import httpx

        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2)
            return dict(response.json()) if response.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the worker exited; its log:\n{self.tail()}")
            if self.accounting() is not None:
                return
            time.sleep(0.3)
        raise SystemExit(
            f"the worker did not start within {timeout:.0f} s; its log:\n{self.tail()}"
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _worker_env(bootstrap: str, clickhouse_url: str, state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
    env.update(
        {
            "TOUCHPOINT_KAFKA_BOOTSTRAP": bootstrap,
            "TOUCHPOINT_CLICKHOUSE_URL": clickhouse_url,
            "TOUCHPOINT_DATA_DIR": str(state),
            **extra,
        }
    )
    return env


async def _create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names if n not in existing])
    finally:
        await admin.close()


def _clickhouse_client(url: str) -> Any:
    import clickhouse_connect

    return clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)


def _wait(predicate: Callable[[], bool], worker: _WorkerProcess, timeout: float, what: str,
          report: Callable[[], str] | None = None) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while time.monotonic() < deadline:
        if predicate():
            return
        if worker.proc.poll() is not None:
            raise SystemExit(f"the worker exited while waiting for {what}:\n{worker.tail()}")
        if report and time.monotonic() - last_report > 2:
            _say(report())
            last_report = time.monotonic()
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}:\n{worker.tail()}")


# --- demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Broker, ClickHouse, worker and generator on embedded infrastructure."""
    from streams.embedded.clickhouse import EmbeddedClickHouse
    from streams.embedded.kafka import ApacheKafka, Tansu, java_available
    from streams.generator import generate, publish

    try:
        home = prepare_demo_dir(Path(args.dir))
    except DemoDirRefused as exc:
        raise SystemExit(f"touchpoint demo: {exc}") from None
    with ExitStack() as stack:
        use_kafka = args.broker == "kafka" or (args.broker == "auto" and java_available())
        _say("starting " + ("Apache Kafka" if use_kafka else "Tansu") + " ...")
        broker = ApacheKafka(home / "kafka") if use_kafka else Tansu(home / "tansu")
        stack.enter_context(broker)
        _say(f"  broker at {broker.bootstrap}")
        _say("starting the embedded ClickHouse ...")
        clickhouse = stack.enter_context(EmbeddedClickHouse(home / "clickhouse"))
        _say(f"  ClickHouse HTTP interface at {clickhouse.url}")
        partitions = 4
        asyncio.run(
            _create_topics(broker.bootstrap, [f"touchpoints.{c}" for c in CHANNELS], partitions)
        )
        _say("starting the worker ...")
        worker = _WorkerProcess(
            _worker_env(
                broker.bootstrap,
                clickhouse.url,
                home / "state",
                TOUCHPOINT_TOPIC_PARTITIONS=str(partitions),
                TOUCHPOINT_SINK_LINGER_S="0.2",
                TOUCHPOINT_ALERTS=json.dumps(DEMO_ALERTS),
            ),
            home / "worker.log",
        )
        stack.callback(worker.stop)
        worker.wait_ready()
        _say(f"  worker ready; metrics at http://127.0.0.1:{worker.port}/metrics")
        config = demo_config(
            args.seed,
            args.events,
            bad_share=args.bad_share,
            duplicate_share=args.duplicate_share,
            incident=None if args.incident == "none" else args.incident,
        )
        _say(f"publishing {args.events:,} touchpoints ...")
        stats = asyncio.run(
            publish(
                generate(config),
                broker.bootstrap,
                progress=lambda n: _say(f"  published {n:,}"),
                progress_every=max(1000, args.events // 5),
            )
        )
        _say(f"  published {stats.total:,} in {stats.seconds:.1f} s")

        def counts() -> dict[str, Any]:
            return worker.accounting() or {}

        _wait(
            lambda: counts().get("consumed", 0) >= stats.total,
            worker,
            600,
            "every message to be consumed",
            lambda: f"  consumed {counts().get('consumed', 0):,} / {stats.total:,}",
        )
        totals = counts()
        client = _clickhouse_client(clickhouse.url)

        from streams.settings import Settings
        from streams.topics import stitch_topic_name, uncommitted

        defaults = Settings.model_construct()  # what the demo's worker runs with

        def looked_through() -> bool:
            """Score alerts have looked at the windows up to the newest event (event time
            is complete once every partition has gone quiet for the idle time)."""
            seen = worker.get("/scores") or {}
            newest, looked = seen.get("newest_event_ms"), seen.get("alerts_looked_to_ms")
            return newest is not None and looked is not None and looked >= newest - 60_000

        _wait(looked_through, worker, 120, "the score alerts to look at every window")
        # committed only once stored: every row of the events, the dead letters and the
        # alerts is in ClickHouse once the group has committed these to their ends
        settled = [
            *(f"touchpoints.{c}" for c in CHANNELS),
            stitch_topic_name(defaults),
            defaults.alerts_topic,
        ]
        _wait(
            lambda: not asyncio.run(uncommitted(broker.bootstrap, defaults.app_id, settled)),
            worker,
            300,
            "ClickHouse to hold every row and alert",
        )
        by_channel = client.query(
            "SELECT channel, count() FROM touchpoints.events GROUP BY channel ORDER BY 2 DESC"
        ).result_rows
        reasons = client.query(
            "SELECT reason, count() FROM touchpoints.dead_letters GROUP BY reason ORDER BY 2 DESC"
        ).result_rows
        print(_demo_report(stats.total, totals, by_channel, reasons, clickhouse.url, worker.port))
        print(_identity_report(client))
        print(_scores_report(client))
        print(_alerts_report(client))
        from streams.cli import write_report_file

        report = home.resolve() / "report.html"
        write_report_file(defaults.model_copy(update={"clickhouse_url": clickhouse.url}), report)
        print(f"\nthe report (charts, opens offline in any browser): {report}")
        if not args.keep_running:
            print(
                "\n(everything stops now; `touchpoint demo --keep-running` keeps it up "
                "for queries until Ctrl-C)"
            )
        if args.keep_running:
            _say("infrastructure keeps running; Ctrl-C stops everything")
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    return 0 if totals.get("balanced") else 1


def _demo_report(
    published: int,
    totals: dict[str, Any],
    by_channel: list[Any],
    reasons: list[Any],
    clickhouse_url: str,
    web_port: int,
) -> str:
    lines = [
        "",
        "accounting (every message consumed is accounted for)",
        f"  published      {published:>8,}",
        f"  consumed       {totals['consumed']:>8,}",
        f"  accepted       {totals['accepted']:>8,}",
        f"  duplicates     {totals['duplicates']:>8,}",
        f"  dead-lettered  {totals['dead_lettered']:>8,}",
        "  consumed = accepted + duplicates + dead-lettered: "
        + ("yes" if totals["balanced"] else "NO"),
        "",
        "events by channel (ClickHouse touchpoints.events)",
        *(f"  {channel:<14} {count:>8,}" for channel, count in by_channel),
        "",
        "dead letters by reason (ClickHouse touchpoints.dead_letters)",
        *(f"  {reason:<22} {count:>6,}" for reason, count in reasons),
        "",
        "query it (while it runs):",
        f"  curl '{clickhouse_url}/?query=SELECT+channel,count()+FROM+touchpoints.events"
        "+GROUP+BY+channel'",
        f"  metrics: http://127.0.0.1:{web_port}/metrics",
    ]
    return "\n".join(lines)


def _identity_report(client: Any) -> str:
    def rows(sql: str) -> list[Any]:
        return list(client.query(sql).result_rows)

    customers = rows("SELECT count() FROM touchpoints.customer_360")[0][0]
    resolved = rows(
        "SELECT countIf(customer_id IN (SELECT customer_id FROM touchpoints.customer_360)), "
        "count() FROM touchpoints.events"
    )[0]
    merges = rows(
        "SELECT reason, count() FROM touchpoints.identity_merges GROUP BY reason ORDER BY 2 DESC"
    )
    refusals = rows(
        "SELECT reason, count() FROM touchpoints.identity_refusals GROUP BY reason ORDER BY 2 DESC"
    )
    stages = rows(
        "SELECT journey_stage, count() FROM touchpoints.customer_360 GROUP BY 1 ORDER BY 2 DESC"
    )
    return "\n".join(
        [
            "",
            "identity (ClickHouse touchpoints.customer_360, identity_merges, identity_refusals)",
            f"  customers      {customers:>8,}",
            f"  events resolvable to a current customer: {resolved[0]:,} / {resolved[1]:,}",
            "  merges by reason:",
            *(f"    {reason:<28} {n:>6,}" for reason, n in merges),
            "  links refused by a guard:",
            *(f"    {reason:<28} {n:>6,}" for reason, n in refusals),
            "  customers by journey stage:",
            *(f"    {stage or '(none)':<28} {n:>6,}" for stage, n in stages),
        ]
    )


def _alerts_report(client: Any) -> str:
    """What fired: counts by type, and every score alert with its numbers."""
    counts = client.query(
        "SELECT type, count() FROM touchpoints.alerts GROUP BY type ORDER BY type"
    ).result_rows
    scores = client.query(
        "SELECT type, subject, payload FROM touchpoints.alerts "
        "WHERE type LIKE 'score.%' ORDER BY fired_at, type"
    ).result_rows
    lines = [
        "",
        "alerts (ClickHouse touchpoints.alerts, and the Kafka topic touchpoints.alerts)",
        *(f"  {kind:<24} {n:>6,}" for kind, n in counts),
    ]
    for kind, subject, payload in scores:
        data = json.loads(payload)["data"]
        before, after = data["before"], data["after"]
        lines.append(
            f"  {kind:<16} {subject:<26} {before['value']:6.1f} (n={before['responses']}) -> "
            f"{after['value']:6.1f} (n={after['responses']}), z {data['z']}, "
            f"window to {after['to'][:16]}"
        )
    return "\n".join(lines)


def _scores_report(client: Any) -> str:
    """Rolling 28-day scores by channel, ending with the newest bucket (event time)."""
    end = client.query("SELECT max(bucket_start) + INTERVAL 1 MINUTE FROM touchpoints.scores")
    until = end.result_rows[0][0]
    rows = client.query(
        "SELECT segment_value, metric, responses, score, margin, share_positive "
        "FROM touchpoints.scores_window(start = {s:DateTime64(3)}, end = {e:DateTime64(3)}) "
        "WHERE segment_kind = 'channel' ORDER BY metric, segment_value",
        parameters={"s": until - timedelta(days=28), "e": until},
    ).result_rows
    lines = [
        "",
        f"scores by channel, 28 days of event time to {until:%Y-%m-%d %H:%M} UTC "
        "(ClickHouse touchpoints.scores_window)",
    ]
    names = {"nps": "NPS", "csat": "CSAT %", "ces": "CES mean"}
    for channel, metric, n, score, margin, share in rows:
        text = f"{score:7.1f} +/- {margin:4.1f}" if margin is not None else f"{score:7.1f}"
        extra = f"   ({share:.0f} % answered 5+)" if metric == "ces" else ""
        lines.append(f"  {names[metric]:<9} {channel:<14} {text}   n={n:,}{extra}")
    effort = client.query(
        "SELECT segment_value, sum(contacts), sum(repeat_contacts), sum(channel_switches), "
        "sum(transfers), sum(escalations), round(sum(effort_points) / sum(contacts), 1) "
        "FROM touchpoints.effort_daily WHERE segment_kind = 'channel' "
        "AND day > toDate({e:DateTime64(3)}) - 28 GROUP BY segment_value ORDER BY 7 DESC",
        parameters={"e": until},
    ).result_rows
    lines += [
        "",
        "effort by channel, same 28 days (ClickHouse touchpoints.effort_daily)",
        "  channel         contacts  repeats  switches  transfers  escalations  effort index",
        *(
            f"  {ch:<14} {n:>9,} {rep:>8,} {sw:>9,} {tr:>10,} {esc:>12,} {idx:>13}"
            for ch, n, rep, sw, tr, esc, idx in effort
        ),
    ]
    summary = client.query(EFFORT_VS_CES.format(db="touchpoints")).result_rows[0]
    by_score = client.query(EFFORT_VS_CES_BY_SCORE.format(db="touchpoints")).result_rows
    lines += ["", format_effort_vs_ces(tuple(summary), [tuple(r) for r in by_score])]
    return "\n".join(lines)


# --- benchmark ---------------------------------------------------------------------------


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Ceiling, bare Faust and this worker on the same broker and data, in one run."""
    from streams.benchmark import BenchResult, run_ceiling, run_faust_floor
    from streams.embedded.clickhouse import EmbeddedClickHouse
    from streams.embedded.kafka import ApacheKafka
    from streams.generator import benchmark_events, publish

    loops = set(args.loops)
    if not loops or loops - set("abc"):
        raise SystemExit("--loops takes letters among a, b and c, e.g. --loops abc or --loops c")
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
            _say(f"publishing {args.events:,} events over {args.customers:,} customers ...")
            stats = asyncio.run(
                publish(
                    events(args.events),
                    kafka.bootstrap,
                    compression="lz4",
                    progress=lambda n: _say(f"  published {n:,}"),
                    progress_every=50_000,
                )
            )
            size = sum(len(m.value) for m in events(2000))
            _say(
                f"  {stats.total:,} events (~{size / 2000:.0f} bytes each) in {stats.seconds:.1f} s"
            )

            if "a" in loops:
                _say("(a) ceiling: aiokafka getmany + orjson ...")
                results["a"] = asyncio.run(run_ceiling(kafka.bootstrap, topics, args.events))
                _say(f"    {results['a'].rate:,.0f} events/s")
            if "b" in loops:
                _say("(b) bare Faust agent ...")
                results["b"] = run_faust_floor(kafka.bootstrap, topics, args.events, work / "faust")
                _say(f"    {results['b'].rate:,.0f} events/s")
            if "c" in loops:
                _say("(c) this worker: validated, stitched, scored, into ClickHouse ...")
                results["c"], customers_stored = _bench_worker(
                    kafka.bootstrap, clickhouse.url, args, work
                )
                _say(f"    {results['c'].rate:,.0f} events/s, {customers_stored:,} customers")
            if args.latency:
                offered = args.latency_rate or 0.75 * (results["c"].rate if "c" in results else 0)
                if offered <= 0:
                    raise SystemExit("--latency needs loop c in the run, or --latency-rate")
                _say(f"alert latency: {offered:,.0f} events/s for {args.latency_seconds:.0f} s ...")
                latency = _bench_alert_latency(
                    kafka.bootstrap, clickhouse.url, offered, args.latency_seconds, args, work
                )
                _say(
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
        "results": {k: {**asdict(r), "events_per_s": round(r.rate)} for k, r in results.items()},
    }
    ratios = [
        (f"{x}/{y}", results[x].rate / results[y].rate)
        for x, y in (("c", "a"), ("c", "b"), ("b", "a"))
        if x in results and y in results and results[y].rate
    ]
    report.update({name.replace("/", "_over_"): round(r, 3) for name, r in ratios})
    if latency is not None:
        report["alert_latency"] = asdict(latency)
    lines = [
        "",
        f"{'loop':<56} {'events/s':>10} {'peak RSS MiB':>13}",
        *(
            f"({k}) {r.name:<52} {r.rate:>10,.0f} {r.peak_rss_mib:>13.0f}"
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


def _bench_worker(
    bootstrap: str, clickhouse_url: str, args: argparse.Namespace, work: Path
) -> tuple[Any, int]:
    """(c): from the worker's first consumed event until ClickHouse holds every event and
    every customer's journey; returns the result and how many customers it stitched."""
    from streams.benchmark import BenchResult, peak_rss_mib

    worker = _WorkerProcess(
        _worker_env(
            bootstrap,
            clickhouse_url,
            work / "state",
            TOUCHPOINT_TOPIC_PARTITIONS=str(args.partitions),
            TOUCHPOINT_APP_ID="bench-worker",
            TOUCHPOINT_LOG_LEVEL="WARNING",
            # every benchmark event lies in the past; flag them, as in production
            TOUCHPOINT_MAX_AGE_S=str(10 * 365 * 86400),
        ),
        work / "worker.log",
    )
    try:
        worker.wait_ready()
        client = _clickhouse_client(clickhouse_url)
        first = 0.0
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            totals = worker.accounting() or {}
            if not first and totals.get("consumed", 0) > 0:
                first = time.perf_counter()
            if totals.get("consumed", 0) >= args.events:
                break
            if worker.proc.poll() is not None:
                raise SystemExit(f"the worker exited:\n{worker.tail()}")
            time.sleep(0.05)
        while time.monotonic() < deadline:
            events = client.query("SELECT count() FROM touchpoints.events_store")
            # the journeys are stored in the same flush as their events; checked once those are in
            if events.result_rows[0][0] >= args.events:
                journeys = client.query("SELECT sum(touchpoints) FROM touchpoints.customer_360")
                if journeys.result_rows[0][0] >= args.events:
                    break
            if worker.proc.poll() is not None:
                raise SystemExit(f"the worker exited:\n{worker.tail()}")
            time.sleep(0.05)
        else:
            raise SystemExit(f"the worker did not finish within the hour:\n{worker.tail()}")
        elapsed = time.perf_counter() - first
        rss = peak_rss_mib(worker.proc.pid)
        customers = client.query("SELECT count() FROM touchpoints.customer_360").result_rows[0][0]
    finally:
        worker.stop()
    name = "this worker: stitched, scored, in ClickHouse"
    return BenchResult(name, args.events, elapsed, rss), int(customers)


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

    from streams.benchmark import alert_latency

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


# --- registration ------------------------------------------------------------------------


def register(add: Callable[..., Any]) -> None:
    """Add the commands to the ``touchpoint`` parser."""
    generate = add("generate", cmd_generate, "publish realistic synthetic touchpoints to Kafka")
    generate.add_argument("--events", type=int, default=10_000, help="how many (default 10000)")
    generate.add_argument("--customers", type=int, default=1_000, help="population size")
    generate.add_argument("--seed", type=int, default=7, help="same seed, same events")
    generate.add_argument("--days", type=float, default=14, help="event-time span, ending now")
    generate.add_argument("--rate", type=float, default=None, help="events per second cap")
    generate.add_argument("--bad-share", type=float, default=0.0, help="share of broken messages")
    generate.add_argument("--duplicate-share", type=float, default=0.0, help="share of re-sends")
    generate.add_argument("--compression", choices=["gzip", "snappy", "lz4", "zstd"], default=None)
    generate.add_argument(
        "--incident",
        metavar="CHANNEL",
        default=None,
        help="script an incident: from 60%% of the span, for three days, this channel's "
        "contacts go badly and its answers fall (default: none)",
    )
    generate.add_argument(
        "--benchmark", action="store_true", help="simple ~300-byte events (as the benchmark)"
    )
    generate.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the brokers to answer before giving up",
    )

    demo = add("demo", cmd_demo, "everything on embedded infrastructure, one command")
    demo.add_argument("--events", type=int, default=20_000, help="touchpoints to publish")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--bad-share", type=float, default=0.02, help="share of broken messages")
    demo.add_argument("--duplicate-share", type=float, default=0.01, help="share of re-sends")
    demo.add_argument(
        "--broker",
        choices=["auto", "tansu", "kafka"],
        default="tansu",
        help="tansu (no JVM, default), kafka (Apache Kafka, needs Java), or auto",
    )
    demo.add_argument(
        "--incident",
        metavar="CHANNEL",
        default="mobile_app",
        help="the channel of the scripted incident the alerts must notice "
        "(default mobile_app; none for no incident)",
    )
    demo.add_argument(
        "--dir",
        default="var/demo",
        help="working directory: created, or emptied if an earlier demo created it; any "
        "other non-empty directory is refused",
    )
    demo.add_argument(
        "--keep-running", action="store_true", help="keep everything up for queries until Ctrl-C"
    )

    bench = add("benchmark", cmd_benchmark, "ceiling vs bare Faust vs this worker, one run")
    bench.add_argument("--events", type=int, default=200_000)
    bench.add_argument("--customers", type=int, default=100_000)
    bench.add_argument("--partitions", type=int, default=4)
    bench.add_argument("--seed", type=int, default=1)
    bench.add_argument("--json", help="also write the results to this file")
    bench.add_argument(
        "--loops", default="abc", help="which loops to run: any of a, b, c (default abc)"
    )
    bench.add_argument(
        "--latency",
        action="store_true",
        help="also time alerts: detractor answer sent to webhook received, at 75%% of (c)'s rate",
    )
    bench.add_argument("--latency-seconds", type=float, default=60.0, help="how long to offer")
    bench.add_argument("--latency-rate", type=float, default=None, help="events/s to offer")
    bench.add_argument(
        "--every-customer",
        action="store_true",
        help="show every customer at least once (to measure memory for the whole population)",
    )
