"""Rows for the ClickHouse ``*_store`` tables, in the column order of ``schemas.clickhouse``.

Times are epoch milliseconds: ``DateTime64(3)`` columns take them as they are, and an
event row stays plain JSON data, so it can travel through Kafka between the agents and
be inserted on the other side unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.clickhouse import CUSTOMER_COLUMNS, EVENT_COLUMNS
from schemas.customer import Customer, Merge, Refusal
from schemas.dead_letter import DeadLetter, utf8_text
from schemas.event import EARLIEST, LATEST
from schemas.ingested import IngestedEvent

__all__ = [
    "CUSTOMER_ID_COLUMN",
    "alias_rows",
    "customer_row",
    "dead_letter_row",
    "deleted_customer_row",
    "duplicate_of",
    "event_row",
    "ledger_row",
    "merge_row",
    "redirect_rows",
    "refusal_row",
    "to_ms",
]

#: Position of ``customer_id`` in an event row (filled in by the stitch agent).
CUSTOMER_ID_COLUMN = EVENT_COLUMNS.index("customer_id")
_SCALE_MAX = {"nps": 10, "csat": 5, "ces": 7}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime, exactly (floored to the millisecond)."""
    # integer arithmetic: value.timestamp() * 1000 is a float, off by one for about one
    # millisecond value in a hundred
    return (value - _EPOCH) // _ONE_MS


def event_row(ingested: IngestedEvent) -> list[Any]:
    """One ``events_store`` row (JSON-able), in ``EVENT_COLUMNS`` order."""
    event = ingested.event
    survey = event.survey
    interaction = event.interaction
    commerce = event.commerce
    source = ingested.source
    return [
        event.event_id,
        to_ms(ingested.occurred_at),
        to_ms(ingested.client_occurred_at),
        to_ms(event.sent_at) if event.sent_at is not None else None,
        ingested.clock_skew_ms,
        to_ms(ingested.received_at),
        ingested.channel,
        event.type,
        ingested.customer_id,
        ingested.identifiers,
        ingested.rejected_identifiers,
        event.schema_version,
        event.source,
        event.session_id,
        event.case_id,
        survey.metric if survey else None,
        survey.score if survey else None,
        (survey.scale_max or _SCALE_MAX[survey.metric]) if survey else None,
        survey.comment if survey else None,
        interaction.direction if interaction else None,
        interaction.queue if interaction else None,
        interaction.agent_id if interaction else None,
        interaction.wait_seconds if interaction else None,
        interaction.handle_seconds if interaction else None,
        interaction.transferred if interaction else None,
        interaction.escalated if interaction else None,
        interaction.resolved if interaction else None,
        commerce.order_id if commerce else None,
        commerce.amount if commerce else None,
        commerce.currency.upper() if commerce and commerce.currency else None,
        event.context,
        orjson.dumps(event.properties).decode(),
        list(ingested.flags),
        source.topic,
        source.partition,
        source.offset,
        "",  # journey_stage: the stitch agent fills it in
    ]


def dead_letter_row(letter: DeadLetter) -> tuple[Any, ...]:
    """One ``dead_letters_store`` row; never fails, whatever the letter holds.

    Bytes (key, raw, header values) go in as they are: a ClickHouse ``String`` holds any
    bytes. Text goes in as valid UTF-8: a lone surrogate, which a Python string can hold
    and UTF-8 cannot, is written as its ``\\udXXX`` escape. A source timestamp outside
    what ``DateTime64(3)`` holds is left empty.
    """
    source_timestamp = letter.source_timestamp
    if source_timestamp is not None and not EARLIEST <= source_timestamp <= LATEST:
        source_timestamp = None
    return (
        utf8_text(letter.source_topic),
        letter.source_partition,
        letter.source_offset,
        source_timestamp,
        letter.received_at,
        letter.reason.value,
        utf8_text(letter.detail),
        None if letter.event_id is None else utf8_text(letter.event_id),
        letter.key,
        letter.raw,
        [(utf8_text(name), value) for name, value in letter.headers],
    )


def duplicate_of(ingested: IngestedEvent) -> tuple[Any, ...]:
    """The ``duplicates_store`` row of a message ingest's duplicate window caught."""
    source = ingested.source
    return (
        source.topic,
        source.partition,
        source.offset,
        ingested.event.event_id,
        "ingest",
        to_ms(ingested.received_at),
    )


def ledger_row(
    topic: str,
    partition: int,
    first_offset: int,
    last_offset: int,
    settled_from: int,
    outcomes: tuple[int, int, int],
    read_at: datetime,
) -> tuple[Any, ...]:
    """The ``ingest_ledger_store`` row of one ingest batch: the offsets it read and
    settles, and how many records were accepted, duplicates and dead-lettered."""
    accepted, duplicates, dead_lettered = outcomes
    return (
        topic,
        partition,
        first_offset,
        last_offset,
        settled_from,
        accepted + duplicates + dead_lettered,
        accepted,
        duplicates,
        dead_lettered,
        to_ms(read_at),
    )


def customer_row(customer: Customer, version: int, updated_at: int) -> tuple[Any, ...]:
    """One ``customer_360_store`` row: the customer's latest state."""
    j = customer.journey
    answers = j.answers
    nps, csat, ces = answers.get("nps"), answers.get("csat"), answers.get("ces")
    return (
        customer.customer_id,
        customer.identifiers,
        j.first_seen,
        j.last_seen,
        sum(j.touchpoints.values()),
        j.touchpoints,
        sorted(j.touchpoints),
        j.stage,
        j.stage_at,
        nps.score if nps else None,
        nps.at if nps else None,
        csat.score if csat else None,
        csat.at if csat else None,
        ces.score if ces else None,
        ces.at if ces else None,
        None,
        sorted(j.open_cases),
        [(t.event_id, t.at, t.channel, t.type) for t in j.recent],
        list(customer.absorbed),
        updated_at,
        version,
        0,
        [(a.metric, a.score, a.at, a.event_id) for a in j.answer_history],
        customer.risk.p if customer.risk else None,
        customer.risk.band if customer.risk else "",
    )


def deleted_customer_row(customer_id: str, version: int, updated_at: int) -> tuple[Any, ...]:
    """A ``customer_360_store`` row that removes the customer from the view."""
    row: list[Any] = [customer_id, {}, 0, 0, 0, {}, [], "", 0]
    row += [None] * 7 + [[], [], [], updated_at, version, 1, [], None, ""]
    assert len(row) == len(CUSTOMER_COLUMNS)
    return tuple(row)


def alias_rows(
    nodes: Iterable[tuple[str, str | None]], version: int, updated_at: int
) -> list[tuple[Any, ...]]:
    """``customer_aliases_store`` rows from ``(kind:value, customer_id or None)`` pairs."""
    rows = []
    for key, customer_id in nodes:
        kind, _, value = key.partition(":")
        rows.append((kind, value, customer_id or "", updated_at, version, int(customer_id is None)))
    return rows


def merge_row(merge: Merge, version: int, decided_at: int) -> tuple[Any, ...]:
    """One ``identity_merges_store`` row."""
    return (
        merge.merged_from,
        merge.merged_into,
        merge.reason,
        merge.event_id,
        merge.at,
        decided_at,
        list(merge.redirected),
        version,
    )


def redirect_rows(merge: Merge, version: int) -> list[tuple[Any, ...]]:
    """``customer_redirects_store`` rows: every redirected id now points to the survivor."""
    return [(customer_id, merge.merged_into, version) for customer_id in merge.redirected]


def refusal_row(refusal: Refusal, at: int) -> tuple[Any, ...]:
    """One ``identity_refusals_store`` row (the identifier value is not stored)."""
    return (
        refusal.event_id,
        refusal.kind,
        refusal.customer_id,
        refusal.other_customer_id,
        refusal.reason,
        at,
    )
