"""The operator's commands: ``touchpoint worker``, ``migrate``, ``erase``,
``effort-check``, ``verify``, ``schema``, ``config``, ``status`` and ``dlq replay``
(``report`` is in :mod:`streams.operate.report`).

``status`` and ``dlq replay`` read a running deployment (the Kafka and ClickHouse the
settings name, and, for ``status``, the workers' web pages); ``dlq replay --execute``
is the only one of the two that writes (to the source topics and to the replay ledger
in ClickHouse).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams.console import config_option, configure_logging, settings_from_args, wait_for_kafka
from streams.operate.report import _report_segment, _report_step, _report_time, cmd_report
from streams.settings import Settings

__all__ = [
    "cmd_config",
    "cmd_dlq_replay",
    "cmd_effort_check",
    "cmd_erase",
    "cmd_migrate",
    "cmd_model",
    "cmd_schema",
    "cmd_status",
    "cmd_verify",
    "cmd_worker",
    "parse_moment",
    "register",
    "register_deployment",
]

logger = logging.getLogger("touchpoint")


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


# --- worker ------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the stream processor until interrupted."""
    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    from schemas.alert_rules import signing_keys

    try:
        keys = signing_keys(settings.alerts, os.environ)
    except ValueError as exc:
        raise SystemExit(f"cannot start: {exc}") from None

    from streams.operate.migrate_state import legacy_state_pending
    from streams.runtime.app import clean_run, create_worker
    from streams.runtime.topics import (
        discover_input_topics,
        ensure_changelog_topics,
        ensure_internal_topics,
        ensure_topics,
    )

    async def prepare() -> tuple[str, ...]:
        await _migrate(settings)
        await ensure_topics(
            settings, [settings.dlq_topic, settings.alerts_topic, settings.merges_topic]
        )
        if await legacy_state_pending(settings):
            raise SystemExit(
                "cannot start: this deployment holds state of the single-partition layout "
                f"({settings.app_id}-identity-changelog) and none of this version's; stop every "
                "worker and run `touchpoint migrate-state` first (see README: Upgrading)"
            )
        await ensure_internal_topics(settings)
        await ensure_changelog_topics(settings)
        found = await discover_input_topics(settings)
        for name, count in found.refused.items():
            logger.error(
                "not reading %s: %d partitions, expected %d (TOUCHPOINT_TOPIC_PARTITIONS)",
                name,
                count,
                settings.topic_partitions,
            )
        return found.usable

    from streams.runtime.lifecycle import SupervisedWorker, retry_until_ready

    what = f"Kafka at {settings.kafka_bootstrap} and ClickHouse at {settings.clickhouse_url}"
    try:
        topics = asyncio.run(retry_until_ready(prepare, what, settings.startup_timeout_s))
    except Exception as exc:
        raise SystemExit(
            f"cannot start: {exc}\nWaited {settings.startup_timeout_s:g} s "
            f"(TOUCHPOINT_STARTUP_TIMEOUT_S). Check TOUCHPOINT_KAFKA_BOOTSTRAP "
            f"({settings.kafka_bootstrap}) and TOUCHPOINT_CLICKHOUSE_URL "
            f"({settings.clickhouse_url})."
        ) from None
    logger.info(
        "reading %d input topics: %s", len(topics), ", ".join(topics) or "(none yet; discovering)"
    )
    worker = create_worker(settings, topics, keys)
    faust_worker = SupervisedWorker(
        worker.app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        shutdown_timeout_s=settings.shutdown_timeout_s,
    )
    # Faust's start-up spinner sets the root logger to DEBUG whenever the level is WARNING
    # or above, so every library formats every debug record (about 7% of the stitch path)
    faust_worker.spinner = None
    with clean_run(worker):
        faust_worker.execute_from_commandline()
    return 0


# --- migrate -----------------------------------------------------------------------------


async def _migrate(settings: Settings) -> str:
    from sinks.migrations import migrate
    from streams.runtime.app import open_clickhouse

    client = await open_clickhouse(settings)
    try:
        report = await migrate(
            client, settings.clickhouse_database, cluster=settings.clickhouse_cluster
        )
    finally:
        await client.close()
    return (
        f"database {settings.clickhouse_database}: applied {list(report.applied) or 'nothing'}, "
        f"already applied {list(report.already_applied) or 'none'}"
        + (f", CHANGED since applied: {list(report.changed)}" if report.changed else "")
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    """Create or upgrade the ClickHouse schema (idempotent)."""
    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    try:
        print(asyncio.run(_migrate(settings)))
    except Exception as exc:
        raise SystemExit(
            f"migration failed: {exc}\nIs ClickHouse reachable at {settings.clickhouse_url}?"
        ) from None
    return 0


def cmd_migrate_state(args: argparse.Namespace) -> int:
    """Carry the single-partition layout's stream state forward (see migrate_state)."""
    from streams.operate.migrate_state import MigrationError, migrate_state

    settings = settings_from_args(args)
    configure_logging(settings.log_level)

    def progress(line: str) -> None:
        sys.stderr.write(line + "\n")

    try:
        report = _guarded(
            settings,
            migrate_state(settings, dry_run=args.dry_run, force=args.force, progress=progress),
        )
    except MigrationError as exc:
        raise SystemExit(f"touchpoint migrate-state: {exc}") from None
    for line in report.lines():
        _out(line)
    if args.dry_run and not report.nothing_to_do:
        _out("dry run: nothing written (run again with --apply)")
    return 0


# --- erase -------------------------------------------------------------------------------


async def _erase(settings: Settings, kind: str, value: str, wait_s: float) -> dict[str, object]:
    import uuid
    from time import monotonic

    import orjson
    from aiokafka import AIOKafkaProducer

    from streams.domain.identifiers import normalise_identifiers
    from streams.runtime.app import ingest_rules, open_clickhouse
    from streams.runtime.topics import resolve_topic_name

    normalised = normalise_identifiers({kind: value}, ingest_rules(settings).identifiers)
    if kind not in normalised.kept:
        reason = normalised.rejected.get(kind, "not usable")
        raise SystemExit(f"{kind}:{value!r} is not an identifier the worker stores ({reason})")
    request_id = str(uuid.uuid4())
    request = {
        "control": "erase",
        "request_id": request_id,
        "kind": kind,
        "value": normalised.kept[kind],
        "requested_at": int(datetime.now(UTC).timestamp() * 1000),
    }
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", **settings.kafka_client_options()
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            resolve_topic_name(settings), orjson.dumps(request), partition=0
        )
    finally:
        await producer.stop()
    client = await open_clickhouse(settings)
    try:
        # dead letters keep the original bytes; the value as typed is matched there directly
        # (it is never put on Kafka)
        await client.command(
            f"ALTER TABLE `{settings.clickhouse_database}`.dead_letters_store "
            "DELETE WHERE position(raw, {v:String}) > 0",
            parameters={"v": value.strip()},
            settings={"mutations_sync": 2},
        )
        deadline = monotonic() + wait_s
        while monotonic() < deadline:
            found = await client.query(
                f"SELECT customer_ids, identifiers_removed FROM "
                f"`{settings.clickhouse_database}`.erasures WHERE request_id = {{r:String}}",
                parameters={"r": request_id},
            )
            if found.result_rows:
                ids, removed = found.result_rows[0]
                return {"request_id": request_id, "customer_ids": ids, "identifiers": removed}
            await asyncio.sleep(0.5)
    finally:
        await client.close()
    raise SystemExit(
        f"erasure {request_id} was requested but no worker confirmed it within {wait_s:g} s; "
        "it is carried out when a worker runs (see touchpoints.erasures)"
    )


def cmd_erase(args: argparse.Namespace) -> int:
    """Erase a customer: identifiers, journey state and stored rows."""
    settings = settings_from_args(args)
    configure_logging("WARNING")
    kind, sep, value = args.identifier.partition(":")
    if not sep or not value:
        raise SystemExit("give the identifier as KIND:VALUE, e.g. email:ada@example.com")
    result = asyncio.run(_erase(settings, kind, value, args.wait))
    print(json.dumps(result, indent=2, default=str))
    return 0


# --- effort-check ------------------------------------------------------------------------


async def _effort_check(
    settings: Settings, kind: str, period: str, min_answers: int
) -> dict[str, Any]:
    from schemas.clickhouse import quote_identifier
    from sinks.reports import EFFORT_AT_ANSWERS, EFFORT_SEGMENT_CELLS, effort_check_report
    from streams.runtime.app import open_clickhouse

    db = quote_identifier(settings.clickhouse_database)
    cell = {"kind": kind, "period": period, "min_answers": min_answers}
    client = await open_clickhouse(settings)
    try:
        answers = await client.query(EFFORT_AT_ANSWERS.format(db=db))
        cells = await client.query(EFFORT_SEGMENT_CELLS.format(db=db), parameters=cell)
    finally:
        await client.close()
    return effort_check_report(
        answers.result_rows, cells.result_rows, kind=kind, period=period, min_answers=min_answers
    )


def cmd_effort_check(args: argparse.Namespace) -> int:
    """How well the customer and segment effort indexes track the CES answers in
    ClickHouse."""
    from sinks.reports import format_effort_check

    settings = settings_from_args(args)
    configure_logging("WARNING")
    try:
        report = asyncio.run(_effort_check(settings, args.segment, args.period, args.min_answers))
    except Exception as exc:
        raise SystemExit(
            f"effort check failed: {exc}\nIs ClickHouse reachable at {settings.clickhouse_url}"
            " and migrated (touchpoint migrate)?"
        ) from None
    print(json.dumps(report, indent=2) if args.json else format_effort_check(report))
    return 0


# --- model -------------------------------------------------------------------------------


async def _model_examples(settings: Settings) -> list[Any]:
    from streams.operate.model import events_query, examples_from_rows
    from streams.runtime.app import partition_rules

    client = await _clickhouse(settings)
    try:
        await _require_table(client, settings, "events")
        result = await client.query(events_query(settings.clickhouse_database))
        rows = result.result_rows
    finally:
        await client.close()
    # features only: the model in use plays no part
    rules = partition_rules(settings.model_copy(update={"risk_enabled": False}))
    return examples_from_rows(rows, rules, settings.alerts.detractor)


def cmd_model(args: argparse.Namespace) -> int:
    """Train the detractor model from ClickHouse, or evaluate it on a time split."""
    from streams.operate.model import evaluate, fit, format_evaluation

    settings = settings_from_args(args)
    configure_logging("WARNING")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit(
            "touchpoint model: needs scikit-learn; pip install 'touchpoint-streams[model]'"
        ) from None
    examples = _guarded(settings, _model_examples(settings))
    try:
        if args.model_command == "train":
            model = fit(
                examples, seed=args.seed, c=args.c, source=f"{settings.clickhouse_database}.events"
            )
            Path(args.output).write_bytes(model.to_json())
            t = model.trained
            _out(
                f"trained {model.version} on {t['answers']:,} answers "
                f"({t['detractor_answers']:,} detractor answers, {t['customers']:,} customers); "
                f"written to {args.output}"
            )
            return 0
        evaluation = evaluate(examples, test_share=args.test_share, seed=args.seed, c=args.c)
    except ValueError as exc:
        raise SystemExit(f"touchpoint model: {exc}") from None
    _out(json.dumps(evaluation.to_json(), indent=2) if args.json else format_evaluation(evaluation))
    return 0


# --- verify ------------------------------------------------------------------------------


async def _verify(settings: Settings, deep: bool) -> tuple[int, dict[str, object], list[str]]:
    from sinks.truth import truth_checks
    from streams.runtime.app import open_clickhouse
    from streams.runtime.reconcile import reconcile

    client = await open_clickhouse(settings)
    try:
        report = await reconcile(settings, client)
        lines = report.lines()
        found: dict[str, object] = {
            "unread": report.unread,
            "missing": report.missing,
            "pending_stitch_records": report.pending,
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "start": p.start,
                    "committed": p.committed,
                    "end": p.end,
                    "read": p.read,
                    "unread": p.unread,
                    "missing": p.missing,
                }
                for p in report.partitions
            ],
        }
        status = 1 if report.difference else (3 if report.pending else 0)
        if deep:
            differences = await truth_checks(
                client,
                settings.clickhouse_database,
                dimensions=settings.score_segments,
                assisted=sorted(settings.effort_assisted_channels),
                bucket_s=settings.score_bucket_s,
                repeat_window_s=settings.effort_repeat_window_s,
            )
            lines += ["aggregates against a recomputation from events:"]
            lines += [f"  {d}" for d in differences]
            found["aggregates"] = {d.check: d.differing for d in differences}
            if any(not d.ok for d in differences) and status == 0:
                status = 1
    finally:
        await client.close()
    return status, found, lines


def cmd_verify(args: argparse.Namespace) -> int:
    """Reconcile committed offsets with the ledger and what ClickHouse holds."""
    settings = settings_from_args(args)
    configure_logging("WARNING")
    try:
        status, found, lines = asyncio.run(_verify(settings, args.deep))
    except Exception as exc:
        raise SystemExit(
            f"verify failed: {exc}\nCheck TOUCHPOINT_KAFKA_BOOTSTRAP and "
            f"TOUCHPOINT_CLICKHOUSE_URL (is ClickHouse migrated?)."
        ) from None
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print("\n".join(lines))
        if status == 3:
            print("pending: the stitch topic is not committed to its end; run again when drained")
    return status


# --- schema / config ---------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of a v1 touchpoint event."""
    from schemas.event import event_json_schema

    text = json.dumps(event_json_schema(), indent=2, sort_keys=True)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective settings, secrets masked (or, with ``--reference``, the
    settings reference)."""
    if args.reference:
        from streams.settings_reference import settings_reference

        sys.stdout.write(settings_reference())
        return 0
    print(json.dumps(settings_from_args(args).redacted(), indent=2, default=str))
    return 0


# --- status --------------------------------------------------------------------------------


async def _status(settings: Settings, args: argparse.Namespace) -> Any:
    from streams.operate.status import Deployment, run_checks

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

    from streams.operate.status import as_json, healthy, render_text

    settings = settings_from_args(args)
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
        await wait_for_kafka(settings, args.connect_timeout)
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
    settings = settings_from_args(args)
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
    from streams.runtime.app import open_clickhouse

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


# --- registration ----------------------------------------------------------------------


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``worker``, ``migrate``, ``schema``, ``config``, ``erase``, ``verify``,
    ``effort-check`` and ``report`` to the ``touchpoint`` parser."""
    add("worker", cmd_worker, "run the stream processor (Faust agents) until interrupted")
    add("migrate", cmd_migrate, "create or upgrade the ClickHouse schema (idempotent)")
    migrate_state = add(
        "migrate-state",
        cmd_migrate_state,
        "upgrade the stream state of a deployment from the single-partition layout (one "
        "stitch partition) to the resolver and customer partitions; workers stopped first. "
        "A dry run by default",
    )
    migrate_state.add_argument(
        "--apply", dest="dry_run", action="store_false", help="write the new state"
    )
    migrate_state.add_argument(
        "--force", action="store_true", help="write over state the new layout already has"
    )
    schema = add("schema", cmd_schema, "print the JSON Schema of a v1 touchpoint event")
    schema.add_argument("--output", "-o", help="write to this file instead of stdout")
    config = add("config", cmd_config, "print the effective settings, secrets masked")
    config.add_argument(
        "--reference",
        action="store_true",
        help="print the settings reference (every setting, its variable, default and "
        "meaning; docs/settings.md) instead",
    )
    erase = add(
        "erase",
        cmd_erase,
        "erase the customer an identifier belongs to: its identifiers and journey from the "
        "stream state (changelog tombstones) and its rows from ClickHouse; an erasure record "
        "(no identifier values) is kept in touchpoints.erasures",
    )
    erase.add_argument("--identifier", required=True, help="KIND:VALUE, e.g. email:ada@x.org")
    erase.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for a worker to confirm"
    )

    verify = add(
        "verify",
        cmd_verify,
        "reconcile every input partition: offsets the consumer group committed that no "
        "batch read, and messages read that ClickHouse holds no outcome for; exit 1 on a "
        "difference, 3 while the stitch topic still has records to store",
    )
    verify.add_argument(
        "--deep",
        action="store_true",
        help="also recompute scores, journeys and effort from events and compare",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")

    effort_check = add(
        "effort-check",
        cmd_effort_check,
        "how well the effort indexes track the CES answers in ClickHouse: the customer "
        "index at each answer (and the old 28-day sum), the answered case's effort, and the "
        "segment index per segment cell (Pearson, Spearman, sample sizes, means per CES score)",
    )
    effort_check.add_argument(
        "--segment",
        default="channel",
        metavar="KIND",
        help="the segment kind of the cells: channel, journey_stage or a context dimension "
        "such as region (default: channel)",
    )
    effort_check.add_argument(
        "--period",
        choices=["day", "week"],
        default="week",
        help="the cells' time span (default: week)",
    )
    effort_check.add_argument(
        "--min-answers",
        type=int,
        default=5,
        help="leave out cells with fewer CES answers (default: 5)",
    )
    effort_check.add_argument("--json", action="store_true", help="print the report as JSON")

    model = add(
        "model",
        cmd_model,
        "the detractor model: `model train` fits it to the survey answers in ClickHouse and "
        "writes the artifact the worker scores with (TOUCHPOINT_RISK_MODEL); `model evaluate` "
        "reports AUC, calibration and top-decile lift on a time split, against baselines",
    )
    verbs = model.add_subparsers(dest="model_command", required=True, metavar="VERB")
    for verb, text in (
        ("train", "fit the model to every answer in ClickHouse and write its JSON artifact"),
        (
            "evaluate",
            "train on the earliest answers, test on the latest: AUC, calibration per decile, "
            "top-decile lift, against the previous answer and the stage's rate",
        ),
    ):
        sub = verbs.add_parser(
            verb,
            help=text,
            description=text,
            epilog=model.epilog,
            formatter_class=model.formatter_class,
            parents=[config_option()],
        )
        sub.set_defaults(func=cmd_model)
        sub.add_argument("--seed", type=int, default=7, help="random state of the fit")
        sub.add_argument(
            "--l2-c", dest="c", type=float, default=1.0, help="C: inverse L2 regularisation"
        )
        if verb == "train":
            sub.add_argument("--output", "-o", required=True, help="the artifact to write")
        else:
            sub.add_argument(
                "--test-share", type=float, default=0.3, help="latest share of answers tested"
            )
            sub.add_argument("--json", action="store_true", help="print the report as JSON")

    report = add(
        "report",
        cmd_report,
        "write the analysts' report: one self-contained HTML file (charts and their data "
        "inside, opens offline) drawn from the ClickHouse views",
    )
    report.add_argument("--output", "-o", required=True, help="the HTML file to write")
    report.add_argument(
        "--from", dest="start", type=_report_time, help="event time from (ISO 8601; UTC)"
    )
    report.add_argument("--to", dest="end", type=_report_time, help="event time until, excluded")
    report.add_argument(
        "--segment",
        action="append",
        type=_report_segment,
        metavar="KIND:VALUE",
        help="a segment whose NPS, CSAT and CES to draw over time, e.g. region:eu-west; "
        "KIND:* for every value of a kind; repeat for more (default channel:*)",
    )
    report.add_argument(
        "--step", type=_report_step, help="time step of the charts, e.g. 1h, 6h, 1d "
        "(default: from the span, at most 48 steps)",
    )  # fmt: skip


def register_deployment(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``status`` and ``dlq replay`` to the ``touchpoint`` parser."""
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
