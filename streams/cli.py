"""The ``touchpoint`` command: worker, demo, migrate, generate, schema, benchmark, config,
report.

Every command reads the same settings (``TOUCHPOINT_*`` environment variables or the
TOML file given by ``--config`` / ``TOUCHPOINT_CONFIG``, before or after the command)
and has ``--help`` showing its defaults. A mistake in the settings or an unreachable
service ends a command with one line on stderr saying what to do, and a non-zero exit;
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from streams.settings import ConfigurationError, Settings, describe_error, load_settings

if TYPE_CHECKING:
    from sinks.report_queries import ReportQuery

__all__ = ["SETTINGS_HELP", "build_parser", "config_option", "main", "write_report_file"]

logger = logging.getLogger("touchpoint")


#: Where every setting is described; the help of the commands that read settings says so.
SETTINGS_HELP = (
    "Settings come from TOUCHPOINT_* environment variables or a TOML file (--config FILE, "
    "or TOUCHPOINT_CONFIG). `touchpoint config` prints the values in effect; the settings "
    "reference (docs/settings.md, or `touchpoint config --reference`) describes each one."
)


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    """The settings, or exit with one line saying what is wrong with them."""
    try:
        return load_settings(
            getattr(args, "config", None), **{k: v for k, v in overrides.items() if v is not None}
        )
    except (ValidationError, ConfigurationError, FileNotFoundError) as exc:
        raise SystemExit(f"touchpoint: {describe_error(exc)}") from None


async def _wait_for_kafka(settings: Settings, timeout_s: float) -> None:
    """Return once the brokers answer; exit with what to check after ``timeout_s``.

    aiokafka logs each failed connection attempt at ERROR; those lines are held back
    here, so the operator reads one message, not a log per retry.
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaConnectionError, KafkaError

    deadline = monotonic() + timeout_s
    noisy = logging.getLogger("aiokafka")
    level = noisy.level
    noisy.setLevel(logging.CRITICAL)
    last = ""
    try:
        while True:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=settings.kafka_bootstrap,
                request_timeout_ms=int(max(1.0, min(10.0, timeout_s)) * 1000),
                **settings.kafka_client_options(),
            )
            try:
                await asyncio.wait_for(admin.start(), max(0.5, deadline - monotonic()))
                return
            except KafkaConnectionError:
                last = "no broker answered"
            except (KafkaError, OSError, TimeoutError) as exc:
                last = str(exc) or type(exc).__name__
            finally:
                await admin.close()
            if monotonic() >= deadline:
                raise SystemExit(
                    f"touchpoint: cannot reach Kafka at {settings.kafka_bootstrap} within "
                    f"{timeout_s:g} s ({last.strip()}); check TOUCHPOINT_KAFKA_BOOTSTRAP and "
                    "that the brokers are running"
                )
            await asyncio.sleep(min(1.0, max(0.0, deadline - monotonic())))
    finally:
        noisy.setLevel(level)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# --- worker ------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the stream processor until interrupted."""
    settings = _settings(args)
    _configure_logging(settings.log_level)
    from schemas.alert_rules import signing_keys

    try:
        keys = signing_keys(settings.alerts, os.environ)
    except ValueError as exc:
        raise SystemExit(f"cannot start: {exc}") from None

    from streams.app import clean_run, create_worker
    from streams.topics import (
        discover_input_topics,
        ensure_changelog_topics,
        ensure_stitch_topic,
        ensure_topics,
    )

    async def prepare() -> tuple[str, ...]:
        await _migrate(settings)
        await ensure_topics(
            settings, [settings.dlq_topic, settings.alerts_topic, settings.merges_topic]
        )
        await ensure_stitch_topic(settings)
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

    from streams.lifecycle import SupervisedWorker, retry_until_ready

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
    from streams.app import open_clickhouse

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
    settings = _settings(args)
    _configure_logging(settings.log_level)
    try:
        print(asyncio.run(_migrate(settings)))
    except Exception as exc:
        raise SystemExit(
            f"migration failed: {exc}\nIs ClickHouse reachable at {settings.clickhouse_url}?"
        ) from None
    return 0


# --- erase -------------------------------------------------------------------------------


async def _erase(settings: Settings, kind: str, value: str, wait_s: float) -> dict[str, object]:
    import uuid
    from time import monotonic

    import orjson
    from aiokafka import AIOKafkaProducer

    from streams.app import ingest_rules, open_clickhouse
    from streams.identifiers import normalise_identifiers
    from streams.topics import stitch_topic_name

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
            stitch_topic_name(settings), orjson.dumps(request), partition=0
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
    settings = _settings(args)
    _configure_logging("WARNING")
    kind, sep, value = args.identifier.partition(":")
    if not sep or not value:
        raise SystemExit("give the identifier as KIND:VALUE, e.g. email:ada@example.com")
    result = asyncio.run(_erase(settings, kind, value, args.wait))
    print(json.dumps(result, indent=2, default=str))
    return 0


# --- effort-check ------------------------------------------------------------------------


async def _effort_check(settings: Settings) -> str:
    from schemas.clickhouse import quote_identifier
    from sinks.reports import EFFORT_VS_CES, EFFORT_VS_CES_BY_SCORE, format_effort_vs_ces
    from streams.app import open_clickhouse

    db = quote_identifier(settings.clickhouse_database)
    client = await open_clickhouse(settings)
    try:
        summary = (await client.query(EFFORT_VS_CES.format(db=db))).result_rows[0]
        by_score = (await client.query(EFFORT_VS_CES_BY_SCORE.format(db=db))).result_rows
    finally:
        await client.close()
    return format_effort_vs_ces(tuple(summary), [tuple(r) for r in by_score])


def cmd_effort_check(args: argparse.Namespace) -> int:
    """How well the effort index tracks the CES answers in ClickHouse."""
    settings = _settings(args)
    _configure_logging("WARNING")
    try:
        print(asyncio.run(_effort_check(settings)))
    except Exception as exc:
        raise SystemExit(
            f"effort check failed: {exc}\nIs ClickHouse reachable at {settings.clickhouse_url}"
            " and migrated (touchpoint migrate)?"
        ) from None
    return 0


# --- verify ------------------------------------------------------------------------------


async def _verify(settings: Settings, deep: bool) -> tuple[int, dict[str, object], list[str]]:
    from sinks.truth import truth_checks
    from streams.app import open_clickhouse
    from streams.reconcile import reconcile

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
    settings = _settings(args)
    _configure_logging("WARNING")
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


# --- report ------------------------------------------------------------------------------


def _report_time(text: str) -> datetime:
    """``--from`` / ``--to``: an ISO 8601 date or date and time; without an offset, UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date or time: {text!r} (e.g. 2026-11-01 or 2026-11-01T08:00:00+01:00)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _report_segment(text: str) -> str:
    """``--segment``: ``KIND`` or ``KIND:*`` (every value of a kind) or ``KIND:VALUE``."""
    kind, sep, value = text.partition(":")
    if not kind or (sep and not value):
        raise argparse.ArgumentTypeError(
            f"not a segment: {text!r} (give KIND:VALUE, e.g. region:eu-west, or KIND:* for "
            "every value of a kind, e.g. channel:*)"
        )
    return kind if value in ("", "*") else f"{kind}:{value}"


def _report_step(text: str) -> int:
    from schemas.alert_rules import parse_duration

    try:
        seconds = int(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 60:
        raise argparse.ArgumentTypeError("--step is at least a minute (the score buckets')")
    return seconds


def write_report_file(
    settings: Settings, output: Path, query: ReportQuery | None = None
) -> dict[str, Any]:
    """Write the report of ``settings``' ClickHouse to ``output``; returns what it
    covers (the row of :data:`sinks.report_queries.COVERAGE`)."""
    from sinks.report_queries import ReportQuery
    from streams.report import write_report

    async def run() -> dict[str, Any]:
        import clickhouse_connect

        client = await clickhouse_connect.get_async_client(
            dsn=settings.clickhouse_url,
            username=settings.clickhouse_user,
            password=settings.clickhouse_password.get_secret_value(),
            verify=settings.clickhouse_verify_tls,
            autogenerate_session_id=False,
        )
        try:
            data = await write_report(
                client,
                settings.clickhouse_database,
                query or ReportQuery(),
                output,
                datetime.now(UTC),
            )
        finally:
            await client.close()
        return dict(data["coverage"])

    return asyncio.run(run())


def cmd_report(args: argparse.Namespace) -> int:
    """Write the analysts' report: one self-contained HTML file drawn from ClickHouse."""
    from sinks.report_queries import ReportQuery

    settings = _settings(args)
    _configure_logging("WARNING")
    if args.start and args.end and args.start >= args.end:
        raise SystemExit("--from must come before --to")
    query = ReportQuery(
        start=args.start,
        end=args.end,
        segments=tuple(dict.fromkeys(args.segment or ["channel"])),
        step_s=args.step,
    )
    output = Path(args.output)
    try:
        covers = write_report_file(settings, output, query)
    except Exception as exc:
        raise SystemExit(
            f"report failed: {exc}\nIs ClickHouse reachable at {settings.clickhouse_url}"
            " and migrated (touchpoint migrate)?"
        ) from None
    span = (
        f"{covers['first_event']} to {covers['last_event']}"
        if covers["first_event"]
        else "no events in the range"
    )
    print(
        f"wrote {output.resolve()}: {covers['events']:,} events, {covers['customers']:,} "
        f"customers, {covers['answers']:,} answers ({span})"
    )
    return 0


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
    print(json.dumps(_settings(args).redacted(), indent=2, default=str))
    return 0


# --- parser ------------------------------------------------------------------------------


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, unless the help already states it, or there
    is nothing to state (no default, or an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "(default" in text
            or "%(default)" in text
            or not action.option_strings
            or _no_default(action.default)
        ):
            return text
        return text + " (default: %(default)s)"


def _no_default(value: object) -> bool:
    # by identity: 0 and 0.0 equal False, and a default of 0 is worth showing
    return value is None or value is False or value is argparse.SUPPRESS


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("touchpoint-streams")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


#: Commands whose help points to ``touchpoint config`` and the settings reference.
_READS_SETTINGS = frozenset(
    {
        "worker",
        "migrate",
        "config",
        "generate",
        "erase",
        "effort-check",
        "verify",
        "report",
        "status",
        "dlq",
    }
)


def _show_every_default(parser: argparse.ArgumentParser) -> None:
    """Give options without help a help line, so their default shows too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _show_every_default(sub)
        elif action.option_strings and action.help is None and not _no_default(action.default):
            action.help = "default: %(default)s"


def config_option() -> argparse.ArgumentParser:
    """A parent parser with ``--config``, for the commands that read settings: the option
    is accepted after the command too (``touchpoint worker --config FILE``). Its default
    is SUPPRESS, so a ``--config`` given before the command stays when none follows."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML settings file (or TOUCHPOINT_CONFIG); also accepted before the command",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="touchpoint",
        description="Customer-experience touchpoints from Kafka into one customer picture.",
        epilog=SETTINGS_HELP,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"touchpoint {_version()}")
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML settings file (or TOUCHPOINT_CONFIG)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: object, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=SETTINGS_HELP if name in _READS_SETTINGS else None,
            formatter_class=_HelpFormatter,
            parents=[config_option()] if name in _READS_SETTINGS else [],
        )
        sub.set_defaults(func=func)
        return sub

    add("worker", cmd_worker, "run the stream processor (Faust agents) until interrupted")
    add("migrate", cmd_migrate, "create or upgrade the ClickHouse schema (idempotent)")
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

    add(
        "effort-check",
        cmd_effort_check,
        "how well the effort index tracks the CES answers in ClickHouse (correlation, "
        "sample size, mean effort per CES score)",
    )

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

    from streams import commands as extra
    from streams import operator_commands
    from streams.tools import commands as tools

    extra.register(add)
    tools.register(add)
    operator_commands.register(add)
    _show_every_default(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``touchpoint`` console script."""
    args = build_parser().parse_args(argv)
    if args.func is not cmd_worker and threading.current_thread() is threading.main_thread():
        # SIGTERM (``timeout``, a supervisor) unwinds like Ctrl-C, so the embedded Kafka
        # and ClickHouse a command started are stopped, not left running
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (``touchpoint schema | head``): nothing to trace; point
        # stdout at nothing so the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
