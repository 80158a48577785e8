"""One stitch batch: event rows in, customers and every ClickHouse row out (pure).

The ingest agents forward accepted events as ``events_store`` rows (JSON lists, times
in epoch ms) through the single-partition stitch topic; the stitch agent calls
:func:`stitch_rows` on each record with a :class:`~streams.domain.identity.Stitcher` over its
table, persists :meth:`Stitcher.changes` and hands :attr:`StitchOutput.rows` to the sink.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
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
from streams.domain.dedup import DuplicateWindow
from streams.domain.effort import CaseBook, Contact, is_contact
from streams.domain.identity import Stitcher
from streams.domain.journey import TouchFacts
from streams.domain.scores import (
    Answer,
    Key,
    Tally,
    Watermarks,
    bucket_of,
    segments_of,
    tally_answers,
)

__all__ = [
    "FLAG_LATE",
    "ScoreRules",
    "StitchOutput",
    "chunk_rows",
    "duplicate_row",
    "origin_of",
    "stitch_rows",
    "touch_of",
]

_COLUMN = {name: i for i, name in enumerate(EVENT_COLUMNS)}
_EVENT_ID, _OCCURRED_AT = _COLUMN["event_id"], _COLUMN["occurred_at"]
_CHANNEL, _TYPE, _CASE = _COLUMN["channel"], _COLUMN["type"], _COLUMN["case_id"]
_RESOLVED, _IDENTIFIERS = _COLUMN["resolved"], _COLUMN["identifiers"]
_METRIC, _SCORE = _COLUMN["survey_metric"], _COLUMN["survey_score"]
_SCALE = _COLUMN["survey_scale_max"]
_CONTEXT, _FLAGS, _STAGE = _COLUMN["context"], _COLUMN["flags"], _COLUMN["journey_stage"]
_SOURCE_TOPIC, _SOURCE_PARTITION = _COLUMN["source_topic"], _COLUMN["source_partition"]
_SOURCE_OFFSET, _RECEIVED_AT = _COLUMN["source_offset"], _COLUMN["received_at"]
_INTERACTION = tuple(
    _COLUMN[c]
    for c in (
        "interaction_direction",
        "interaction_queue",
        "interaction_agent_id",
        "wait_seconds",
        "handle_seconds",
        "transferred",
        "escalated",
        "resolved",
    )
)
_WAIT, _TRANSFERRED, _ESCALATED = (
    _COLUMN["wait_seconds"],
    _COLUMN["transferred"],
    _COLUMN["escalated"],
)

#: Flag on an ``events`` row whose event was more than the grace behind its partition.
FLAG_LATE = "late"


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
    late: int = 0
    #: tallies of the answers that were not late, for the stream's rolling view
    on_time: dict[Key, Tally] = field(default_factory=dict)
    #: every answer stitched (late ones too), with its customer
    answers: list[Answer] = field(default_factory=list)
    #: (customer, case) of every contact with an effort row, and the segments of the
    #: case's newest such contact
    cases: dict[tuple[str, str], tuple[tuple[str, str], ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoreRules:
    """How answers become score tallies: bucket width and segment dimensions."""

    bucket_ms: int = 60_000
    dimensions: tuple[str, ...] = ("region", "product", "segment")


def stitch_rows(
    records: Sequence[tuple[int, list[list[Any]]]],
    stitcher: Stitcher,
    window: DuplicateWindow,
    topic: str,
    seq: int,
    now_ms: int,
    watermarks: Watermarks | None = None,
    score_rules: ScoreRules | None = None,
    cases: CaseBook | None = None,
    effort_version: int = 0,
) -> StitchOutput:
    """Stitch every event row, fill in its ``customer_id``, collect the output rows.

    ``records`` are ``(offset, rows)`` of consecutive records of the stitch ``topic``;
    an event's sequence number is its record's offset. ``seq`` (the last offset) is the
    version of every customer row written, so a replay writes rows that the
    ReplacingMergeTree tables collapse.

    ``window`` remembers the event ids stitched recently, across every input partition
    and worker: an event id that comes back in another stitch record (its input was
    replayed after a crash, or a producer sent it to two partitions) links identifiers
    but is not counted in the journey or the scores again, and writes no ``events`` row
    (the first one stands). The caller seals and persists the window.

    Each event row gets the customer's journey stage after the event; each record with
    survey answers gets one ``scores_store`` row with the tallies of its answers, so a
    replayed record replaces its own row (see ``0003_scores.sql``). ``watermarks``
    decides which events are late (flagged, left out of :attr:`StitchOutput.on_time`).

    With ``cases``, each assisted contact gets an ``effort_store`` row, and so does the
    contact after it in its case (its predecessor may have changed); rows carry
    ``effort_version``, which must grow from batch to batch, so the newest row of each
    contact wins (see ``streams/effort.py``). The caller persists ``cases.changes()``.
    """
    out = StitchOutput()
    rules = score_rules or ScoreRules()
    refusals: list[Refusal] = []
    rows: list[list[Any]] = []
    scores: list[tuple[Any, ...]] = []
    on_time: list[Answer] = []
    effort_rows: dict[str, tuple[Any, ...]] = {}
    effort_contacts: dict[str, Contact] = {}
    effort_view: dict[Key, Tally] = {}
    duplicates: list[tuple[Any, ...]] = []
    for offset, record_rows in records:
        answers: list[Answer] = []
        for row in record_rows:
            origin = origin_of(row[_SOURCE_TOPIC], row[_SOURCE_PARTITION], row[_SOURCE_OFFSET])
            repeat = window.seen(row[_EVENT_ID], topic, 0, offset, origin)
            result = stitcher.stitch(row[_IDENTIFIERS], touch_of(row), offset, count=not repeat)
            row[CUSTOMER_ID_COLUMN] = result.customer_id
            out.duplicates += repeat
            out.merges.extend(result.merges)
            refusals.extend(result.refusals)
            out.replayed += not result.applied and not repeat
            if repeat:
                if window.origin_of(row[_EVENT_ID]) != origin:
                    # another message with this event_id (not the same one forwarded
                    # again after a replay of ingest): its outcome is a duplicate
                    duplicates.append(duplicate_row(row, "stitch"))
                continue
            customer = stitcher.customer(result.customer_id)
            stage = customer.journey.stage if customer is not None else ""
            row[_STAGE] = stage
            late = watermarks is not None and watermarks.observe(
                f"{row[_SOURCE_TOPIC]}:{row[_SOURCE_PARTITION]}", row[_OCCURRED_AT]
            )
            if late:
                row[_FLAGS] = [*row[_FLAGS], FLAG_LATE]
                out.late += 1
            rows.append(row)
            if row[_METRIC] is not None and row[_SCORE] is not None:
                answer = Answer(
                    row[_OCCURRED_AT],
                    row[_METRIC],
                    row[_SCORE],
                    row[_SCALE],
                    segments_of(row[_CHANNEL], stage, row[_CONTEXT], rules.dimensions),
                    row[_EVENT_ID],
                    result.customer_id,
                    row[_CHANNEL],
                )
                answers.append(answer)
                out.answers.append(answer)
                if not late:
                    on_time.append(answer)
            if cases is not None and is_contact(
                row[_CHANNEL],
                row[_CASE],
                any(row[i] is not None for i in _INTERACTION),
                cases.rules,
            ):
                contact = Contact(
                    row[_EVENT_ID],
                    row[_OCCURRED_AT],
                    row[_CHANNEL],
                    result.customer_id,
                    row[_CASE],
                    stage,
                    {d: row[_CONTEXT][d] for d in rules.dimensions if row[_CONTEXT].get(d)},
                    row[_TRANSFERRED] is True or row[_TYPE] == "transfer",
                    row[_ESCALATED] is True,
                    row[_RESOLVED] is False,
                    float(row[_WAIT] or 0.0),
                )
                for changed, before in cases.apply(contact):
                    effort_rows[changed.event_id] = _effort_row(changed, effort_version)
                    effort_contacts[changed.event_id] = changed
                    if (late or not result.applied) and changed is contact:
                        continue  # late, or already counted before a replay
                    start = bucket_of(changed.at, rules.bucket_ms)
                    tally = _effort_tally(changed, before)
                    for kind, value in segments_of(
                        changed.channel, changed.stage, changed.context, rules.dimensions
                    ):
                        effort_view.setdefault((start, kind, value, "effort"), Tally()).add(tally)
        if answers:
            scores.append(_score_row(offset, record_rows[0][_EVENT_ID], now_ms, answers, rules))
    out.on_time = tally_answers(on_time, rules.bucket_ms)
    out.cases = _touched_cases(effort_contacts.values(), rules.dimensions)
    out.on_time.update(effort_view)
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
        "scores_store": scores,
        "effort_store": list(effort_rows.values()),
        "duplicates_store": duplicates,
    }
    out.refusals = Counter(r.reason for r in refusals)
    return out


def origin_of(topic: str, partition: int, offset: int) -> int:
    """A stable 63-bit number naming an input message's coordinates (the stitch agent's
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


def _effort_row(c: Contact, version: int) -> tuple[Any, ...]:
    """The ``effort_store`` row of a contact (``EFFORT_COLUMNS`` order)."""
    return (
        c.event_id,
        c.at,
        c.customer_id,
        c.case_id,
        c.channel,
        c.stage,
        c.context,
        c.repeat,
        c.switch,
        c.transferred,
        c.escalated,
        c.unresolved,
        c.wait_s,
        c.points,
        version,
    )


def _effort_tally(c: Contact, before: int) -> Tally:
    """What a contact adds to the stream's rolling ``effort`` view: one contact and its
    points when new, the change of its points when its flags changed (or on a replay)."""
    now = c.points
    if before < 0:
        return Tally(responses=1, score_milli=now * 1000, score_sq_micro=(now * 1000) ** 2)
    return Tally(
        score_milli=(now - before) * 1000,
        score_sq_micro=(now * 1000) ** 2 - (before * 1000) ** 2,
    )


def _score_row(
    offset: int, first_event_id: str, now_ms: int, answers: list[Answer], rules: ScoreRules
) -> tuple[Any, ...]:
    """The ``scores_store`` row of one stitch record (``SCORE_COLUMNS`` order)."""
    tallies = sorted(tally_answers(answers, rules.bucket_ms).items())
    columns: list[list[Any]] = [[] for _ in range(11)]
    for (start, kind, value, metric), tally in tallies:
        for column, item in zip(
            columns, (start, kind, value, metric, *tally.as_tuple()), strict=True
        ):
            column.append(item)
    return (offset, first_event_id, now_ms, *columns)


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


def _touched_cases(
    contacts: Iterable[Contact], dimensions: Sequence[str]
) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
    """(customer, case) of every contact with a case, and the segments of the case's
    newest contact among them."""
    out: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
    newest: dict[tuple[str, str], int] = {}
    for c in contacts:
        if c.case_id is None:
            continue
        key = (c.customer_id, c.case_id)
        if c.at >= newest.get(key, c.at):
            newest[key] = c.at
            out[key] = segments_of(c.channel, c.stage, c.context, dimensions)
    return out
