"""One resolver batch: event rows in, each routed to its customer's partition (pure).

The ingest agents forward accepted events as ``events_store`` rows (JSON lists) through
the single-partition resolve topic. The resolver is the only global step: it decides
which customer each event belongs to (:class:`~streams.domain.identity.Resolver`),
removes repeats of an ``event_id`` across every input partition and worker, flags
events that are late against their input partition's event-time watermark, and routes
every event, tagged with its customer id, to the partition of the customers topic that
holds that customer (:func:`partition_of`). Everything per customer (journeys, cases,
effort, answers, scores) happens there, in parallel (``streams.domain.customers``).

**What goes to a customer partition**, in the order the resolver decides it, as *items*
inside records ``[complete_to, [item, ...]]``:

* ``["e", seq, row, snapshot]``: an event; ``snapshot`` is ``[identifiers, absorbed]``
  when the event changed its customer's identity (else null);
* ``["i", seq, customer_id, snapshot]``: another customer's identity changed (a refused
  identifier started it, or a repeat linked an identifier);
* ``["m", seq, absorbed_id, survivor_id]``: to the absorbed customer's partition, after
  every event routed to it: hand the customer over to the survivor's partition;
* ``["x", seq, request]``: erase a customer.

``seq`` numbers every item the resolver sends: the offset of the resolve record that
caused it, the row within that record, and the item for that row (:func:`seq_of`). It
grows along the resolve topic and is the same whenever a record is resolved again from
the same state, so a customer partition recognises items it already applied (its
high-water mark, see ``streams.domain.customers``). ``complete_to`` is the event time
up to which every input partition still sending has been resolved (``Watermarks``), for
the score-drop detector.

**Replays.** The duplicate window (``streams.domain.dedup``) remembers each event id with
the coordinates of the resolve record that first carried it, and is persisted with the
batch's other state, after everything the batch produced is durable. An event whose
id the window holds at these very coordinates was therefore resolved, routed and stored
before (the resolver stopped before it committed): it is skipped. An event id held at
other coordinates is a repeat: its identifiers are linked (idempotent), it is not routed
and not counted; a repeat from another input message is reported as a duplicate.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.clickhouse import EVENT_COLUMN
from schemas.customer import Merge, Refusal
from sinks.rows import (
    CUSTOMER_ID_COLUMN,
    alias_rows,
    merge_row,
    redirect_rows,
    refusal_row,
)
from streams.domain.dedup import DuplicateWindow
from streams.domain.identity import Identity, Resolver
from streams.domain.scores import Watermarks

__all__ = [
    "FLAG_LATE",
    "MAX_ITEMS_PER_ROW",
    "ResolveOutput",
    "duplicate_row",
    "origin_of",
    "partition_of",
    "resolve_records",
    "seq_of",
]

_COLUMN = EVENT_COLUMN
_EVENT_ID, _OCCURRED_AT = _COLUMN["event_id"], _COLUMN["occurred_at"]
_IDENTIFIERS, _FLAGS = _COLUMN["identifiers"], _COLUMN["flags"]
_SOURCE_TOPIC, _SOURCE_PARTITION = _COLUMN["source_topic"], _COLUMN["source_partition"]
_SOURCE_OFFSET, _RECEIVED_AT = _COLUMN["source_offset"], _COLUMN["received_at"]

#: Flag on an ``events`` row whose event was more than the grace behind its partition.
FLAG_LATE = "late"
#: Items one row may cause: a merge and an identity per identifier (at most 20), the event.
MAX_ITEMS_PER_ROW = 256
#: Rows one resolve record may hold (a record is at most 512 KiB of rows).
MAX_ROWS_PER_RECORD = 1 << 16


def seq_of(offset: int, row: int, item: int) -> int:
    """The sequence number of the ``item``-th item caused by ``row`` of the resolve
    record at ``offset``: grows with each, fits 63 bits for offsets below 2^39."""
    assert 0 <= row < MAX_ROWS_PER_RECORD and 0 <= item < MAX_ITEMS_PER_ROW
    return (offset << 24) | (row << 8) | item


@functools.lru_cache(maxsize=1 << 16)
def partition_of(customer_id: str, partitions: int) -> int:
    """The customers-topic partition that holds ``customer_id`` (stable: BLAKE2b; the
    customers of recent events are remembered)."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def origin_of(topic: str, partition: int, offset: int) -> int:
    """A stable 63-bit number naming an input message's coordinates (the resolver's
    duplicate window notes it with each event id, see ``streams.domain.dedup``)."""
    digest = hashlib.blake2b(f"{topic}:{partition}:{offset}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def duplicate_row(row: Sequence[Any], stage: str) -> tuple[Any, ...]:
    """The ``duplicates_store`` row of a forwarded event row (``EVENT_COLUMNS`` order)."""
    return (
        row[_SOURCE_TOPIC],
        row[_SOURCE_PARTITION],
        row[_SOURCE_OFFSET],
        row[_EVENT_ID],
        stage,
        row[_RECEIVED_AT],
    )


@dataclass
class ResolveOutput:
    """What a resolve batch produced: items per customers partition (in order), rows per
    ``*_store`` table, merges to publish, and counts for the metrics."""

    items: dict[int, list[list[Any]]] = field(default_factory=dict)
    rows: dict[str, list[Any]] = field(default_factory=dict)
    merges: list[Merge] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    routed: int = 0
    duplicates: int = 0
    replayed: int = 0
    late: int = 0


def resolve_records(
    records: Sequence[tuple[int, list[list[Any]]]],
    resolver: Resolver,
    window: DuplicateWindow,
    topic: str,
    partitions: int,
    watermarks: Watermarks,
    now_ms: int,
) -> ResolveOutput:
    """Resolve every event row of consecutive resolve records ``(offset, rows)``.

    Fills in each routed row's ``customer_id`` (and the ``late`` flag). The caller seals
    and persists the window and :meth:`Resolver.changes`, sends :attr:`items` and
    stores :attr:`rows`, in that order of durability (see the module docstring).
    """
    out = ResolveOutput()
    items = out.items
    refusals: list[Refusal] = []
    duplicates: list[tuple[Any, ...]] = []
    for offset, rows in records:
        for index, row in enumerate(rows):
            event_id = row[_EVENT_ID]
            origin = origin_of(row[_SOURCE_TOPIC], row[_SOURCE_PARTITION], row[_SOURCE_OFFSET])
            first = window.first(event_id)
            if first == (topic, 0, offset) and window.origin_of(event_id) == origin:
                out.replayed += 1  # resolved, routed and stored before a restart
                continue
            # a repeat: the window holds the id from another record, or from another
            # input message in this one
            repeat = first is not None
            if not repeat:
                window.seen(event_id, topic, 0, offset, origin)
            at = row[_OCCURRED_AT]
            result = resolver.resolve(row[_IDENTIFIERS], event_id, at, count=not repeat)
            n = 0
            for merge in result.merges:
                target = partition_of(merge.merged_from, partitions)
                item = ["m", seq_of(offset, index, n), merge.merged_from, merge.merged_into]
                items.setdefault(target, []).append(item)
                n += 1
            out.merges.extend(result.merges)
            refusals.extend(result.refusals)
            customer_id = result.customer_id
            for changed in result.changed:
                if changed == customer_id and not repeat:
                    continue  # goes with the event itself
                snapshot = _snapshot(resolver.identity(changed))
                target = partition_of(changed, partitions)
                item = ["i", seq_of(offset, index, n), changed, snapshot]
                items.setdefault(target, []).append(item)
                n += 1
            if repeat:
                out.duplicates += 1
                if window.origin_of(event_id) != origin:
                    # another message with this event_id (not the same one forwarded
                    # again after a replay of ingest): its outcome is a duplicate
                    duplicates.append(duplicate_row(row, "stitch"))
                continue
            row[CUSTOMER_ID_COLUMN] = customer_id
            if watermarks.observe(f"{row[_SOURCE_TOPIC]}:{row[_SOURCE_PARTITION]}", at):
                row[_FLAGS] = [*row[_FLAGS], FLAG_LATE]
                out.late += 1
            snapshot = (
                _snapshot(resolver.identity(customer_id)) if customer_id in result.changed else None
            )
            target = partition_of(customer_id, partitions)
            items.setdefault(target, []).append(["e", seq_of(offset, index, n), row, snapshot])
            out.routed += 1
    version = records[-1][0] if records else 0
    changes = resolver.changes()
    out.rows = {
        "customer_aliases_store": alias_rows(changes.nodes.items(), version, now_ms),
        "identity_merges_store": [merge_row(m, version, now_ms) for m in out.merges],
        "customer_redirects_store": [r for m in out.merges for r in redirect_rows(m, version)],
        "identity_refusals_store": [refusal_row(r, now_ms) for r in refusals],
        "duplicates_store": duplicates,
    }
    out.refusals = Counter(r.reason for r in refusals)
    return out


def _snapshot(identity: Identity | None) -> list[Any] | None:
    return None if identity is None else identity.snapshot()
