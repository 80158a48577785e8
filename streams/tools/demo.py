"""``touchpoint generate`` and ``touchpoint demo``, and what the demo and the benchmark
share: a worker as a child process, its environment, topics, a ClickHouse client."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sinks.reports import (
    EFFORT_AT_ANSWERS,
    EFFORT_SEGMENT_CELLS,
    effort_check_report,
    format_effort_check,
)
from streams.console import say, settings_from_args, wait_for_kafka
from streams.tools.embedded.process import free_port

__all__ = [
    "DEMO_ALERTS",
    "DEMO_DIR_MARKER",
    "DemoDirRefused",
    "cmd_demo",
    "cmd_generate",
    "demo_config",
    "prepare_demo_dir",
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
    answers: str = "effort",
) -> Any:
    """What ``touchpoint demo`` publishes: fourteen days of touchpoints ending now, with
    the scripted incident on ``incident`` (a channel; None for none) and survey answers
    drawn by the model ``answers`` (``GeneratorConfig.answers``)."""
    from streams.tools.generator import GeneratorConfig, Incident

    return GeneratorConfig(
        seed=seed,
        events=events,
        customers=max(10, events // 20),
        start=start or datetime.now(UTC) - timedelta(days=14),
        span=timedelta(days=14),
        bad_share=bad_share,
        duplicate_share=duplicate_share,
        incident=Incident(channel=incident) if incident else None,
        answers=answers,
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


# --- generate ----------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    """Publish synthetic touchpoints to the configured Kafka."""
    from streams.runtime.topics import ensure_topics
    from streams.tools.generator import (
        GeneratorConfig,
        Incident,
        benchmark_events,
        generate,
        publish,
    )

    settings = settings_from_args(args)
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
                answers=args.answers,
            )
        )

    async def run() -> Any:
        await wait_for_kafka(settings, args.connect_timeout)
        await ensure_topics(settings, [f"touchpoints.{c}" for c in CHANNELS])
        return await publish(
            messages,
            settings.kafka_bootstrap,
            rate=args.rate,
            compression=args.compression,
            progress=lambda n: say(f"published {n:,} / {args.events:,}"),
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
            say(report())
            last_report = time.monotonic()
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}:\n{worker.tail()}")


# --- demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Broker, ClickHouse, worker and generator on embedded infrastructure."""
    from streams.tools.embedded.clickhouse import EmbeddedClickHouse
    from streams.tools.embedded.kafka import ApacheKafka, Tansu, java_available
    from streams.tools.generator import generate, publish

    try:
        home = prepare_demo_dir(Path(args.dir))
    except DemoDirRefused as exc:
        raise SystemExit(f"touchpoint demo: {exc}") from None
    with ExitStack() as stack:
        use_kafka = args.broker == "kafka" or (args.broker == "auto" and java_available())
        say("starting " + ("Apache Kafka" if use_kafka else "Tansu") + " ...")
        broker = ApacheKafka(home / "kafka") if use_kafka else Tansu(home / "tansu")
        stack.enter_context(broker)
        say(f"  broker at {broker.bootstrap}")
        say("starting the embedded ClickHouse ...")
        clickhouse = stack.enter_context(EmbeddedClickHouse(home / "clickhouse"))
        say(f"  ClickHouse HTTP interface at {clickhouse.url}")
        partitions = 4
        asyncio.run(
            _create_topics(broker.bootstrap, [f"touchpoints.{c}" for c in CHANNELS], partitions)
        )
        say("starting the worker ...")
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
        say(f"  worker ready; metrics at http://127.0.0.1:{worker.port}/metrics")
        config = demo_config(
            args.seed,
            args.events,
            bad_share=args.bad_share,
            duplicate_share=args.duplicate_share,
            incident=None if args.incident == "none" else args.incident,
            answers=args.answers,
        )
        say(f"publishing {args.events:,} touchpoints ...")
        stats = asyncio.run(
            publish(
                generate(config),
                broker.bootstrap,
                progress=lambda n: say(f"  published {n:,}"),
                progress_every=max(1000, args.events // 5),
            )
        )
        say(f"  published {stats.total:,} in {stats.seconds:.1f} s")

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

        from streams.runtime.topics import internal_topics, uncommitted
        from streams.settings import Settings

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
            *internal_topics(defaults),
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
        print(_followup_report(client))
        print(_risk_report(client, defaults))
        from streams.operate.report import write_report_file

        report = home.resolve() / "report.html"
        write_report_file(defaults.model_copy(update={"clickhouse_url": clickhouse.url}), report)
        print(f"\nthe report (charts, opens offline in any browser): {report}")
        if not args.keep_running:
            print(
                "\n(everything stops now; `touchpoint demo --keep-running` keeps it up "
                "for queries until Ctrl-C)"
            )
        if args.keep_running:
            say("infrastructure keeps running; Ctrl-C stops everything")
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


def _followup_report(client: Any) -> str:
    """Closed-loop follow-up: how many detractors heard back, how fast, and what their
    next answer was."""
    total = client.query(
        "SELECT sum(due), sum(in_time), sum(late), sum(never), sum(pending), "
        "round(sum(in_time + late) / nullIf(sum(due), 0), 3), "
        "round(sum(in_time) / nullIf(sum(due), 0), 3) "
        "FROM touchpoints.followup_weekly WHERE dimension = 'all'"
    ).result_rows[0]
    due, in_time, late, never, pending, closed_rate, in_time_rate = total
    median = client.query(
        "SELECT round(median(hours_to_follow_up), 1) FROM touchpoints.followups "
        "WHERE outcome IN ('in_time', 'late')"
    ).result_rows[0][0]
    by_channel = client.query(
        "SELECT value, sum(due), round(sum(in_time + late) / nullIf(sum(due), 0), 3) "
        "FROM touchpoints.followup_weekly WHERE dimension = 'channel' "
        "GROUP BY value ORDER BY 2 DESC"
    ).result_rows
    effect = client.query(
        "SELECT followed_up, answers, detractor_share, detractor_share_margin, nps_answers, "
        "nps, nps_margin FROM touchpoints.followup_effect ORDER BY followed_up"
    ).result_rows

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    lines = [
        "",
        "closed-loop follow-up of detractor answers (ClickHouse touchpoints.followups, "
        "followup_weekly, followup_effect)",
        f"  due {due or 0:,}: in time (48 h) {in_time or 0:,}, late {late or 0:,}, "
        f"never {never or 0:,}; not due yet {pending or 0:,}",
        f"  closed-loop rate {share(closed_rate)}, in time {share(in_time_rate)}, "
        f"median time to follow up {'-' if median is None else f'{median} h'}",
        *(
            f"  {channel:<14} due {n:>5,}  closed loop {share(rate)}"
            for channel, n, rate in by_channel
        ),
        "  the next answer after the follow-up (detractor share, NPS; 95 % margins):",
        *(
            f"  {followed:<8} n={n:<5,} detractors {share(d)} ±{share(dm)}  "
            f"NPS n={nn:,} {'-' if nps is None else f'{nps:+.1f} ±{nm:.1f}'}"
            for followed, n, d, dm, nn, nps, nm in effect
        ),
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


def _risk_report(client: Any, settings: Any) -> str:
    """The customers most at risk of a detractor answer, and how well the model does on
    a time split of this run's answers (``touchpoint model evaluate``)."""
    bands = client.query(
        "SELECT predicted_nps_band, count(), round(avg(p_detractor), 3) "
        "FROM touchpoints.customer_360 GROUP BY 1 ORDER BY 3 DESC"
    ).result_rows
    top = client.query(
        "SELECT customer_id, round(p_detractor, 3), journey_stage, length(open_cases), "
        "last_nps FROM touchpoints.customer_360 ORDER BY p_detractor DESC, customer_id LIMIT 10"
    ).result_rows
    reasons = dict(
        client.query(
            "SELECT customer_id, argMax(payload, fired_at) FROM touchpoints.alerts "
            "WHERE type = 'customer.at_risk' GROUP BY customer_id"
        ).result_rows
    )
    lines = [
        "",
        "detractor risk (ClickHouse touchpoints.customer_360 p_detractor, predicted_nps_band)",
        *(f"  band {band or '(none)':<10} {n:>6,} customers, mean p {p}" for band, n, p in bands),
        "  most at risk:",
        "    customer                p      stage        open cases  last NPS  reasons "
        "(customer.at_risk)",
    ]
    for customer_id, p, stage, open_cases, nps in top:
        payload = reasons.get(customer_id)
        why = (
            ", ".join(r["feature"] for r in json.loads(payload)["data"]["reasons"])
            if payload
            else "-"
        )
        last = "-" if nps is None else f"{nps:.0f}"
        lines.append(f"    {customer_id}  {p:.3f}  {stage:<12} {open_cases:>10}  {last:>8}  {why}")
    try:
        from streams.operate.model import (
            evaluate,
            events_query,
            examples_from_rows,
            format_evaluation,
        )
        from streams.runtime.app import partition_rules

        rules = partition_rules(settings.model_copy(update={"risk_enabled": False}))
        rows = client.query(events_query("touchpoints")).result_rows
        evaluation = evaluate(examples_from_rows(rows, rules, settings.alerts.detractor))
    except ImportError:
        return "\n".join([*lines, "", "(the model's evaluation needs scikit-learn: [model])"])
    except ValueError as exc:
        return "\n".join([*lines, "", f"(no evaluation: {exc})"])
    return "\n".join([*lines, "", format_evaluation(evaluation)])


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
    lines += ["", _effort_check(client)]
    return "\n".join(lines)


def _effort_check(client: Any) -> str:
    """What ``touchpoint effort-check`` prints, with its defaults (channel x week cells
    with 5 or more CES answers)."""
    cell = {"kind": "channel", "period": "week", "min_answers": 5}
    db = "touchpoints"
    report = effort_check_report(
        client.query(EFFORT_AT_ANSWERS.format(db=db)).result_rows,
        client.query(EFFORT_SEGMENT_CELLS.format(db=db), parameters=cell).result_rows,
        kind="channel",
        period="week",
        min_answers=5,
    )
    return format_effort_check(report)
