"""The real ClickHouse engine, served over the ClickHouse HTTP interface, for the session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest

from streams.embedded.clickhouse import EmbeddedClickHouse

__all__ = ["clickhouse_database", "clickhouse_server"]


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
