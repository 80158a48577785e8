"""One stitch batch: event rows in, customers and every ClickHouse row out (pure).

The ingest agents forward accepted events as ``events_store`` rows (JSON lists, times
in epoch ms) through the single-partition stitch topic; the stitch agent calls
:func:`stitch_rows` on each record with a :class:`~streams.identity.Stitcher` over its
table, persists :meth:`Stitcher.changes` and hands :attr:`StitchOutput.rows` to the sink.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.clickhouse import EVENT_COLUMNS
from schemas.customer import Merge, Refusal
from sinks.rows import (
    CUSTOMER_ID_COLUMN,
    alias_rows,
    customer_row,
    deleted_customer_row,
    merge_row,
    redirect_rows,
    refusal_row,
)
from streams.dedup import DuplicateWindow
from streams.identity import Stitcher
from streams.journey import TouchFacts

__all__ = ["StitchOutput", "chunk_rows", "stitch_rows", "touch_of"]

_COLUMN = {name: i for i, name in enumerate(EVENT_COLUMNS)}
_EVENT_ID, _OCCURRED_AT = _COLUMN["event_id"], _COLUMN["occurred_at"]
_CHANNEL, _TYPE, _CASE = _COLUMN["channel"], _COLUMN["type"], _COLUMN["case_id"]
_RESOLVED, _IDENTIFIERS = _COLUMN["resolved"], _COLUMN["identifiers"]
_METRIC, _SCORE = _COLUMN["survey_metric"], _COLUMN["survey_score"]
_SCALE = _COLUMN["survey_scale_max"]


def touch_of(row: Sequence[Any]) -> TouchFacts:
    """What the journey needs from an ``events_store`` row."""
    return TouchFacts(
        event_id=row[_EVENT_ID],
        at=row[_OCCURRED_AT],
        channel=row[_CHANNEL],
        type=row[_TYPE],
        case_id=row[_CASE],
        resolved=row[_RESOLVED],
        survey_metric=row[_METRIC],
        survey_score=row[_SCORE],
        survey_scale_max=row[_SCALE],
    )


@dataclass
class StitchOutput:
    """Rows per ``*_store`` table, the merges to publish, and counts for the metrics."""

    rows: dict[str, list[Any]] = field(default_factory=dict)
    merges: list[Merge] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    replayed: int = 0
    duplicates: int = 0


def stitch_rows(
    records: Sequence[tuple[int, list[list[Any]]]],
    stitcher: Stitcher,
    window: DuplicateWindow,
    topic: str,
    seq: int,
    now_ms: int,
) -> StitchOutput:
    """Stitch every event row, fill in its ``customer_id``, collect the output rows.

    ``records`` are ``(offset, rows)`` of consecutive records of the stitch ``topic``;
    an event's sequence number is its record's offset. ``seq`` (the last offset) is the
    version of every row written, so a replay writes rows that the ReplacingMergeTree
    tables collapse.

    ``window`` remembers the event ids stitched recently, across every input partition
    and worker: an event id that comes back in another stitch record (its input was
    replayed after a crash, or a producer sent it to two partitions) links identifiers
    but is not counted in the journey again. The caller seals and persists the window.
    """
    out = StitchOutput()
    refusals: list[Refusal] = []
    rows: list[list[Any]] = []
    for offset, record_rows in records:
        for row in record_rows:
            repeat = window.seen(row[_EVENT_ID], topic, 0, offset)
            result = stitcher.stitch(row[_IDENTIFIERS], touch_of(row), offset, count=not repeat)
            row[CUSTOMER_ID_COLUMN] = result.customer_id
            out.duplicates += repeat
            out.merges.extend(result.merges)
            refusals.extend(result.refusals)
            out.replayed += not result.applied and not repeat
        rows.extend(record_rows)
    changes = stitcher.changes()
    customers = []
    for customer_id, customer in changes.customers.items():
        if customer is None:
            customers.append(deleted_customer_row(customer_id, seq, now_ms))
        else:
            customers.append(customer_row(customer, seq, now_ms))
    redirects = [r for merge in out.merges for r in redirect_rows(merge, seq)]
    out.rows = {
        "events_store": rows,
        "customer_360_store": customers,
        "customer_aliases_store": alias_rows(changes.nodes.items(), seq, now_ms),
        "identity_merges_store": [merge_row(m, seq, now_ms) for m in out.merges],
        "customer_redirects_store": redirects,
        "identity_refusals_store": [refusal_row(r, now_ms) for r in refusals],
    }
    out.refusals = Counter(r.reason for r in refusals)
    return out


def chunk_rows(encoded: Sequence[bytes], max_bytes: int) -> list[bytes]:
    """Join JSON-encoded rows into JSON arrays of at most ``max_bytes`` each (one row
    larger than that gets an array of its own)."""
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 2
    for item in encoded:
        if current and size + len(item) + 1 > max_bytes:
            chunks.append(b"[" + b",".join(current) + b"]")
            current, size = [], 2
        current.append(item)
        size += len(item) + 1
    if current:
        chunks.append(b"[" + b",".join(current) + b"]")
    return chunks
