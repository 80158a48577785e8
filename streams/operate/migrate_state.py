"""``touchpoint migrate-state``: carry the single-partition layout's state forward.

Up to this version one table, ``identity`` (changelog ``<app_id>-identity-changelog``,
one partition), held everything the stitch agent knew: identifiers (``n/``), customers
with their journeys (``c/``), the contacts of every case (``k/<case_id>``), the stitch
duplicate window (``d/``), the input partitions' watermarks (``w/event_time``), the
version of the last effort rows (``w/effort_version``) and the score-drop detector's
state (``w/alert_state``); events reached it through ``<app_id>-stitch``.

The scaled-out layout splits that state by who needs it:

* the resolver's table (``<app_id>-resolver-changelog``): the identifiers, each
  customer's identity (identifiers, absorbed ids, first seen), the duplicate window
  and the watermarks;
* the customers table (``<app_id>-customers-changelog``, one partition per customers
  partition): each customer with its journey on the partition that holds it, the
  contacts of its cases (a case now belongs to its customer: contacts of an old case
  that several customers shared go to each one's own case), and each partition's row
  version, above the last effort rows written;
* the detector's table (``<app_id>-detector-changelog``): the detector's hysteresis
  and cooldowns.

The conversion (:func:`convert`) is pure. :func:`migrate_state` reads the old changelog
to its end, writes the new changelogs, and copies the records of ``<app_id>-stitch``
the old group had not committed (events ingest forwarded that were never stitched) to
``<app_id>-resolve``, so nothing forwarded is lost. It refuses while workers of the
group are running, and when the new state already exists (``force`` overwrites).
The rows in ClickHouse stay as they are: new rows carry higher versions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.customer import customer_from_json, customer_to_json
from streams.domain.identity import NEVER, Identity
from streams.domain.resolve import partition_of
from streams.settings import Settings

__all__ = [
    "MIGRATED_KEY",
    "Converted",
    "MigrationError",
    "MigrationReport",
    "convert",
    "legacy_state_pending",
    "migrate_state",
]

logger = logging.getLogger(__name__)

#: Resolver-table key written by the migration (the new state exists, even if empty).
MIGRATED_KEY = "w/migrated"


class MigrationError(Exception):
    """The migration cannot go on; the message says what to do."""


@dataclass
class Converted:
    """The new layout's table contents (key -> value; None: nothing)."""

    resolver: dict[str, bytes] = field(default_factory=dict)
    customers: dict[int, dict[str, bytes]] = field(default_factory=dict)
    detector: dict[str, bytes] = field(default_factory=dict)
    customers_moved: int = 0
    cases_moved: int = 0
    contacts_dropped: int = 0


def convert(entries: Mapping[str, bytes], partitions: int) -> Converted:
    """Split the single-partition ``identity`` table (latest value of each key) into the
    resolver's, the customers' (by partition) and the detector's tables."""
    out = Converted(customers={p: {} for p in range(partitions)})
    customers = {
        key[2:]: customer_from_json(value) for key, value in entries.items() if key.startswith("c/")
    }
    survivor = {absorbed: cid for cid, c in customers.items() for absorbed in c.absorbed}
    # cases: the contacts of each (customer now, case), in the order the case held them
    cases: dict[tuple[str, str], list[Any]] = {}
    latest: dict[tuple[str, str], int] = {}
    for key, value in entries.items():
        if not key.startswith("k/"):
            continue
        case_id = key[2:]
        for contact in orjson.loads(value):
            owner = contact[3]
            owner = survivor.get(owner, owner)
            if owner not in customers:
                out.contacts_dropped += 1  # its customer was erased
                continue
            cases.setdefault((owner, case_id), []).append(contact)
            latest[(owner, case_id)] = max(latest.get((owner, case_id), 0), contact[1])
    for (owner, case_id), contacts in sorted(cases.items(), key=lambda kv: latest[kv[0]]):
        customers[owner].cases.append(case_id)  # oldest first
        out.customers[partition_of(owner, partitions)][f"k/{owner}/{case_id}"] = orjson.dumps(
            contacts
        )
        out.cases_moved += 1
    for cid, customer in customers.items():
        first_seen = customer.journey.first_seen if customer.journey.touchpoints else NEVER
        identity = Identity(cid, customer.identifiers, customer.absorbed, first_seen)
        out.resolver[f"c/{cid}"] = identity.to_json()
        customer.seq = -1  # sequence numbers start again with the resolve topic
        out.customers[partition_of(cid, partitions)][f"c/{cid}"] = customer_to_json(customer)
        out.customers_moved += 1
    for key, value in entries.items():
        if key.startswith(("n/", "d/")) or key == "w/event_time":
            out.resolver[key] = value
    out.resolver[MIGRATED_KEY] = b"1"
    version = entries.get("w/effort_version")
    last_version = int(version) if version else 0
    for p in range(partitions):
        out.customers[p][f"p/{p}"] = orjson.dumps([-1, last_version])
    alert_state = entries.get("w/alert_state")
    if alert_state:
        out.detector["w/lookout"] = orjson.dumps(
            {"detector": orjson.loads(alert_state), "progress": {}}
        )
    return out


@dataclass
class MigrationReport:
    """What a migration did (or, with ``dry_run``, would do)."""

    old_keys: int = 0
    customers: int = 0
    identifiers: int = 0
    cases: int = 0
    contacts_dropped: int = 0
    records_written: dict[str, int] = field(default_factory=dict)
    forwarded_copied: int = 0
    dry_run: bool = False
    nothing_to_do: bool = False

    def lines(self) -> list[str]:
        if self.nothing_to_do:
            return ["no single-partition state found: nothing to migrate"]
        verb = "would write" if self.dry_run else "wrote"
        lines = [
            f"read {self.old_keys} keys of the single-partition state: {self.customers} "
            f"customers, {self.identifiers} identifiers, {self.cases} cases "
            f"({self.contacts_dropped} contacts of erased customers dropped)",
        ]
        lines += [f"{verb} {n} records to {topic}" for topic, n in self.records_written.items()]
        lines.append(
            f"{'would copy' if self.dry_run else 'copied'} {self.forwarded_copied} "
            "forwarded records not yet stitched to the resolve topic"
        )
        return lines


async def migrate_state(
    settings: Settings,
    *,
    dry_run: bool = False,
    force: bool = False,
    progress: Callable[[str], None] = logger.info,
) -> MigrationReport:
    """Migrate the deployment ``settings`` names (see the module docstring)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.runtime.app import create_worker
    from streams.runtime.topics import (
        LEGACY_IDENTITY_TABLE,
        ensure_changelog_topics,
        ensure_internal_topics,
        resolve_topic_name,
    )

    app_id = settings.app_id
    old_changelog = f"{app_id}-{LEGACY_IDENTITY_TABLE}-changelog"
    old_stitch = f"{app_id}-stitch"
    options = settings.kafka_client_options()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **options)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
        if old_changelog not in topics:
            return MigrationReport(nothing_to_do=True, dry_run=dry_run)
        known = {group[0] for group in await admin.list_consumer_groups()}
        members = _members(await admin.describe_consumer_groups([app_id])) if app_id in known else 0
        if members:
            raise MigrationError(
                f"{members} workers of group {app_id} are running: stop every worker first "
                "(the state must not change while it is copied)"
            )
    finally:
        await admin.close()

    # the tables' own encoders: the new layout's tables, as a worker declares them
    keys = {endpoint.name: b"-" for endpoint in settings.alerts.endpoints}  # never used
    worker = create_worker(settings.model_copy(update={"store": "memory://"}), (), keys)
    tables = {
        "resolver": worker.resolver_table,
        "customers": worker.customers_table,
        "detector": worker.detector_table,
    }
    serializers = worker.app.serializers

    def decode_key(raw: bytes) -> Any:
        table = worker.resolver_table
        return serializers.loads_key(table.key_type, raw, serializer=table.key_serializer)

    def decode_value(raw: bytes) -> Any:
        table = worker.resolver_table
        return serializers.loads_value(table.value_type, raw, serializer=table.value_serializer)

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, **options
    )
    await consumer.start()
    try:
        partition = TopicPartition(old_changelog, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        progress(f"reading {old_changelog} ({end} records)")
        entries: dict[str, bytes] = {}
        while await consumer.position(partition) < end:
            for record in (await consumer.getmany(partition, timeout_ms=1000)).get(partition, []):
                if record.key is None:
                    continue
                key = decode_key(record.key)
                if record.value is None:
                    entries.pop(key, None)
                else:
                    entries[key] = bytes(decode_value(record.value))
        tail = await _unstitched(settings, consumer, old_stitch)
    finally:
        await consumer.stop()

    converted = convert(entries, settings.customers_partitions)
    report = MigrationReport(
        old_keys=len(entries),
        customers=converted.customers_moved,
        identifiers=sum(1 for k in entries if k.startswith("n/")),
        cases=converted.cases_moved,
        contacts_dropped=converted.contacts_dropped,
        forwarded_copied=len(tail),
        dry_run=dry_run,
    )
    writes: dict[str, dict[int, dict[str, bytes]]] = {
        "resolver": {0: converted.resolver},
        "customers": converted.customers,
        "detector": {0: converted.detector},
    }
    for name, by_partition in writes.items():
        topic = tables[name].changelog_topic.get_topic_name()
        report.records_written[topic] = sum(len(v) for v in by_partition.values())
    if dry_run:
        return report

    await ensure_internal_topics(settings)
    await ensure_changelog_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        max_request_size=4 * 1024 * 1024,
        **options,
    )
    await producer.start()
    try:
        await _refuse_existing(settings, tables, force)
        for name, by_partition in writes.items():
            table = tables[name]
            topic = table.changelog_topic.get_topic_name()
            for p, items in by_partition.items():
                progress(f"writing {len(items)} records to {topic}[{p}]")
                for key, value in items.items():
                    await producer.send(
                        topic,
                        key=serializers.dumps_key(
                            table.key_type, key, serializer=table.key_serializer
                        ),
                        value=serializers.dumps_value(
                            table.value_type, value, serializer=table.value_serializer
                        ),
                        partition=p,
                    )
            await producer.flush()
        resolve = resolve_topic_name(settings)
        for value in tail:
            await producer.send(resolve, value=value, partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    return report


def _members(groups: Any) -> int:
    """Members of the described group (0 when it is empty or unknown)."""
    count = 0
    for response in groups:
        for group in getattr(response, "groups", ()):
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            count += len(group[5])
    return count


async def _unstitched(settings: Settings, consumer: Any, topic: str) -> list[bytes]:
    """The records of the old stitch topic beyond the old group's committed offset."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    partition = TopicPartition(topic, 0)
    if topic not in await consumer.topics():
        return []
    group = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
        **settings.kafka_client_options(),
    )
    await group.start()
    try:
        committed = await group.committed(partition) or 0
    finally:
        await group.stop()
    end = (await consumer.end_offsets([partition]))[partition]
    if committed >= end:
        return []
    consumer.assign([partition])
    consumer.seek(partition, committed)
    values: list[bytes] = []
    while await consumer.position(partition) < end:
        for record in (await consumer.getmany(partition, timeout_ms=1000)).get(partition, []):
            if record.value is not None:
                values.append(bytes(record.value))
    return values


async def _refuse_existing(settings: Settings, tables: Mapping[str, Any], force: bool) -> None:
    """Refuse to write over state the new layout already has (unless ``force``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options()
    )
    await consumer.start()
    try:
        topic = tables["resolver"].changelog_topic.get_topic_name()
        partition = TopicPartition(topic, 0)
        end = (await consumer.end_offsets([partition]))[partition]
    finally:
        await consumer.stop()
    if end and not force:
        raise MigrationError(
            f"{topic} already holds {end} records: the state was migrated, or workers of this "
            "version have run. Use --force to write the old state over it"
        )


async def legacy_state_pending(settings: Settings) -> bool:
    """Whether the deployment has single-partition state and no scaled-out state yet: a
    worker of this version must not start then (it would begin with no customers)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.runtime.topics import LEGACY_IDENTITY_TABLE, RESOLVER_TABLE

    old = f"{settings.app_id}-{LEGACY_IDENTITY_TABLE}-changelog"
    new = f"{settings.app_id}-{RESOLVER_TABLE}-changelog"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, **settings.kafka_client_options()
    )
    await consumer.start()
    try:
        topics = await consumer.topics()
        if old not in topics:
            return False
        old_end = (await consumer.end_offsets([TopicPartition(old, 0)]))[TopicPartition(old, 0)]
        if not old_end:
            return False
        if new not in topics:
            return True
        new_end = (await consumer.end_offsets([TopicPartition(new, 0)]))[TopicPartition(new, 0)]
        return not new_end
    finally:
        await consumer.stop()
