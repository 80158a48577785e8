"""The real ClickHouse engine, served over the ClickHouse HTTP interface, for the session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from sinks.migrations import migrate
from streams.tools.embedded.clickhouse import EmbeddedClickHouse

__all__ = ["clickhouse_client", "clickhouse_database", "clickhouse_server"]


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedClickHouse]:
    server = EmbeddedClickHouse(Path(tmp_path_factory.mktemp("clickhouse")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clickhouse_database(clickhouse_server: EmbeddedClickHouse) -> Iterator[str]:
    """A fresh, uniquely named database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    client = clickhouse_connect.get_client(dsn=clickhouse_server.url, autogenerate_session_id=False)
    client.command(f"CREATE DATABASE {name}")
    yield name
    client.command(f"DROP DATABASE IF EXISTS {name}")
    client.close()


@pytest.fixture
async def clickhouse_client(
    clickhouse_server: EmbeddedClickHouse, clickhouse_database: str
) -> AsyncIterator[Any]:
    """An async client of the server, with the schema migrated in the test's database."""
    client = await clickhouse_connect.get_async_client(
        dsn=clickhouse_server.url, autogenerate_session_id=False
    )
    await migrate(client, clickhouse_database)
    yield client
    await client.close()
