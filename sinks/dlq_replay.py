"""Replaying dead letters to their source topics, each at most once.

Once the cause of a dead letter is fixed (a setting, a producer, the processor), its
message can go through the worker again. ``touchpoint dlq replay`` reads the dead
letters from ClickHouse ``dead_letters`` (which holds each message's original bytes,
key and headers, and where it came from), filtered by reason, source topic and the time
it was dead-lettered, and re-publishes each selected one to its source topic: the
original value, key and headers, without the ``touchpoint.dlq.*`` headers, to the
partition it came from when that partition still exists.

**At most once.** A dead letter is re-published only by the run that *claimed* it: each
claim is one row in ``dlq_replay_claims_store``, inserted on its own with the dead
letter's coordinates as its ``insert_deduplication_token``, so ClickHouse keeps the
first claim of a dead letter and drops every later one, whether it comes from a later
run or from a concurrent one that had not seen it. A run then reads the claims back and
publishes only those that are its own. The outcome (``published`` with the new record's
partition and offset, or ``failed``) is recorded in ``dlq_replay_outcomes_store``; a
failed or unconfirmed claim is never sent again by itself, because the broker may have
written the record before the failure was seen. The ``dlq_replays`` view shows them all.

A dead letter that fails again is dead-lettered again, under its new offset: it is a new
dead letter, which a later replay may select once more (after the cause is fixed, that
is the one to replay). The plan counts such repeats (the same value and key as a dead
letter replayed before), so a replay of a cause that is not fixed yet shows as such.

Lifecycle: none; the ClickHouse client and the Kafka producer are the caller's.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from schemas.clickhouse import quote_identifier
from schemas.dead_letter import DLQ_HEADER_PREFIX

__all__ = [
    "CLAIM_COLUMNS",
    "OUTCOME_COLUMNS",
    "DeadLetterRecord",
    "Publisher",
    "ReplayFilter",
    "ReplayPlan",
    "ReplayResult",
    "execute_replay",
    "plan_replay",
    "summary_counts",
]

#: Insert column order of ``dlq_replay_claims_store``.
CLAIM_COLUMNS: tuple[str, ...] = (
    "source_topic",
    "source_partition",
    "source_offset",
    "replay_id",
    "reason",
    "claimed_at",
)
#: Insert column order of ``dlq_replay_outcomes_store``.
OUTCOME_COLUMNS: tuple[str, ...] = (
    "source_topic",
    "source_partition",
    "source_offset",
    "replay_id",
    "status",
    "target_partition",
    "target_offset",
    "error",
    "at",
)
#: Claims inserted at once; each is its own insert (its own deduplication token).
_CLAIM_CONCURRENCY = 8
#: String columns come back as the bytes stored: values and keys need not be UTF-8.
_AS_BYTES = {"*String*": "bytes"}


class Publisher(Protocol):
    """The producer calls used: aiokafka's ``AIOKafkaProducer`` has these shapes."""

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> Any: ...


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters to replay; an empty tuple means any. Times bound when a message
    was dead-lettered (``received_at``), ``since`` inclusive, ``until`` exclusive."""

    reasons: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None


@dataclass(frozen=True)
class DeadLetterRecord:
    """One dead letter as stored: where it came from, why, and its original message."""

    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    received_at: datetime
    event_id: str | None
    key: bytes | None
    raw: bytes
    headers: tuple[tuple[str, bytes], ...]

    @property
    def coordinates(self) -> tuple[str, int, int]:
        return (self.source_topic, self.source_partition, self.source_offset)

    @property
    def label(self) -> str:
        """``topic[partition]@offset``: how the record is named in reports."""
        return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"

    @property
    def replay_headers(self) -> list[tuple[str, bytes]]:
        """The original headers; the processor's ``touchpoint.dlq.*`` ones left out."""
        return [(k, v) for k, v in self.headers if not k.startswith(DLQ_HEADER_PREFIX)]


@dataclass(frozen=True)
class ReplayPlan:
    """The dead letters a replay would publish, oldest offset first per partition, and
    how many the filter matched that an earlier run already claimed (left out)."""

    selected: tuple[DeadLetterRecord, ...]
    already_replayed: int
    #: selected dead letters with the value and key of one replayed before: it failed again
    failed_again: int = 0

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(letter.reason for letter in self.selected).most_common())

    def by_topic(self) -> dict[str, int]:
        return dict(Counter(letter.source_topic for letter in self.selected).most_common())


@dataclass
class ReplayResult:
    """What an executed replay did with each dead letter of its plan."""

    replay_id: str
    #: re-published: the dead letter and the new record's (partition, offset)
    published: list[tuple[DeadLetterRecord, int, int]] = field(default_factory=list)
    #: claimed by another run first (a concurrent one): left to it
    claimed_elsewhere: list[DeadLetterRecord] = field(default_factory=list)
    #: the broker refused or did not confirm it: the dead letter and the error
    failed: list[tuple[DeadLetterRecord, str]] = field(default_factory=list)
    #: its source topic no longer exists: not claimed, not published
    topic_missing: list[DeadLetterRecord] = field(default_factory=list)


def _conditions(wanted: ReplayFilter) -> tuple[str, dict[str, Any]]:
    clauses = ["1"]
    parameters: dict[str, Any] = {}
    if wanted.reasons:
        clauses.append("reason IN {reasons:Array(String)}")
        parameters["reasons"] = list(wanted.reasons)
    if wanted.topics:
        clauses.append("source_topic IN {topics:Array(String)}")
        parameters["topics"] = list(wanted.topics)
    if wanted.since is not None:
        clauses.append("received_at >= {since:DateTime64(3, 'UTC')}")
        parameters["since"] = wanted.since
    if wanted.until is not None:
        clauses.append("received_at < {until:DateTime64(3, 'UTC')}")
        parameters["until"] = wanted.until
    return " AND ".join(clauses), parameters


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", errors="replace")


async def plan_replay(client: Any, database: str, wanted: ReplayFilter) -> ReplayPlan:
    """The dead letters ``wanted`` selects that no run has claimed yet. Reads only."""
    db = quote_identifier(database)
    where, parameters = _conditions(wanted)
    claimed = (
        f"(source_topic, source_partition, source_offset) IN "
        f"(SELECT source_topic, source_partition, source_offset "
        f"FROM {db}.dlq_replay_claims_store)"
    )
    limit = f"LIMIT {int(wanted.limit)}" if wanted.limit is not None else ""
    content = "cityHash64(raw, ifNull(key, ''))"
    repeat = f"{content} IN (SELECT {content} FROM {db}.dead_letters WHERE {claimed})"
    result = await client.query(
        f"SELECT source_topic, source_partition, source_offset, reason, received_at, "
        f"event_id, key, raw, headers, {repeat} FROM {db}.dead_letters "
        f"WHERE {where} AND NOT {claimed} "
        f"ORDER BY source_topic, source_partition, source_offset {limit}",
        parameters=parameters,
        query_formats=_AS_BYTES,
    )
    selected = tuple(
        DeadLetterRecord(
            source_topic=str(_text(topic)),
            source_partition=int(partition),
            source_offset=int(offset),
            reason=str(_text(reason)),
            received_at=received_at,
            event_id=_text(event_id),
            key=key,
            raw=raw,
            headers=tuple((str(_text(h["name"])), bytes(h["value"])) for h in headers),
        )
        for topic, partition, offset, reason, received_at, event_id, key, raw, headers, _ in (
            result.result_rows
        )
    )
    failed_again = sum(1 for row in result.result_rows if row[-1])
    done = await client.query(
        f"SELECT count() FROM {db}.dead_letters WHERE {where} AND {claimed}",
        parameters=parameters,
    )
    return ReplayPlan(selected, int(done.result_rows[0][0]), failed_again)


async def _claim(
    client: Any, db: str, letter: DeadLetterRecord, replay_id: str, now: datetime
) -> None:
    topic, partition, offset = letter.coordinates
    await client.insert(
        f"{db}.dlq_replay_claims_store",
        [[topic, partition, offset, replay_id, letter.reason, now]],
        column_names=list(CLAIM_COLUMNS),
        settings={
            # the dead letter's identity: ClickHouse keeps the first claim with it
            "insert_deduplication_token": f"dlq-replay:{topic}:{partition}:{offset}",
            "insert_deduplicate": 1,
            "async_insert": 0,
        },
    )


async def _won(client: Any, db: str, replay_id: str) -> set[tuple[str, int, int]]:
    """The dead letters whose stored claim is this run's. Should the deduplication window
    ever have let two claims of one dead letter in, the earliest (then the smaller id)
    stands: the same answer for every run that reads them. The run's own claims are
    found by its id, so the query carries no list of dead letters (however many)."""
    result = await client.query(
        f"SELECT source_topic, source_partition, source_offset "
        f"FROM {db}.dlq_replay_claims_store "
        f"WHERE (source_topic, source_partition, source_offset) IN "
        f"(SELECT source_topic, source_partition, source_offset "
        f"FROM {db}.dlq_replay_claims_store WHERE replay_id = {{run:String}}) "
        f"GROUP BY source_topic, source_partition, source_offset "
        f"HAVING argMin(replay_id, (claimed_at, replay_id)) = {{run:String}}",
        parameters={"run": replay_id},
    )
    return {(str(t), int(p), int(o)) for t, p, o in result.result_rows}


async def execute_replay(
    client: Any,
    database: str,
    producer: Publisher,
    plan: ReplayPlan,
    *,
    replay_id: str,
    partitions: dict[str, int],
    now: datetime,
) -> ReplayResult:
    """Claim every dead letter of ``plan``, publish those whose claim stands as this
    run's, and record each outcome.

    ``partitions`` is each existing topic's partition count: a dead letter whose source
    topic is missing is neither claimed nor published; one whose source partition no
    longer exists is published by its key (the producer's partitioner). ``replay_id``
    must be unique per run. Re-running with the same plan publishes nothing again.
    """
    db = quote_identifier(database)
    result = ReplayResult(replay_id)
    candidates = [letter for letter in plan.selected if letter.source_topic in partitions]
    result.topic_missing = [x for x in plan.selected if x.source_topic not in partitions]

    gate = asyncio.Semaphore(_CLAIM_CONCURRENCY)

    async def claim(letter: DeadLetterRecord) -> None:
        async with gate:
            await _claim(client, db, letter, replay_id, now)

    await asyncio.gather(*(claim(letter) for letter in candidates))
    won = await _won(client, db, replay_id)
    mine = [letter for letter in candidates if letter.coordinates in won]
    result.claimed_elsewhere = [x for x in candidates if x.coordinates not in won]

    outcomes: list[list[Any]] = []
    for letter in mine:
        topic, partition, offset = letter.coordinates
        target = partition if partition < partitions[topic] else None
        try:
            sent = await producer.send_and_wait(
                topic, letter.raw, key=letter.key, partition=target, headers=letter.replay_headers
            )
        except Exception as exc:  # recorded per letter; the run goes on with the others
            error = f"{type(exc).__name__}: {exc}"[:1000]
            result.failed.append((letter, error))
            outcomes.append([topic, partition, offset, replay_id, "failed", -1, -1, error, now])
            continue
        result.published.append((letter, int(sent.partition), int(sent.offset)))
        outcomes.append(
            [topic, partition, offset, replay_id, "published", sent.partition, sent.offset, "", now]
        )
    if outcomes:
        await client.insert(
            f"{db}.dlq_replay_outcomes_store",
            outcomes,
            column_names=list(OUTCOME_COLUMNS),
            settings={"async_insert": 0},
        )
    return result


def summary_counts(letters: Iterable[DeadLetterRecord]) -> dict[str, dict[str, int]]:
    """Counts by reason and by source topic, most frequent first."""
    letters = list(letters)
    return {
        "by_reason": dict(Counter(x.reason for x in letters).most_common()),
        "by_topic": dict(Counter(x.source_topic for x in letters).most_common()),
    }
