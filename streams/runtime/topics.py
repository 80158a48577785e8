"""Every Kafka topic the worker reads or writes, declared in one place.

Input: every topic matching ``Settings.topic_pattern`` (``touchpoints.<channel>``), found
at start and re-discovered while running, so a new channel needs no code change.
Output: ``touchpoints.dlq`` (dead letters), ``touchpoints.identity_merges`` and
``touchpoints.alerts``; never consumed as input.
Internal: the changelog of the duplicate window, ``<app_id>-dedup-window-changelog``,
co-partitioned with the input topics; ``<app_id>-resolve`` (one partition: accepted events
on their way to the resolver, and control records such as erasures);
``<app_id>-customers`` (``customer_partitions``: each event with its customer id, keyed by
customer); ``<app_id>-tallies`` (one partition: every customers partition's score tallies
for the score-drop detector); and the changelogs of the resolver's, the customers' and
the detector's tables.
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
    "CUSTOMERS_TABLE",
    "DEDUP_TABLE",
    "DETECTOR_TABLE",
    "LEGACY_IDENTITY_TABLE",
    "RESOLVER_TABLE",
    "InputTopics",
    "changelog_topics",
    "customers_topic_name",
    "discover_input_topics",
    "ensure_changelog_topics",
    "ensure_internal_topics",
    "ensure_topics",
    "internal_topics",
    "resolve_topic_name",
    "tallies_topic_name",
    "uncommitted",
]

logger = logging.getLogger(__name__)

#: Name of the table holding the duplicate window (its changelog is ``<app_id>-<name>-changelog``).
DEDUP_TABLE = "dedup-window"
#: The resolver's table (one partition): identifiers, identities, its duplicate window.
RESOLVER_TABLE = "resolver"
#: The customers' table, co-partitioned with the customers topic.
CUSTOMERS_TABLE = "customers"
#: The score-drop detector's table (one partition).
DETECTOR_TABLE = "detector"
#: The single-partition layout's table (identity, journeys, cases), read by
#: ``touchpoint migrate-state``.
LEGACY_IDENTITY_TABLE = "identity"


def resolve_topic_name(settings: Settings) -> str:
    """The internal topic between ingest and the resolver (one partition)."""
    return f"{settings.app_id}-resolve"


def customers_topic_name(settings: Settings) -> str:
    """The internal topic between the resolver and the customer partitions."""
    return f"{settings.app_id}-customers"


def tallies_topic_name(settings: Settings) -> str:
    """The internal topic between the customer partitions and the detector (one partition)."""
    return f"{settings.app_id}-tallies"


def internal_topics(settings: Settings) -> dict[str, int]:
    """The internal topics and the partitions each must have."""
    return {
        resolve_topic_name(settings): 1,
        customers_topic_name(settings): settings.customers_partitions,
        tallies_topic_name(settings): 1,
    }


async def ensure_internal_topics(settings: Settings) -> None:
    """Create the internal topics, or check their partition counts.

    The resolver is one state that must see every event in order (one partition); the
    customers topic's partitions are where customers live. A topic created with other
    counts (for example by a broker that auto-creates topics on first write, or by a
    deployment with another ``customer_partitions``) is refused with instructions rather
    than silently misplacing state.
    """
    wanted = internal_topics(settings)
    for name, partitions in wanted.items():
        await ensure_topics(settings, [name], partitions=partitions)
    admin = _admin(settings)
    await admin.start()
    try:
        for name, partitions in wanted.items():
            count = 0
            for _ in range(100):  # a topic just created may show no partitions for a moment
                (description,) = await admin.describe_topics([name])
                count = len(description["partitions"])
                if count:
                    break
                await asyncio.sleep(0.1)
            if count != partitions:
                raise RuntimeError(
                    f"topic {name} has {count} partitions; it must have exactly {partitions}. "
                    f"Stop the workers, delete it and its consumer offsets, and start again "
                    f"(it is recreated)."
                )
    finally:
        await admin.close()


def changelog_topics(settings: Settings) -> dict[str, int]:
    """The state tables' changelog topics and their partition counts."""
    return {
        f"{settings.app_id}-{DEDUP_TABLE}-changelog": settings.topic_partitions,
        f"{settings.app_id}-{RESOLVER_TABLE}-changelog": 1,
        f"{settings.app_id}-{CUSTOMERS_TABLE}-changelog": settings.customers_partitions,
        f"{settings.app_id}-{DETECTOR_TABLE}-changelog": 1,
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
