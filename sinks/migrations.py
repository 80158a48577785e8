"""Applying the ClickHouse schema: ``touchpoint migrate`` and every worker start.

Which versions are applied is recorded in ``schema_migrations``. Statements are
idempotent, so concurrent runs converge; a migration whose file changed after it was
applied is reported, not re-run (write a new migration instead).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from schemas.clickhouse import Migration, migrations, quote_identifier

__all__ = ["MigrationReport", "SchemaClient", "migrate"]

logger = logging.getLogger(__name__)


class SchemaClient(Protocol):
    """The part of clickhouse-connect's async client that migrations use."""

    async def command(self, cmd: str, settings: dict[str, Any] | None = None) -> Any: ...

    async def query(self, query: str) -> Any: ...


@dataclass(frozen=True)
class MigrationReport:
    """What a run did: versions applied now, versions already there, edited ones."""

    applied: tuple[int, ...]
    already_applied: tuple[int, ...]
    changed: tuple[int, ...]


async def migrate(client: SchemaClient, database: str) -> MigrationReport:
    """Create ``database`` if needed and apply every migration not yet recorded."""
    db = quote_identifier(database)
    await client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    await client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    result = await client.query(f"SELECT version, checksum FROM {db}.schema_migrations FINAL")
    recorded = {int(row[0]): str(row[1]) for row in result.result_rows}
    applied: list[int] = []
    already: list[int] = []
    changed: list[int] = []
    for migration in migrations():
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
        await _apply(client, database, migration)
        applied.append(migration.version)
    return MigrationReport(tuple(applied), tuple(already), tuple(changed))


async def _apply(client: SchemaClient, database: str, migration: Migration) -> None:
    logger.info("applying migration %04d_%s", migration.version, migration.name)
    for statement in migration.statements(database):
        await client.command(statement)
    applied_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    await client.command(
        f"INSERT INTO {quote_identifier(database)}.schema_migrations VALUES "
        f"({migration.version}, '{migration.name}', '{migration.checksum}', '{applied_at}')",
        settings={"async_insert": 0},
    )
