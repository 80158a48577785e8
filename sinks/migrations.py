"""Applying the ClickHouse schema: ``touchpoint migrate`` and every worker start.

Which versions are applied is recorded in ``schema_migrations``. Statements are
idempotent, so concurrent runs converge; a migration whose file changed after it was
applied is reported, not re-run (write a new migration instead). A migration that
rebuilds a table (``TABLE_REPLACEMENTS``) moves its rows after its statements, in steps
that each check the state first, so an interrupted move finishes at the next run.

With a ``cluster``, every statement is rendered for it (``schemas.clickhouse``):
replicated tables ``ON CLUSTER`` behind Distributed tables of the same names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from schemas.clickhouse import (
    Migration,
    TableReplacement,
    cluster_statements,
    local_table,
    migrations,
    quote_identifier,
)

__all__ = ["MigrationReport", "SchemaClient", "migrate", "setup_statements"]

logger = logging.getLogger(__name__)

#: How long a table move waits for inserts that began before its rename.
INSERT_DRAIN_S = 60.0


class SchemaClient(Protocol):
    """The part of clickhouse-connect's async client that migrations use."""

    async def command(
        self, cmd: str, parameters: Any = None, settings: dict[str, Any] | None = None
    ) -> Any: ...

    async def query(self, query: str, parameters: Any = None) -> Any: ...


@dataclass(frozen=True)
class MigrationReport:
    """What a run did: versions applied now, versions already there, edited ones."""

    applied: tuple[int, ...]
    already_applied: tuple[int, ...]
    changed: tuple[int, ...]


def setup_statements(database: str, cluster: str | None = None) -> list[str]:
    """The database and the table that records applied migrations (for ``cluster``)."""
    db = quote_identifier(database)
    statements = [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY version",
    ]
    if cluster is None:
        return statements
    return [out for statement in statements for out in cluster_statements(statement, cluster)]


async def migrate(
    client: SchemaClient,
    database: str,
    *,
    cluster: str | None = None,
    target: int | None = None,
) -> MigrationReport:
    """Create ``database`` if needed and apply every migration not yet recorded (up to
    and including ``target``, when given); on ``cluster``, for every node of it."""
    db = quote_identifier(database)
    for statement in setup_statements(database, cluster):
        await client.command(statement)
    result = await client.query(f"SELECT version, checksum FROM {db}.schema_migrations FINAL")
    recorded = {int(row[0]): str(row[1]) for row in result.result_rows}
    applied: list[int] = []
    already: list[int] = []
    changed: list[int] = []
    for migration in migrations():
        if target is not None and migration.version > target:
            break
        if migration.version in recorded:
            already.append(migration.version)
            if recorded[migration.version] != migration.checksum:
                changed.append(migration.version)
                logger.warning(
                    "migration %04d_%s changed after it was applied; add a new migration instead",
                    migration.version,
                    migration.name,
                )
            continue
        await _apply(client, database, migration, cluster)
        applied.append(migration.version)
    return MigrationReport(tuple(applied), tuple(already), tuple(changed))


async def _apply(
    client: SchemaClient, database: str, migration: Migration, cluster: str | None
) -> None:
    logger.info("applying migration %04d_%s", migration.version, migration.name)
    move = migration.replacement
    if move is not None:  # finish a move an earlier run began, before its SQL reads the table
        await _replace_table(client, database, move, cluster)
    for statement in migration.statements(database, cluster):
        await client.command(statement)
    if move is not None:
        await _replace_table(client, database, move, cluster)
    applied_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    await client.command(
        f"INSERT INTO {quote_identifier(database)}.schema_migrations VALUES "
        f"({migration.version}, '{migration.name}', '{migration.checksum}', '{applied_at}')",
        # on a cluster the next reader must find the row on its shard at once
        settings={"async_insert": 0, **({"distributed_foreground_insert": 1} if cluster else {})},
    )


async def _sorting_keys(client: SchemaClient, database: str, names: list[str]) -> dict[str, str]:
    result = await client.query(
        "SELECT name, sorting_key FROM system.tables "
        "WHERE database = {db:String} AND has({names:Array(String)}, name)",
        parameters={"db": database, "names": names},
    )
    return {str(name): str(key) for name, key in result.result_rows}


async def _replace_table(
    client: SchemaClient, database: str, move: TableReplacement, cluster: str | None
) -> None:
    """Rename the new layout in, then move the retired table's rows (see
    :class:`~schemas.clickhouse.TableReplacement`)."""

    def name(table: str) -> str:
        return local_table(table, cluster).strip("`")

    table, staging, retired = name(move.table), name(move.staging), name(move.retired)
    keys = await _sorting_keys(client, database, [table, staging, retired])
    renamed_at = time.monotonic()
    if staging in keys and keys.get(table) != keys[staging]:
        statement = move.rename(database, cluster, first_done=table not in keys)
        try:
            await client.command(statement)
            logger.info("%s now has the layout of %s; moving its rows", move.table, move.staging)
        except Exception as exc:  # another worker renamed first: its move goes on
            keys = await _sorting_keys(client, database, [table, staging])
            if staging in keys:
                raise
            logger.info("another run renamed %s first (%s)", move.table, exc)
    elif staging in keys:  # a rerun created it again after the rename: nothing uses it
        await client.command(
            move.drop(
                move.staging if cluster is None else f"{move.staging}_local", database, cluster
            )
        )
    if cluster is not None:  # the staging table's Distributed companion points nowhere now
        await client.command(move.drop(move.staging, database, cluster))
    if retired in await _sorting_keys(client, database, [retired]):
        await _drain_inserts(client, move.table, cluster, since=renamed_at)
        await client.command(
            move.copy(database, cluster),
            settings={
                "async_insert": 0,
                **({"distributed_foreground_insert": 1} if cluster else {}),
            },
        )
        await client.command(
            move.drop(
                move.retired if cluster is None else f"{move.retired}_local", database, cluster
            )
        )
        logger.info("rows of %s moved; %s dropped", move.table, move.retired)


async def _drain_inserts(
    client: SchemaClient, table: str, cluster: str | None, since: float
) -> None:
    """Wait until no insert into ``table`` that began before the rename is running: it
    writes into the retired table, and its rows must be there before they are copied."""
    processes = (
        "system.processes"
        if cluster is None
        else f"clusterAllReplicas('{cluster}', system.processes)"
    )
    deadline = time.monotonic() + INSERT_DRAIN_S
    while time.monotonic() < deadline:
        running = await client.query(
            f"SELECT count() FROM {processes} WHERE query_kind = 'Insert' "
            "AND positionCaseInsensitive(query, {table:String}) > 0 "
            "AND elapsed >= {seconds:Float64}",
            parameters={"table": table, "seconds": time.monotonic() - since},
        )
        if not running.result_rows[0][0]:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(
        f"inserts into {table} that began before its rebuild are still running after "
        f"{INSERT_DRAIN_S:g} s; run `touchpoint migrate` again once they end"
    )
