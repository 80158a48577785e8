"""Every Kafka topic the worker reads or writes, declared in one place.

Input: every topic matching ``Settings.topic_pattern`` (``touchpoints.<channel>``), found
at start and re-discovered while running, so a new channel needs no code change.
Output: ``touchpoints.dlq`` (dead letters) and ``touchpoints.alerts``; never consumed.
Internal: the changelog of the duplicate window, ``<app_id>-dedup-window-changelog``,
co-partitioned with the input topics.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings

__all__ = [
    "DEDUP_TABLE",
    "InputTopics",
    "discover_input_topics",
    "ensure_topics",
]

logger = logging.getLogger(__name__)

#: Name of the table holding the duplicate window (its changelog is ``<app_id>-<name>-changelog``).
DEDUP_TABLE = "dedup-window"


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


async def ensure_topics(settings: Settings, names: Iterable[str]) -> list[str]:
    """Create the topics that do not exist yet, with the configured partitions; return those."""
    admin = _admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            new = [
                NewTopic(n, settings.topic_partitions, settings.topic_replication) for n in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker was quicker
                await admin.create_topics(new)
            logger.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        await admin.close()
