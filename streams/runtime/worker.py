"""What the agents share: the :class:`Worker`, built once by
:func:`streams.runtime.app.create_worker` from the settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sinks.alerts import ClickHouseLedger
from sinks.clickhouse import ClickHouseSink
from sinks.dead_letters import DeadLetterPublisher
from sinks.webhooks import Deliverer
from streams.domain.alerts import DropDetector
from streams.domain.dedup import DuplicateWindow
from streams.domain.effort import EffortRules
from streams.domain.identity import IdentityRules
from streams.domain.ingest import IngestRules
from streams.domain.journey import JourneyRules
from streams.domain.scores import Rolling, Watermarks
from streams.domain.stitching import ScoreRules
from streams.runtime.batching import BatchingApp
from streams.runtime.metrics import WorkerMetrics
from streams.runtime.state import reset_local
from streams.runtime.topics import stitch_topic_name
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
    stitch_topic: Any
    identity_table: Any
    rules: IngestRules
    identity_rules: IdentityRules
    journey_rules: JourneyRules
    window: DuplicateWindow
    stitch_window: DuplicateWindow
    metrics: WorkerMetrics
    dead_letters: DeadLetterPublisher
    score_rules: ScoreRules = field(default_factory=ScoreRules)
    effort_rules: EffortRules = field(default_factory=EffortRules)
    #: version of the effort rows written by the last stitch batch (grows every batch)
    effort_version: int | None = None
    #: event-time progress of the input partitions; loaded from the identity table by the
    #: stitch agent, None while this worker does not hold the stitch partition
    watermarks: Watermarks | None = None
    #: the stream's own rolling view of the scores (on-time answers only)
    rolling: Rolling = field(default_factory=lambda: Rolling(60_000, ROLLING_HORIZON_MS))
    #: the last identity changelog send of the stitch agent (sends go out in order)
    state_chain: asyncio.Task[None] | None = None
    #: stitch batches written locally whose changelog records are not sent yet
    unsent_state: int = 0
    #: grows whenever the stitch partition is taken away (or the worker stops): a batch
    #: begun under an older epoch writes nothing and acks nothing (see fence_stitch)
    stitch_epoch: int = 0
    #: the changelog send in progress, if any (a fence waits for it to finish)
    sending: asyncio.Future[None] | None = None
    sink_ready: asyncio.Event = field(default_factory=asyncio.Event)
    sink: ClickHouseSink | None = None
    #: the alerts topic, read by the delivery agent
    alerts_topic: Any = None
    #: HMAC keys of the webhook endpoints, by endpoint name
    webhook_keys: Mapping[str, bytes] = field(default_factory=dict)
    #: the score-drop detector (stitch agent), loaded from the identity table on first use
    drop_detector: DropDetector | None = None
    #: series with answers not yet looked at: (kind, value, metric) -> newest bucket start
    alert_series: dict[tuple[str, str, str], int] = field(default_factory=dict)
    last_drop_check: float = 0.0
    #: event time of the last look at the scores (None: none since the partition came)
    last_look: int | None = None
    last_full_drop_check: float = 0.0
    #: customer alerts sent recently (insertion order; the oldest are forgotten)
    alerts_sent: dict[str, None] = field(default_factory=dict)
    #: webhook delivery and its ledger, ready once ClickHouse is
    deliverer: Deliverer | None = None
    ledger: ClickHouseLedger | None = None
    clickhouse: Any = None
    delivery_ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: alerts in delivery, by partition of the alerts topic
    alerts_in_flight: dict[int, dict[str, asyncio.Future[Any]]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def stitch_topic_name(self) -> str:
        return stitch_topic_name(self.settings)

    async def fence_stitch(self, why: str) -> None:
        """No stitch batch begun before now writes state or acks from here on.

        A revoked worker's batches may still be running (a rebalance waits for them only
        ``revoke_wait_s``); whoever owns the partition next replays them from the
        changelog, and a late write of ours would land in that changelog after theirs.
        A send already on its way is let finish first. Batches written locally and not
        sent leave the local store ahead of the changelog: it is reset, so the next
        assignment restores it from the changelog.
        """
        self.stitch_epoch += 1
        if self.sending is not None:
            await asyncio.wait([self.sending], timeout=self.settings.revoke_wait_s)
        self.state_chain = None
        if self.unsent_state:
            logger.warning(
                "%s with %d stitch batches not in the changelog; they are stitched again by "
                "the next owner, and the local identity state is restored from the changelog",
                why,
                self.unsent_state,
            )
            if reset_local(self.identity_table, 0):
                self.unsent_state = 0

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
