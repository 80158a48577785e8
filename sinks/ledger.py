"""What ClickHouse knows about every input offset: the ledger and the outcome rows.

Every ingest batch stores one ``ingest_ledger_store`` row before its offsets are
committed (the range it read, the range its ack settles, its outcome counts), and every
message consumed leaves exactly one outcome row: ``events_store`` (accepted, with its
source coordinates), ``dead_letters_store`` or ``duplicates_store``. So, for one input
partition and an offset ``committed`` that the consumer group committed:

* every offset below it is covered by a ledger range; an offset that is not was
  committed without being read: a loss (:func:`holes` finds them);
* every offset a batch read has an outcome row, once the stitch agent has stored what
  the batch forwarded.

Pure helpers and the queries; ``streams.runtime.reconcile`` adds the Kafka side.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.clickhouse import quote_identifier

__all__ = ["holes", "ledger_ranges", "ledger_start", "missing_outcomes", "span"]


def holes(ranges: Iterable[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The offsets of ``[start, end)`` that no inclusive ``(first, last)`` range covers,
    as inclusive ``(first, last)`` pairs in order. Ranges may overlap and come in any
    order."""
    found: list[tuple[int, int]] = []
    at = start  # every offset below ``at`` is covered (or outside the interval)
    for first, last in sorted(ranges):
        if last < at:
            continue
        if first > at:
            found.append((at, min(first, end) - 1))
        at = max(at, last + 1)
        if at >= end:
            break
    if at < end:
        found.append((at, end - 1))
    return [(a, b) for a, b in found if a <= b and a < end]


def span(pairs: Iterable[tuple[int, int]]) -> int:
    """How many offsets inclusive ``(first, last)`` pairs hold (pairs do not overlap)."""
    return sum(last - first + 1 for first, last in pairs)


async def ledger_start(client: Any, database: str, topic: str, partition: int) -> int | None:
    """Where the partition's ledger begins: the first offset its first batch settled,
    which is where the consumer group stood when the ledger began (None: no row yet).
    Offsets before it were committed before this deployment kept a ledger."""
    db = quote_identifier(database)
    result = await client.query(
        f"SELECT min(settled_from), count() FROM {db}.ingest_ledger_store "
        "WHERE source_topic = {t:String} AND source_partition = {p:UInt32}",
        parameters={"t": topic, "p": partition},
    )
    first, rows = result.result_rows[0]
    return int(first) if rows else None


async def ledger_ranges(
    client: Any, database: str, topic: str, partition: int, since: int, until: int
) -> list[tuple[int, int]]:
    """The ``(settled_from, last_offset)`` ranges of the partition's ledger rows that
    reach ``since`` or later and begin before ``until``."""
    db = quote_identifier(database)
    result = await client.query(
        f"SELECT DISTINCT settled_from, last_offset FROM {db}.ingest_ledger_store "
        "WHERE source_topic = {t:String} AND source_partition = {p:UInt32} "
        "AND last_offset >= {a:UInt64} AND settled_from < {b:UInt64} ORDER BY settled_from",
        parameters={"t": topic, "p": partition, "a": since, "b": until},
    )
    return [(int(a), int(b)) for a, b in result.result_rows]


async def missing_outcomes(
    client: Any, database: str, topic: str, partition: int, covered: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The offsets inside ``covered`` (disjoint, ordered ranges) that have no outcome row
    (event, dead letter or duplicate), as inclusive ranges. Offsets that hold no record
    (transaction markers) are among them; the caller tells them apart by reading the
    partition. Counts first, and lists offsets only when something is missing."""
    if not covered:
        return []
    db = quote_identifier(database)
    low, high = covered[0][0], covered[-1][1]
    where = (
        "source_topic = {t:String} AND source_partition = {p:UInt32} "
        "AND source_offset BETWEEN {a:UInt64} AND {b:UInt64}"
    )
    outcomes = (
        f"SELECT source_offset FROM {db}.events_store WHERE {where} "
        f"UNION ALL SELECT source_offset FROM {db}.dead_letters_store WHERE {where} "
        f"UNION ALL SELECT source_offset FROM {db}.duplicates_store WHERE {where}"
    )
    parameters = {"t": topic, "p": partition, "a": low, "b": high}
    uncovered = holes(covered, low, high + 1)
    counted = await client.query(
        f"SELECT uniqExact(source_offset) FROM ({outcomes})", parameters=parameters
    )
    held_in_covered = int(counted.result_rows[0][0])  # outcome rows only exist for read offsets
    if held_in_covered >= span(covered):
        return []
    result = await client.query(
        f"SELECT DISTINCT source_offset FROM ({outcomes})", parameters=parameters
    )
    held = [(int(o), int(o)) for (o,) in result.result_rows]
    return holes(held + uncovered, low, high + 1)
