"""What the agents share: the :class:`Worker`, built once by
:func:`streams.runtime.app.create_worker` from the settings.

The worker is wiring: topics, tables, rules, sinks, and the *owners* of the partitions
with state this worker holds right now (:class:`~streams.runtime.owners.Owner`: the
resolver, each customers partition, the score-drop detector). An owner is built when
its partition is assigned and fenced and dropped when it is revoked
(:meth:`Worker.on_assigned`, :meth:`Worker.on_revoked`); no state is kept here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.alert_rules import AlertRules
from sinks.alerts import ClickHouseLedger
from sinks.clickhouse import ClickHouseSink
from sinks.dead_letters import DeadLetterPublisher
from sinks.webhooks import Deliverer
from streams.domain.customers import PartitionRules
from streams.domain.dedup import DuplicateWindow
from streams.domain.identity import IdentityRules
from streams.domain.ingest import IngestRules
from streams.runtime.batching import BatchingApp
from streams.runtime.detector import Detector
from streams.runtime.metrics import WorkerMetrics
from streams.runtime.owners import Owner
from streams.runtime.partitions import CustomerPartition
from streams.runtime.resolver import ResolverOwner
from streams.settings import Settings

__all__ = ["ROLLING_HORIZON_MS", "Worker"]

logger = logging.getLogger(__name__)


#: Event time the stream's rolling score view keeps (28 days, the longest standard
#: window, plus the 7-day baseline before a 24 h window and a day of slack).
ROLLING_HORIZON_MS = 36 * 86_400_000


@dataclass
class Worker:
    """Everything the agents use, built once from the settings."""

    settings: Settings
    app: BatchingApp
    input_topic: Any
    dedup_table: Any
    #: ingest -> resolver (1 partition), resolver -> customers (P), customers -> detector (1)
    resolve_topic: Any
    customers_topic: Any
    tallies_topic: Any
    resolver_table: Any
    customers_table: Any
    detector_table: Any
    rules: IngestRules
    identity_rules: IdentityRules
    partition_rules: PartitionRules
    #: ingest's duplicate window (per input partition)
    window: DuplicateWindow
    metrics: WorkerMetrics
    dead_letters: DeadLetterPublisher
    alert_rules: AlertRules
    #: the owners of the stateful partitions this worker holds, by (topic, partition)
    owners: dict[tuple[str, int], Owner] = field(default_factory=dict)
    sink_ready: asyncio.Event = field(default_factory=asyncio.Event)
    sink: ClickHouseSink | None = None
    #: the alerts topic, read by the delivery agent
    alerts_topic: Any = None
    #: HMAC keys of the webhook endpoints, by endpoint name
    webhook_keys: Mapping[str, bytes] = field(default_factory=dict)
    #: webhook delivery and its ledger, ready once ClickHouse is
    deliverer: Deliverer | None = None
    ledger: ClickHouseLedger | None = None
    clickhouse: Any = None
    delivery_ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: alerts in delivery, by partition of the alerts topic
    alerts_in_flight: dict[int, dict[str, asyncio.Future[Any]]] = field(default_factory=dict)
    #: batches left unsent by owners already dropped (a stop with these rebuilds the state)
    unsent_on_revoke: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # -- owners ----------------------------------------------------------------------

    @property
    def resolve_topic_name(self) -> str:
        return str(self.resolve_topic.get_topic_name())

    @property
    def customers_topic_name(self) -> str:
        return str(self.customers_topic.get_topic_name())

    @property
    def tallies_topic_name(self) -> str:
        return str(self.tallies_topic.get_topic_name())

    def resolver(self) -> ResolverOwner | None:
        owner = self.owners.get((self.resolve_topic_name, 0))
        return owner if isinstance(owner, ResolverOwner) else None

    def customer_partition(self, partition: int) -> CustomerPartition | None:
        owner = self.owners.get((self.customers_topic_name, partition))
        return owner if isinstance(owner, CustomerPartition) else None

    def customer_partitions(self) -> list[CustomerPartition]:
        return [o for o in self.owners.values() if isinstance(o, CustomerPartition)]

    def detector(self) -> Detector | None:
        owner = self.owners.get((self.tallies_topic_name, 0))
        return owner if isinstance(owner, Detector) else None

    @property
    def unsent_state(self) -> int:
        """Batches written to a local store whose changelog records are not sent."""
        return self.unsent_on_revoke + sum(o.unsent for o in self.owners.values())

    def on_assigned(self, assigned: Iterable[tuple[str, int]]) -> None:
        """Build an owner for every stateful partition assigned that has none."""
        settings = self.settings
        common: dict[str, Any] = {
            "spawn": self.spawn,
            "crash": self.app.crash,
            "revoke_wait_s": settings.revoke_wait_s,
        }
        for topic, partition in assigned:
            key = (topic, partition)
            if key in self.owners:
                continue
            owner: Owner
            if topic == self.resolve_topic_name:
                owner = ResolverOwner(
                    self.resolver_table,
                    partition,
                    rules=self.identity_rules,
                    topic=topic,
                    partitions=self.partition_rules.partitions,
                    window=DuplicateWindow(
                        window_ms=int(settings.dedup_window_s * 1000),
                        max_ids_per_partition=settings.stitch_dedup_max_ids,
                    ),
                    grace_s=settings.grace_s,
                    idle_s=settings.watermark_idle_s,
                    **common,
                )
            elif topic == self.customers_topic_name:
                owner = CustomerPartition(
                    self.customers_table,
                    partition,
                    rules=self.partition_rules,
                    alert_rules=self.alert_rules,
                    idle_s=settings.journey_idle_s,
                    **common,
                )
            elif topic == self.tallies_topic_name:
                owner = Detector(
                    self.detector_table,
                    partition,
                    rule=self.alert_rules.score_drop,
                    bucket_ms=self.partition_rules.scores.bucket_ms,
                    horizon_ms=ROLLING_HORIZON_MS,
                    partitions=self.partition_rules.partitions,
                    **common,
                )
            else:
                continue
            self.owners[key] = owner
            logger.info("took %s[%d]", topic, partition)

    async def on_revoked(self, revoked: Iterable[tuple[str, int]], why: str) -> None:
        """Fence and drop the owners of the partitions revoked: nothing begun before
        reaches a changelog or is acked from here on."""
        leaving = [self.owners.pop(key) for key in list(revoked) if key in self.owners]
        for owner in leaving:
            await owner.fence(why)
            self.unsent_on_revoke += owner.unsent

    async def fence_all(self, why: str) -> None:
        await self.on_revoked(list(self.owners), why)

    # -- tasks and services -----------------------------------------------------------

    def spawn(self, coroutine: Any) -> asyncio.Task[None]:
        """Run a coroutine beside the agents, holding a reference until it ends."""
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def wait_for_delivery(self) -> tuple[Deliverer, ClickHouseLedger]:
        await self.delivery_ready.wait()
        assert self.deliverer is not None and self.ledger is not None
        return self.deliverer, self.ledger

    async def wait_for_sink(self) -> ClickHouseSink:
        await self.sink_ready.wait()
        assert self.sink is not None
        return self.sink

    def refresh_gauges(self) -> None:
        self.metrics.dedup_held.set(
            sum(self.window.held(p) for p in range(self.settings.topic_partitions))
        )
