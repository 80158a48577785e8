"""ClickHouse schema: versioned migrations and the column order the sinks insert in.

Migrations are SQL files in ``schemas/migrations``, named ``NNNN_name.sql`` and applied
in order; ``{database}`` stands for the configured database. Every statement is
idempotent (``IF NOT EXISTS``, ``CREATE OR REPLACE VIEW``), so two workers starting at
once, or a migration interrupted half-way, converge on the same schema.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

__all__ = [
    "ALERT_COLUMNS",
    "ALERT_DELIVERY_COLUMNS",
    "ALIAS_COLUMNS",
    "CUSTOMER_COLUMNS",
    "DEAD_LETTER_COLUMNS",
    "DUPLICATE_COLUMNS",
    "EFFORT_COLUMNS",
    "ERASURE_COLUMNS",
    "EVENT_COLUMNS",
    "LEDGER_COLUMNS",
    "MERGE_COLUMNS",
    "REDIRECT_COLUMNS",
    "REFUSAL_COLUMNS",
    "SCORE_COLUMNS",
    "TABLE_COLUMNS",
    "Migration",
    "migrations",
    "quote_identifier",
]

#: Insert column order of ``events_store`` (a contract test checks it against the DDL).
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "occurred_at",
    "client_occurred_at",
    "sent_at",
    "clock_skew_ms",
    "received_at",
    "channel",
    "type",
    "customer_id",
    "identifiers",
    "rejected_identifiers",
    "schema_version",
    "source",
    "session_id",
    "case_id",
    "survey_metric",
    "survey_score",
    "survey_scale_max",
    "survey_comment",
    "interaction_direction",
    "interaction_queue",
    "interaction_agent_id",
    "wait_seconds",
    "handle_seconds",
    "transferred",
    "escalated",
    "resolved",
    "order_id",
    "amount",
    "currency",
    "context",
    "properties",
    "flags",
    "source_topic",
    "source_partition",
    "source_offset",
    "journey_stage",
)

#: Insert column order of ``dead_letters_store``.
DEAD_LETTER_COLUMNS: tuple[str, ...] = (
    "source_topic",
    "source_partition",
    "source_offset",
    "source_timestamp",
    "received_at",
    "reason",
    "detail",
    "event_id",
    "key",
    "raw",
    "headers",
)

#: Insert column order of ``customer_360_store``.
CUSTOMER_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "identifiers",
    "first_seen",
    "last_seen",
    "touchpoints",
    "touchpoints_by_channel",
    "channels",
    "journey_stage",
    "journey_stage_at",
    "last_nps",
    "last_nps_at",
    "last_csat",
    "last_csat_at",
    "last_ces",
    "last_ces_at",
    "effort_index",
    "open_cases",
    "recent",
    "merged_ids",
    "updated_at",
    "version",
    "deleted",
    "answer_history",
)
ALIAS_COLUMNS: tuple[str, ...] = (
    "identifier_kind",
    "identifier_value",
    "customer_id",
    "updated_at",
    "version",
    "deleted",
)
MERGE_COLUMNS: tuple[str, ...] = (
    "merged_from",
    "merged_into",
    "reason",
    "event_id",
    "event_at",
    "at",
    "redirected",
    "version",
)
REDIRECT_COLUMNS: tuple[str, ...] = ("customer_id", "current_id", "version")
REFUSAL_COLUMNS: tuple[str, ...] = (
    "event_id",
    "identifier_kind",
    "customer_id",
    "other_customer_id",
    "reason",
    "at",
)
ERASURE_COLUMNS: tuple[str, ...] = (
    "request_id",
    "identifier_kind",
    "customer_ids",
    "identifiers_removed",
    "requested_at",
    "completed_at",
)

#: Insert column order of ``scores_store``: one row per stitch record, its tallies as
#: parallel arrays (see ``streams/scores.py``).
SCORE_COLUMNS: tuple[str, ...] = (
    "stitch_offset",
    "first_event_id",
    "stitched_at",
    "bucket_start",
    "segment_kind",
    "segment_value",
    "metric",
    "responses",
    "promoters",
    "passives",
    "detractors",
    "positive",
    "score_milli",
    "score_sq_micro",
)

#: Insert column order of ``effort_store``: one row per assisted contact, the newest wins.
EFFORT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "occurred_at",
    "customer_id",
    "case_id",
    "channel",
    "journey_stage",
    "context",
    "repeat_contact",
    "channel_switch",
    "transferred",
    "escalated",
    "unresolved",
    "wait_seconds",
    "points",
    "version",
)

#: Insert column order of ``alerts_store``: one row per alert (a replay writes it again).
ALERT_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "type",
    "subject",
    "customer_id",
    "segments",
    "fired_at",
    "payload",
    "endpoints",
    "version",
)

#: Insert column order of ``alert_deliveries_store``: one row per alert, endpoint, outcome.
ALERT_DELIVERY_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "endpoint",
    "status",
    "attempts",
    "last_status",
    "last_error",
    "updated_at",
    "version",
)

#: Insert column order of ``ingest_ledger_store``: one row per ingest batch.
LEDGER_COLUMNS: tuple[str, ...] = (
    "source_topic",
    "source_partition",
    "first_offset",
    "last_offset",
    "settled_from",
    "records",
    "accepted",
    "duplicates",
    "dead_lettered",
    "read_at",
)

#: Insert column order of ``duplicates_store``: one row per duplicate message.
DUPLICATE_COLUMNS: tuple[str, ...] = (
    "source_topic",
    "source_partition",
    "source_offset",
    "event_id",
    "stage",
    "received_at",
)

#: Every table the sinks insert into, with its column order, in insert order.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "events_store": EVENT_COLUMNS,
    "dead_letters_store": DEAD_LETTER_COLUMNS,
    "duplicates_store": DUPLICATE_COLUMNS,
    "ingest_ledger_store": LEDGER_COLUMNS,
    "customer_360_store": CUSTOMER_COLUMNS,
    "customer_aliases_store": ALIAS_COLUMNS,
    "identity_merges_store": MERGE_COLUMNS,
    "customer_redirects_store": REDIRECT_COLUMNS,
    "identity_refusals_store": REFUSAL_COLUMNS,
    "erasures_store": ERASURE_COLUMNS,
    "scores_store": SCORE_COLUMNS,
    "effort_store": EFFORT_COLUMNS,
    "alerts_store": ALERT_COLUMNS,
    "alert_deliveries_store": ALERT_DELIVERY_COLUMNS,
}

_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def quote_identifier(name: str) -> str:
    """Quote a database or table name; refuses anything but plain identifiers."""
    if not _IDENTIFIER_RE.match(name):
        raise ValueError(f"not a plain ClickHouse identifier: {name!r}")
    return f"`{name}`"


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its statements, with ``{database}`` still to be filled in."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file, recorded when applied, to notice an edited migration."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str) -> list[str]:
        """The statements for ``database``, comments removed, in file order."""
        quoted = quote_identifier(database)
        text = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [
            part.strip().replace("{database}", quoted) for part in text.split(";") if part.strip()
        ]


def migrations() -> list[Migration]:
    """Every migration shipped with this version, oldest first."""
    found = []
    for entry in resources.files("schemas").joinpath("migrations").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    # unique, not contiguous: a number may be reserved by a change not merged yet
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return found
