"""The operator's commands: ``touchpoint status`` and ``touchpoint dlq replay``.

Both read a running deployment (the Kafka and ClickHouse the settings name, and, for
``status``, the workers' web pages); ``dlq replay --execute`` is the only one that
writes (to the source topics and to the replay ledger in ClickHouse).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.settings import Settings

__all__ = ["cmd_dlq_replay", "cmd_status", "parse_moment", "register"]


def parse_moment(value: str, now: datetime) -> datetime:
    """A point in time from ``2026-11-20T08:00:00+01:00`` (no offset: UTC) or from a
    duration before ``now`` (``90m``, ``24h``, ``7d``)."""
    from schemas.alert_rules import parse_duration

    try:
        return now - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is neither a time (2026-11-20T08:00:00Z) nor a duration ago (24h, 7d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _moment(value: str) -> datetime:
    return parse_moment(value, datetime.now(UTC))


# --- status --------------------------------------------------------------------------------


async def _status(settings: Settings, args: argparse.Namespace) -> Any:
    from streams.status import Deployment, run_checks

    deployment = Deployment(
        settings, args.worker or (), max_lag=args.max_lag, timeout_s=args.timeout
    )
    try:
        return await run_checks(deployment)
    finally:
        # a client that never connected has nothing to close
        with contextlib.suppress(Exception):
            await deployment.close()


def cmd_status(args: argparse.Namespace) -> int:
    """Check a running deployment; exit 1 when a check fails, saying why."""
    import logging

    from streams.cli import _settings
    from streams.status import as_json, healthy, render_text

    settings = _settings(args)
    # the clients' own retry logs would bury the report; a failed check says what happened
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    findings = _guarded(settings, _status(settings, args))
    text = (
        json.dumps(as_json(findings), indent=2, default=str) if args.json else render_text(findings)
    )
    _out(text)
    return 0 if healthy(findings) else 1


# --- dlq replay ----------------------------------------------------------------------------


async def _topic_partitions(settings: Settings, topics: set[str]) -> dict[str, int]:
    """Partition counts of those of ``topics`` that exist."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options()
    )
    await admin.start()
    try:
        existing = sorted(topics & set(await admin.list_topics()))
        if not existing:
            return {}
        return {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(existing)}
    finally:
        await admin.close()


async def _replay(settings: Settings, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """The dry run's or the execution's report, and the exit code."""
    from aiokafka import AIOKafkaProducer

    from sinks.dlq_replay import ReplayFilter, execute_replay, plan_replay, summary_counts
    from streams.cli import _wait_for_kafka

    wanted = ReplayFilter(
        reasons=tuple(args.reason or ()),
        topics=tuple(args.topic or ()),
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    client = await _clickhouse(settings)
    try:
        await _require_table(client, settings, "dlq_replay_claims_store")
        plan = await plan_replay(client, settings.clickhouse_database, wanted)
        report: dict[str, Any] = {
            "mode": "execute" if args.execute else "dry_run",
            "filter": {
                "reasons": list(wanted.reasons),
                "topics": list(wanted.topics),
                "since": wanted.since.isoformat() if wanted.since else None,
                "until": wanted.until.isoformat() if wanted.until else None,
                "limit": wanted.limit,
            },
            "selected": len(plan.selected),
            "already_replayed": plan.already_replayed,
            "failed_again": plan.failed_again,
            "by_reason": plan.by_reason(),
            "by_topic": plan.by_topic(),
        }
        if not args.execute:
            report["dead_letters"] = [_listed(letter) for letter in plan.selected]
            return report, 0
        if not plan.selected:
            report.update(published=0, claimed_elsewhere=0, failed=0, topic_missing=0)
            return report, 0
        await _wait_for_kafka(settings, args.connect_timeout)
        partitions = await _topic_partitions(
            settings, {letter.source_topic for letter in plan.selected}
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            **settings.kafka_client_options(),
        )
        await producer.start()
        try:
            result = await execute_replay(
                client,
                settings.clickhouse_database,
                producer,
                plan,
                replay_id=uuid.uuid4().hex,
                partitions=partitions,
                now=datetime.now(UTC),
            )
        finally:
            await producer.stop()
    finally:
        await client.close()
    report.update(
        replay_id=result.replay_id,
        published=len(result.published),
        published_counts=summary_counts(letter for letter, _, _ in result.published),
        claimed_elsewhere=len(result.claimed_elsewhere),
        failed=len(result.failed),
        failures=[{**_listed(letter), "error": error} for letter, error in result.failed],
        topic_missing=len(result.topic_missing),
        missing_topics=sorted({x.source_topic for x in result.topic_missing}),
        republished=[
            {**_listed(letter), "to_partition": partition, "to_offset": offset}
            for letter, partition, offset in result.published
        ],
    )
    return report, 1 if result.failed or result.topic_missing else 0


def _listed(letter: Any) -> dict[str, Any]:
    """What a report shows of a dead letter: where, why, when, its size; never its
    content (it may hold personal data)."""
    return {
        "source": letter.label,
        "reason": letter.reason,
        "received_at": letter.received_at.isoformat(),
        "event_id": letter.event_id,
        "bytes": len(letter.raw),
    }


def _replay_text(report: dict[str, Any], show: int) -> str:
    dry = report["mode"] == "dry_run"
    lines = [
        ("dry run: nothing is published (add --execute to re-publish)" if dry else "replay")
        + f"; {report['selected']:,} dead letters selected, "
        f"{report['already_replayed']:,} matching ones already replayed (left out)",
    ]
    if report["failed_again"]:
        lines.append(
            f"  {report['failed_again']:,} of them failed again after an earlier replay (same "
            "value and key): is the cause fixed?"
        )
    counts = report["by_reason"], report["by_topic"]
    if dry:
        lines += ["  by reason:", *(f"    {k:<28} {n:>8,}" for k, n in counts[0].items())]
        lines += ["  by source topic:", *(f"    {k:<28} {n:>8,}" for k, n in counts[1].items())]
        listed = report["dead_letters"]
        if listed:
            lines.append("  would re-publish (original value, key and headers, to its topic):")
            lines += [
                f"    {x['source']:<40} {x['reason']:<22} {x['received_at'][:19]}  "
                f"{x['bytes']:,} bytes"
                for x in listed[:show]
            ]
            if len(listed) > show:
                lines.append(f"    ... and {len(listed) - show:,} more (--show N, or --json)")
        return "\n".join(lines)
    lines.append(f"  re-published: {report['published']:,}")
    published = report.get("published_counts", {})
    lines += [f"    {k:<28} {n:>8,}" for k, n in published.get("by_reason", {}).items()]
    if report["claimed_elsewhere"]:
        lines.append(f"  claimed by a concurrent run (left to it): {report['claimed_elsewhere']:,}")
    if report["topic_missing"]:
        lines.append(
            f"  source topic missing, not replayed: {report['topic_missing']:,} "
            f"({', '.join(report['missing_topics'])}); create the topic and run again"
        )
    if report["failed"]:
        lines.append(
            f"  FAILED: {report['failed']:,}; each may or may not have been written, so it is "
            "not sent again by itself (see the dlq_replays view):"
        )
        lines += [f"    {x['source']}: {x['error']}" for x in report["failures"][:show]]
    return "\n".join(lines)


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    """Re-publish dead letters to their source topics (dry run unless ``--execute``)."""
    from streams.cli import _settings

    settings = _settings(args)
    report, code = _guarded(settings, _replay(settings, args))
    _out(
        json.dumps(report, indent=2, default=str) if args.json else _replay_text(report, args.show)
    )
    return int(code)


# --- shared --------------------------------------------------------------------------------


def _out(text: str) -> None:
    """The command's report, on stdout (messages about the run go to stderr)."""
    sys.stdout.write(text + "\n")


async def _clickhouse(settings: Settings) -> Any:
    from streams.app import open_clickhouse

    return await open_clickhouse(settings)


async def _require_table(client: Any, settings: Settings, table: str) -> None:
    from schemas.clickhouse import quote_identifier

    db = quote_identifier(settings.clickhouse_database)
    found = await client.query(f"EXISTS TABLE {db}.{quote_identifier(table)}")
    if not found.result_rows[0][0]:
        raise SystemExit(
            f"touchpoint: ClickHouse database {settings.clickhouse_database} has no {table}; "
            "run `touchpoint migrate` (a worker of this version does it at start)"
        )


def _guarded(settings: Settings, work: Any) -> Any:
    """Run ``work``; a service that cannot be reached ends the command with one line."""
    try:
        return asyncio.run(work)
    except SystemExit:
        raise
    except Exception as exc:
        where = (
            f"ClickHouse at {settings.clickhouse_url}"
            if "clickhouse" in type(exc).__module__.lower()
            else f"Kafka at {settings.kafka_bootstrap}"
            if "kafka" in type(exc).__module__.lower()
            else "the deployment"
        )
        raise SystemExit(
            f"touchpoint: {type(exc).__name__} talking to {where}: {' '.join(str(exc).split())}"
        ) from None


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``status`` and ``dlq replay`` to the ``touchpoint`` parser."""
    from streams.cli import config_option

    status = add(
        "status",
        cmd_status,
        "check a running deployment: input topics read and refused, consumer lag, ClickHouse "
        "migrations, and from the workers' pages the sink backlog, alert queues and "
        "accounting; exits 1 when a check fails, saying why",
    )
    status.add_argument(
        "--worker",
        action="append",
        metavar="URL",
        help="a worker's web endpoint, e.g. http://worker-0:6066 (repeat for each worker)",
    )
    status.add_argument(
        "--max-lag",
        type=int,
        default=None,
        help="fail when a topic is more than this many messages behind (default: report only)",
    )
    status.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    status.add_argument("--json", action="store_true", help="print the report as JSON")

    dlq = add(
        "dlq",
        cmd_dlq_replay,
        "dead letters: `touchpoint dlq replay` re-publishes them once their cause is fixed",
    )
    verbs = dlq.add_subparsers(dest="dlq_command", required=True, metavar="VERB")
    text = (
        "re-publish dead letters (ClickHouse dead_letters) to their source topics: the "
        "original value, key and headers, without the touchpoint.dlq.* headers. A dry run "
        "unless --execute; each dead letter is re-published at most once, across runs and "
        "concurrent runs (ledger: ClickHouse dlq_replays)"
    )
    replay = verbs.add_parser(
        "replay",
        help=text,
        description=text,
        epilog=dlq.epilog,
        formatter_class=dlq.formatter_class,
        parents=[config_option()],
    )
    replay.set_defaults(func=cmd_dlq_replay)
    replay.add_argument(
        "--reason", action="append", metavar="REASON", help="only this reason (repeatable)"
    )
    replay.add_argument(
        "--topic", action="append", metavar="TOPIC", help="only this source topic (repeatable)"
    )
    replay.add_argument(
        "--since",
        type=_moment,
        help="dead-lettered at or after: a time (2026-11-20T08:00:00Z; no offset means UTC) "
        "or a duration ago (24h, 7d)",
    )
    replay.add_argument(
        "--until", type=_moment, help="dead-lettered before: a time or a duration ago"
    )
    replay.add_argument("--limit", type=int, help="at most this many dead letters")
    replay.add_argument(
        "--execute", action="store_true", help="re-publish (without it: a dry run that lists)"
    )
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.add_argument("--show", type=int, default=20, help="dead letters listed in the text")
    replay.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the brokers to answer before giving up",
    )
