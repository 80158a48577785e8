"""ClickHouse schema: versioned migrations and the column order the sinks insert in.

Migrations are SQL files in ``schemas/migrations``, named ``NNNN_name.sql`` and applied
in order; ``{database}`` stands for the configured database. Every statement is
idempotent (``IF NOT EXISTS``, ``CREATE OR REPLACE VIEW``), so two workers starting at
once, or a migration interrupted half-way, converge on the same schema.

The files are written for one server. On a ClickHouse cluster (``clickhouse_cluster``)
the same files are rendered by :func:`cluster_statements`: every table becomes a
``Replicated*MergeTree`` table ``<name>_local`` on every node, created ``ON CLUSTER``,
and ``<name>`` becomes a ``Distributed`` table over them, sharded by a hash of the
sorting key (copies of a row share it, so they meet on one shard and collapse there).
The sinks write and the views read ``<name>`` exactly as on one server; views are
created ``ON CLUSTER`` and join distributed tables ``GLOBAL``ly. The file checksums do
not depend on the rendering.
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
    "EVENT_COLUMN",
    "EVENT_COLUMNS",
    "FOLLOWUP_COLUMNS",
    "INTERACTION_COLUMNS",
    "LEDGER_COLUMNS",
    "MERGE_COLUMNS",
    "REDIRECT_COLUMNS",
    "REFUSAL_COLUMNS",
    "SCORE_COLUMNS",
    "TABLE_COLUMNS",
    "TABLE_REPLACEMENTS",
    "Migration",
    "TableReplacement",
    "cluster_statements",
    "local_table",
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

#: The position of each column in an ``events_store`` row (``EVENT_COLUMNS`` order).
EVENT_COLUMN: dict[str, int] = {name: i for i, name in enumerate(EVENT_COLUMNS)}
#: The columns of an event's interaction: a contact has one of them set (or a case).
INTERACTION_COLUMNS: tuple[str, ...] = (
    "interaction_direction",
    "interaction_queue",
    "interaction_agent_id",
    "wait_seconds",
    "handle_seconds",
    "transferred",
    "escalated",
    "resolved",
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
    "p_detractor",
    "predicted_nps_band",
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

#: Insert column order of ``followups_store``: one row per follow-up, the newest wins.
FOLLOWUP_COLUMNS: tuple[str, ...] = (
    "followup_id",
    "customer_id",
    "opened_at",
    "due_at",
    "channel",
    "metric",
    "score",
    "answers",
    "case_ids",
    "closed_how",
    "closed_at",
    "closed_event_id",
    "closed_channel",
    "closed_queue",
    "closed_agent",
    "overdue",
    "updated_at",
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
    "followups_store": FOLLOWUP_COLUMNS,
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

    def statements(self, database: str, cluster: str | None = None) -> list[str]:
        """The statements for ``database``, comments removed, in file order; for a
        ``cluster``, rendered by :func:`cluster_statements`."""
        quoted = quote_identifier(database)
        text = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        found = [
            part.strip().replace("{database}", quoted) for part in text.split(";") if part.strip()
        ]
        if cluster is None:
            return found
        return [out for statement in found for out in cluster_statements(statement, cluster)]

    @property
    def replacement(self) -> TableReplacement | None:
        """The table this migration rebuilds, moving its rows (see ``TABLE_REPLACEMENTS``)."""
        return TABLE_REPLACEMENTS.get(self.version)


@dataclass(frozen=True, slots=True)
class TableReplacement:
    """A table rebuilt with another layout (a sorting key cannot change in place).

    The migration's SQL creates ``staging`` with the new layout. The runner then renames
    ``table`` to ``retired`` and ``staging`` to ``table`` in one statement (a second
    worker doing the same at the same moment fails on the existing ``retired`` name and
    finds the work done), so the sinks write into the new table from then on; it waits
    for inserts that began before the rename, copies the rows of ``retired`` over (a row
    that was also written anew collapses with its copy: same key, ReplacingMergeTree),
    and drops ``retired``. Each step checks the state first, so a run interrupted
    anywhere finishes the move the next time.
    """

    table: str
    staging: str
    retired: str

    def rename(self, database: str, cluster: str | None, *, first_done: bool = False) -> str:
        """Swap the new layout in; ``first_done``: only the second rename is left."""
        db = quote_identifier(database)
        table, staging, retired = (
            local_table(n, cluster) for n in (self.table, self.staging, self.retired)
        )
        moves = [] if first_done else [f"{db}.{table} TO {db}.{retired}"]
        moves.append(f"{db}.{staging} TO {db}.{table}")
        return f"RENAME TABLE {', '.join(moves)}{_on_cluster(cluster)}"

    def copy(self, database: str, cluster: str | None) -> str:
        """Copy the retired table's rows into the table (through the Distributed table
        on a cluster, reading each shard once)."""
        db = quote_identifier(database)
        if cluster is None:
            source = f"{db}.{quote_identifier(self.retired)}"
        else:
            source = f"cluster('{cluster}', '{database}', '{self.retired}_local')"
        return f"INSERT INTO {db}.{quote_identifier(self.table)} SELECT * FROM {source}"

    def drop(self, name: str, database: str, cluster: str | None) -> str:
        return (
            f"DROP TABLE IF EXISTS {quote_identifier(database)}.{quote_identifier(name)}"
            f"{_on_cluster(cluster)} SYNC"
        )


#: Tables a migration rebuilds, by migration version.
TABLE_REPLACEMENTS: dict[int, TableReplacement] = {
    8: TableReplacement("events_store", "events_store_0008", "events_store_before_0008"),
}


def local_table(name: str, cluster: str | None) -> str:
    """The table that holds the rows: ``name`` on one server, ``name_local`` on a cluster."""
    return quote_identifier(name if cluster is None else f"{name}_local")


def _on_cluster(cluster: str | None) -> str:
    return "" if cluster is None else f" ON CLUSTER {quote_identifier(cluster)}"


_CREATE_TABLE = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (?P<db>`\w+`)\.(?P<name>\w+)(?P<as>\s+AS\s+`\w+`\.\w+)?",
    re.I,
)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(?P<engine>\w*MergeTree)\b", re.I)
_ORDER_BY = re.compile(r"\bORDER BY\s+(?P<key>[^\n]+?)\s*(?:\bSETTINGS\b|$)", re.M | re.I)
_ALTER = re.compile(r"^ALTER TABLE (?P<db>`\w+`)\.(?P<name>\w+)(?P<rest>\s.*)$", re.S | re.I)
_VIEW = re.compile(r"^CREATE OR REPLACE VIEW (?P<db>`\w+`)\.(?P<name>\w+)\s+AS\s", re.I)
_TRAILING_SETTINGS = re.compile(r"\bSETTINGS\s+[^()]*$", re.I)


def cluster_statements(statement: str, cluster: str) -> list[str]:
    """One single-server statement as the statements that do the same on ``cluster``.

    ``CREATE TABLE`` gives a replicated ``<name>_local`` table and the ``Distributed``
    ``<name>`` over it; ``ALTER TABLE ... ADD/MODIFY COLUMN`` alters both (other
    alterations, such as indexes, only the local table); a view is created on every
    node and joins ``GLOBAL``ly. Replicated tables use the server's
    ``default_replica_path`` and ``default_replica_name`` (``{shard}`` and ``{replica}``
    macros), so every node needs them. Raises ``ValueError`` on a statement it cannot
    render, so a new kind of statement is noticed in the tests, not on a cluster.
    """
    on = _on_cluster(cluster)
    create = _CREATE_TABLE.match(statement)
    if create:
        db, name = create["db"], create["name"]
        engine = _ENGINE.search(statement)
        order = _ORDER_BY.search(statement)
        if engine is None or order is None:
            raise ValueError(
                f"cannot render for a cluster (no MergeTree engine or ORDER BY): {name}"
            )
        head = f"CREATE TABLE IF NOT EXISTS {db}.{local_table(name, cluster)}{on}"
        if create["as"]:
            source_db, source = create["as"].split()[1].split(".")
            head += f" AS {source_db}.{local_table(source, cluster)}"
        local = head + statement[create.end() :]
        if not engine["engine"].lower().startswith("replicated"):
            local = _ENGINE.sub(f"ENGINE = Replicated{engine['engine']}", local, count=1)
        key = order["key"].strip()
        key = key[1:-1] if key.startswith("(") and key.endswith(")") else key
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {db}.{quote_identifier(name)}{on} AS "
            f"{db}.{local_table(name, cluster)} ENGINE = Distributed({quote_identifier(cluster)}, "
            f"{db}, {local_table(name, cluster)}, cityHash64({key}))"
        )
        return [local, distributed]
    alter = _ALTER.match(statement)
    if alter:
        db, name, rest = alter["db"], alter["name"], alter["rest"]
        local = f"ALTER TABLE {db}.{local_table(name, cluster)}{on}{rest}"
        if re.match(r"\s*(ADD|MODIFY|DROP|RENAME|COMMENT) COLUMN\b", rest, re.I):
            return [local, f"ALTER TABLE {db}.{quote_identifier(name)}{on}{rest}"]
        return [local]
    view = _VIEW.match(statement)
    if view:
        body = statement[view.end() :].rstrip()
        if _TRAILING_SETTINGS.search(body):
            body += ", distributed_product_mode = 'global'"
        else:
            body += "\nSETTINGS distributed_product_mode = 'global'"
        return [
            f"CREATE OR REPLACE VIEW {view['db']}.{quote_identifier(view['name'])}{on} AS {body}"
        ]
    if re.match(r"^CREATE DATABASE IF NOT EXISTS `\w+`$", statement, re.I):
        return [statement + on]
    raise ValueError(f"cannot render for a cluster: {statement[:80]!r}")


def migrations() -> list[Migration]:
    """Every migration shipped with this version, oldest first."""
    found = []
    for entry in resources.files("schemas").joinpath("migrations").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..N without gaps, found {versions}")
    return found
