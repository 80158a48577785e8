"""Every Kafka topic the worker reads or writes, declared in one place.

Input: every topic matching ``Settings.topic_pattern`` (``touchpoints.<channel>``), found
at start and re-discovered while running, so a new channel needs no code change.
Output: ``touchpoints.dlq`` (dead letters), ``touchpoints.identity_merges`` and
``touchpoints.alerts``; never consumed as input.
Internal: the changelog of the duplicate window, ``<app_id>-dedup-window-changelog``,
co-partitioned with the input topics; ``<app_id>-stitch`` (one partition: accepted
events on their way to identity stitching, and control records such as erasures) and
the changelog of the identity table, ``<app_id>-identity-changelog``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings

__all__ = [
    "DEDUP_TABLE",
    "IDENTITY_TABLE",
    "InputTopics",
    "changelog_topics",
    "discover_input_topics",
    "ensure_changelog_topics",
    "ensure_stitch_topic",
    "ensure_topics",
    "stitch_topic_name",
    "uncommitted",
]

logger = logging.getLogger(__name__)

#: Name of the table holding the duplicate window (its changelog is ``<app_id>-<name>-changelog``).
DEDUP_TABLE = "dedup-window"
#: Name of the table holding identifiers and customers (one partition).
IDENTITY_TABLE = "identity"


def stitch_topic_name(settings: Settings) -> str:
    """The internal topic between the ingest and stitch agents (one partition)."""
    return f"{settings.app_id}-stitch"


async def ensure_stitch_topic(settings: Settings) -> None:
    """Create the stitch topic with one partition, or check that it has exactly one.

    The identity graph is one state: every event must reach the same stitcher in order.
    A topic created with more partitions (for example by a broker that auto-creates
    topics on first write) is refused with instructions rather than silently split.
    """
    name = stitch_topic_name(settings)
    await ensure_topics(settings, [name], partitions=1)
    admin = _admin(settings)
    await admin.start()
    try:
        for _ in range(100):  # a topic just created may show no partitions for a moment
            (description,) = await admin.describe_topics([name])
            count = len(description["partitions"])
            if count:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    if count != 1:
        raise RuntimeError(
            f"topic {name} has {count} partitions; it must have exactly 1. Stop the workers, "
            f"delete it and its consumer offsets, and start again (it is recreated)."
        )


def changelog_topics(settings: Settings) -> dict[str, int]:
    """The state tables' changelog topics and their partition counts."""
    return {
        f"{settings.app_id}-{DEDUP_TABLE}-changelog": settings.topic_partitions,
        f"{settings.app_id}-{IDENTITY_TABLE}-changelog": 1,
    }


async def ensure_changelog_topics(settings: Settings) -> None:
    """Create the tables' changelog topics (compacted) before the worker starts.

    Faust declares them itself, but a topic it creates at start can be missing from
    the consumer's metadata when the first batch writes to its table; Faust then finds
    a changelog "with 0 partitions" and the write fails. Created beforehand, they are
    in the metadata from the first join on.
    """
    for name, partitions in changelog_topics(settings).items():
        await ensure_topics(settings, [name], partitions, {"cleanup.policy": "compact"})


@dataclass(frozen=True)
class InputTopics:
    """Input topics found on the cluster: those the worker reads, and those it must not.

    A topic whose partition count differs from ``topic_partitions`` is refused: the
    worker's state is co-partitioned with its input, so reading it would misplace state.
    """

    usable: tuple[str, ...]
    refused: dict[str, int]


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-admin",
        **settings.kafka_client_options(),
    )


async def discover_input_topics(settings: Settings) -> InputTopics:
    """List the cluster's topics that match the input pattern, with their partition counts."""
    admin = _admin(settings)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if settings.input_pattern.fullmatch(t)]
        usable: list[str] = []
        refused: dict[str, int] = {}
        if names:
            for description in await admin.describe_topics(names):
                name = description["topic"]
                count = len(description["partitions"])
                if count == settings.topic_partitions:
                    usable.append(name)
                else:
                    refused[name] = count
        return InputTopics(tuple(sorted(usable)), refused)
    finally:
        await admin.close()


async def ensure_topics(
    settings: Settings,
    names: Iterable[str],
    partitions: int | None = None,
    config: dict[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (with ``partitions``, by default the
    configured ``topic_partitions``, and topic ``config``); return those created."""
    count = partitions or settings.topic_partitions
    admin = _admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            new = [
                NewTopic(n, count, settings.topic_replication, topic_configs=config or {})
                for n in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was quicker
                await admin.create_topics(new)
            logger.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()


async def uncommitted(
    bootstrap: str, group: str, topics: Iterable[str], **client_options: Any
) -> dict[tuple[str, int], tuple[int, int]]:
    """The partitions of ``topics`` that consumer ``group`` has not committed to their end:
    ``(topic, partition) -> (committed, end)``; empty once the group has settled them.

    The worker commits an input offset only after every row it produced is stored, so
    an empty answer means ClickHouse holds everything those records gave."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
    # the group's consumer API, not the admin one: it is what every broker we run
    # against answers (the consumer never subscribes, so it never joins the group)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **client_options
    )
    await admin.start()
    await consumer.start()
    try:
        parts = [
            TopicPartition(topic["topic"], p["partition"])
            for topic in await admin.describe_topics(list(topics))
            for p in topic["partitions"]
        ]
        ends = await consumer.end_offsets(parts)
        behind = {}
        for tp, end in ends.items():
            if end == 0:
                continue  # nothing to commit (and one request fewer per partition)
            at = await consumer.committed(tp) or 0
            if at < end:
                behind[(tp.topic, tp.partition)] = (at, end)
        return behind
    finally:
        await consumer.stop()
        await admin.close()
