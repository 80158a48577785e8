"""The composition root: settings -> Faust app, sinks, metrics, agents.

Nothing else in the project builds these; tests and the command line call
:func:`create_worker` with the settings they want.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import clickhouse_connect
import faust
from mode import Service

from sinks.alerts import ClickHouseLedger
from sinks.clickhouse import ClickHouseSink
from sinks.dead_letters import DeadLetterPublisher
from sinks.webhooks import Deliverer
from streams.domain.customers import PartitionRules, ScoreRules
from streams.domain.dedup import DuplicateWindow
from streams.domain.effort import EffortRules
from streams.domain.followup import FollowupRules
from streams.domain.identifiers import IdentifierPolicy
from streams.domain.identity import IdentityRules
from streams.domain.ingest import IngestRules
from streams.domain.journey import JourneyRules
from streams.domain.risk import RiskRules, load_model
from streams.runtime.agents import register_agents
from streams.runtime.batching import BatchingApp
from streams.runtime.lifecycle import retry_until_ready, survives
from streams.runtime.metrics import WorkerMetrics
from streams.runtime.reconcile import LedgerWatch
from streams.runtime.topics import (
    CUSTOMERS_TABLE,
    DEDUP_TABLE,
    DETECTOR_TABLE,
    RESOLVER_TABLE,
    customers_topic_name,
    discover_input_topics,
    resolve_topic_name,
    tallies_topic_name,
)
from streams.runtime.web import install_pages
from streams.runtime.worker import Worker
from streams.settings import Settings

__all__ = [
    "clean_run",
    "create_worker",
    "identity_rules",
    "ingest_rules",
    "journey_rules",
    "open_clickhouse",
    "partition_rules",
    "risk_rules",
    "state_options",
]

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


def state_options(settings: Settings) -> dict[str, Any]:
    """RocksDB options of each state partition's database: bounded caches (Faust's defaults
    reserve up to 2 GiB of block cache and 192 MB of write buffers per database, and a
    worker opens one database per table partition it holds)."""
    return {
        "block_cache_size": settings.state_block_cache_mib * MIB,
        "write_buffer_size": settings.state_write_buffer_mib * MIB,
        "max_write_buffer_number": 2,
    }


def ingest_rules(settings: Settings) -> IngestRules:
    """The validation and normalisation rules the settings describe."""
    return IngestRules(
        identifiers=IdentifierPolicy.build(
            settings.blocked_values,
            settings.blocked_patterns,
            settings.default_phone_region,
            settings.pseudonym_key.get_secret_value().encode()
            if settings.pseudonymise_identifiers and settings.pseudonym_key
            else None,
        ),
        max_event_bytes=settings.max_event_bytes,
        max_string_chars=settings.max_string_chars,
        clock_skew_tolerance_s=settings.clock_skew_tolerance_s,
        max_future_s=settings.max_future_s,
        max_age_s=settings.max_age_s,
        time_policy=settings.time_policy,
    )


@contextlib.contextmanager
def clean_run(worker: Worker) -> Iterator[None]:
    """Mark the local state as in use while the worker runs; rebuild it after a crash.

    RocksDB takes a table write at once while its changelog records are sent later (the
    owners send them once the batch's rows are stored), so a worker killed in
    between, or stopped with sends outstanding, keeps local writes its changelog never
    saw.
    After such an unclean stop the state tables' local files are removed and Faust
    restores them from the changelog, which is the truth every other worker shares.
    """
    settings = worker.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    marker = settings.data_dir / f"{settings.app_id}.running"
    if marker.exists():
        stale = sorted(
            path
            for table in (RESOLVER_TABLE, CUSTOMERS_TABLE, DETECTOR_TABLE)
            for path in Path(worker.app.conf.tabledir).glob(f"{table}-*")
        )
        logger.warning(
            "the previous run did not stop cleanly: rebuilding the resolver, customers and "
            "detector state from their changelogs (removing %d local files)",
            len(stale),
        )
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)
    marker.touch()
    try:
        yield
    finally:
        if worker.unsent_state:
            logger.warning(
                "stopping with %d batches not yet in the changelogs: the state will be "
                "rebuilt from the changelogs at the next start",
                worker.unsent_state,
            )
        else:
            marker.unlink(missing_ok=True)


def identity_rules(settings: Settings) -> IdentityRules:
    """The stitching guards the settings describe."""
    return IdentityRules(
        limits=dict(settings.identity_limits),
        default_limit=settings.identity_default_limit,
        unique_kinds=frozenset(settings.identity_unique_kinds),
        priority=tuple(settings.identity_priority),
    )


def partition_rules(settings: Settings) -> PartitionRules:
    """What the customer partitions decide by: journeys, effort, scores, partitions."""
    return PartitionRules(
        journey=journey_rules(settings),
        effort=EffortRules(
            assisted_channels=frozenset(settings.effort_assisted_channels),
            repeat_window_ms=int(settings.effort_repeat_window_s * 1000),
            max_contacts_per_case=settings.effort_max_contacts_per_case,
        ),
        scores=ScoreRules(settings.score_bucket_s * 1000, tuple(settings.score_segments)),
        partitions=settings.customers_partitions,
        followup=FollowupRules(
            due_ms=int(settings.alerts.followup_overdue.due * 1000),
            detractor=settings.alerts.detractor,
        ),
        risk=risk_rules(settings),
    )


def risk_rules(settings: Settings) -> RiskRules | None:
    """The detractor model and the at-risk threshold (None when scoring is off)."""
    if not settings.risk_enabled:
        return None
    rule = settings.alerts.at_risk
    return RiskRules(
        load_model(settings.risk_model),
        threshold=rule.threshold,
        rearm_below=rule.rearm_below,
        reasons=rule.reasons,
        assisted=frozenset(settings.effort_assisted_channels),
    )


def journey_rules(settings: Settings) -> JourneyRules:
    """The journey map and bounds the settings describe."""
    return JourneyRules(
        stages=dict(settings.journey_stages),
        case_closing_types=frozenset(settings.journey_case_closing_types),
        max_recent=settings.journey_max_recent,
        max_open_cases=settings.journey_max_open_cases,
        max_closed_cases=settings.journey_max_closed_cases,
        max_answers=settings.journey_max_answers,
    )


async def open_clickhouse(settings: Settings) -> Any:
    """An async clickhouse-connect client for the configured server (inside the running loop)."""
    return await clickhouse_connect.get_async_client(
        dsn=settings.clickhouse_url,
        username=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        verify=settings.clickhouse_verify_tls,
        autogenerate_session_id=False,
        # on a cluster the sink writes through Distributed tables: an insert must reach
        # the shards before its offsets are acked, with its deduplication token
        settings={"async_insert": 0}
        | ({"distributed_foreground_insert": 1} if settings.clickhouse_cluster else {}),
    )


def _credentials(settings: Settings) -> Any:
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(settings.ssl_context())
    assert settings.kafka_sasl_password is not None
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=settings.ssl_context() if protocol == "SASL_SSL" else None,
    )


def create_worker(
    settings: Settings,
    input_topics: tuple[str, ...],
    webhook_keys: Mapping[str, bytes] | None = None,
) -> Worker:
    """Build the Faust app with its topics, table, sinks, web pages and agents.

    ``webhook_keys`` are the endpoints' signing keys (``signing_keys`` reads them from
    the environment); every configured endpoint needs one.
    """
    app = BatchingApp(
        settings.app_id,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        broker_max_poll_records=settings.max_poll_records,
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
        consumer_auto_offset_reset=settings.auto_offset_reset,
        # a group joined while the broker reported the topics missing holds no partitions
        # until the metadata changes: refresh it often (Kafka's default is 5 minutes)
        consumer_metadata_max_age_ms=int(settings.kafka_metadata_max_age_s * 1000),
        # a queued item is a whole record batch; a few suffice to keep the agent busy
        stream_buffer_maxsize=8,
        producer_acks=-1,
        table_standby_replicas=settings.table_standby_replicas,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        loghandlers=[],
    )
    internal = (
        resolve_topic_name(settings),
        customers_topic_name(settings),
        tallies_topic_name(settings),
    )
    app.batched_topics = frozenset((*input_topics, *internal))
    app.stream_wait_empty_timeout = settings.revoke_wait_s
    input_topic = app.topic(
        *(input_topics or ("touchpoints.all",)),
        key_type=None,
        value_type=None,
        key_serializer="raw",
        value_serializer="raw",
        acks=True,
    )
    dedup_table = app.Table(
        DEDUP_TABLE,
        default=None,
        partitions=settings.topic_partitions,
        options=state_options(settings),
        help="Event ids accepted recently, one entry per input batch (the duplicate window).",
    )

    def internal_topic(name: str, partitions: int) -> Any:
        return app.topic(
            name,
            partitions=partitions,
            key_type=None,
            value_type=None,
            key_serializer="raw",
            value_serializer="raw",
            acks=True,
        )

    customers_partitions = settings.customers_partitions
    resolve_topic = internal_topic(resolve_topic_name(settings), 1)
    customers_topic = internal_topic(customers_topic_name(settings), customers_partitions)
    tallies_topic = internal_topic(tallies_topic_name(settings), 1)
    resolver_table = app.Table(
        RESOLVER_TABLE,
        default=None,
        partitions=1,
        value_type=bytes,
        options=state_options(settings),
        help="Identifiers (n/kind:value -> customer id), identities (c/id), the resolver's "
        "duplicate window and watermarks.",
    )
    customers_table = app.Table(
        CUSTOMERS_TABLE,
        default=None,
        partitions=customers_partitions,
        value_type=bytes,
        options=state_options(settings),
        help="Per customers partition: customers (c/id), cases (k/id/case), markers of "
        "customers merged away (g/id), the partition's progress (p/n).",
    )
    detector_table = app.Table(
        DETECTOR_TABLE,
        default=None,
        partitions=1,
        value_type=bytes,
        options=state_options(settings),
        help="The score-drop detector's hysteresis, cooldowns and each partition's progress.",
    )
    app.topic(settings.merges_topic, key_serializer="raw", value_serializer="raw")
    alerts_topic = app.topic(
        settings.alerts_topic,
        key_type=None,
        value_type=None,
        key_serializer="raw",
        value_serializer="raw",
        acks=True,
    )
    keys = dict(webhook_keys or {})
    missing = [e.name for e in settings.alerts.endpoints if e.name not in keys]
    if missing:
        raise ValueError(f"no signing key for the webhook endpoints {missing}")
    worker = Worker(
        settings=settings,
        app=app,
        input_topic=input_topic,
        dedup_table=dedup_table,
        resolve_topic=resolve_topic,
        customers_topic=customers_topic,
        tallies_topic=tallies_topic,
        resolver_table=resolver_table,
        customers_table=customers_table,
        detector_table=detector_table,
        rules=ingest_rules(settings),
        identity_rules=identity_rules(settings),
        partition_rules=partition_rules(settings),
        window=DuplicateWindow(
            window_ms=int(settings.dedup_window_s * 1000),
            max_ids_per_partition=settings.dedup_max_ids_per_partition,
        ),
        metrics=WorkerMetrics(),
        dead_letters=DeadLetterPublisher(app.producer, settings.dlq_topic),
        alert_rules=settings.alerts,
        alerts_topic=alerts_topic,
        webhook_keys=keys,
    )

    @app.service
    class ClickHouseService(Service):
        """Owns the ClickHouse client and sink for the life of the worker."""

        client: Any = None

        async def on_start(self) -> None:
            # ClickHouse may be down right now: the worker waits for it as it did at start
            self.client = await retry_until_ready(
                lambda: open_clickhouse(settings), "ClickHouse", settings.startup_timeout_s
            )
            worker.sink = ClickHouseSink(
                self.client,
                settings.clickhouse_database,
                batch_rows=settings.sink_batch_rows,
                linger_s=settings.sink_linger_s,
                max_pending_rows=settings.sink_max_pending_rows,
                retry_max_s=settings.sink_retry_max_s,
            )
            await worker.sink.start()
            worker.metrics.watch_sink(worker.sink.stats)
            worker.sink_ready.set()
            logger.info("ClickHouse sink ready: %s", settings.clickhouse_url)
            worker.clickhouse = self.client
            ledger = worker.ledger = ClickHouseLedger(worker.sink, settings.clickhouse_database)
            settled = await retry_until_ready(
                lambda: ledger.load(self.client), "the alert ledger", settings.startup_timeout_s
            )
            worker.deliverer = Deliverer(
                settings.alerts, worker.webhook_keys, worker.ledger, worker.metrics
            )
            await worker.deliverer.start()
            worker.delivery_ready.set()
            logger.info(
                "alert delivery ready: %d endpoints, %d settled deliveries in the ledger",
                len(settings.alerts.endpoints),
                settled,
            )

        async def on_stop(self) -> None:
            if worker.deliverer is not None:
                await worker.deliverer.stop()
            if worker.sink is not None:
                await worker.sink.stop()
            if self.client is not None:
                await self.client.close()

    watch = LedgerWatch(settings.clickhouse_database)

    @app.timer(interval=settings.reconcile_interval_s or 3600.0)  # type: ignore[untyped-decorator]
    @survives("checking the ledger")
    async def check_ledger() -> None:
        """Export the offsets of this worker's input partitions that were committed and
        never read (touchpoint_unaccounted_offsets; must stay 0)."""
        if not settings.reconcile_interval_s or worker.clickhouse is None:
            return
        consumer: Any = app.consumer
        mine = [tp for tp in consumer.assignment() if tp.topic in input_topic.topics]
        watch.keep((tp.topic, tp.partition) for tp in mine)
        committed = {tp: consumer._committed_offset.get(tp) for tp in mine}
        settled = [tp for tp, offset in committed.items() if offset]
        if not settled:
            return
        starts = await consumer.earliest_offsets(*settled)
        positions = {
            (tp.topic, tp.partition): (int(starts[tp]), int(committed[tp])) for tp in settled
        }
        for (topic, partition), n in (await watch.check(worker.clickhouse, positions)).items():
            worker.metrics.unaccounted.labels(topic, str(partition)).set(n)

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    @survives("logging the accounting")
    async def log_accounting() -> None:
        """Log the accounting line every 10 s."""
        logger.info("accounting: %s", worker.metrics.accounting())

    @app.timer(interval=settings.topic_discovery_interval_s)  # type: ignore[untyped-decorator]
    @survives("looking for new input topics")
    async def discover_topics() -> None:
        """Subscribe to input topics created since start (a new channel needs no restart)."""
        found = await discover_input_topics(settings)
        for name, count in found.refused.items():
            logger.error(
                "not reading %s: it has %d partitions, the worker's state has %d "
                "(TOUCHPOINT_TOPIC_PARTITIONS); recreate the topic with %d partitions",
                name,
                count,
                settings.topic_partitions,
                settings.topic_partitions,
            )
        new = set(found.usable) - set(input_topic.topics)
        if new:
            logger.info("new input topics: %s", ", ".join(sorted(new)))
            app.batched_topics = frozenset((*found.usable, *internal))
            subscribed = set(input_topic.topics)
            # the agent iterates a clone of the topic; every copy the conductor holds changes
            for channel in [input_topic, *app.topics]:
                if set(getattr(channel, "topics", ())) == subscribed:
                    channel.topics = list(found.usable)
            app.topics._flag_changes()  # type: ignore[attr-defined]  # resubscribe soon

    register_agents(worker)
    install_pages(worker)
    return worker
