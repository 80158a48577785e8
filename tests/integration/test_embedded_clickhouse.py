"""The embedded ClickHouse behaves like a ClickHouse server for its HTTP clients."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

pytestmark = pytest.mark.integration

ROWS = 60_000  # several Native blocks: clickhouse-connect compresses each on its own


@pytest.mark.parametrize("compression", ["lz4", "zstd", "gzip", False])
async def test_large_inserts_store_every_block_whatever_the_compression(
    clickhouse_server: Any, clickhouse_database: str, compression: str | bool
) -> None:
    client = await clickhouse_connect.get_async_client(
        dsn=clickhouse_server.url, autogenerate_session_id=False, compress=compression
    )
    try:
        await client.command(
            f"CREATE TABLE {clickhouse_database}.t (a UInt64, s String) "
            "ENGINE = MergeTree ORDER BY a"
        )
        await client.insert(
            "t",
            [list(range(ROWS)), [f"row-{i}" for i in range(ROWS)]],
            column_names=["a", "s"],
            database=clickhouse_database,
            column_oriented=True,
        )
        result = await client.query(f"SELECT count(), sum(a) FROM {clickhouse_database}.t")
        assert result.result_rows == [(ROWS, ROWS * (ROWS - 1) // 2)]
    finally:
        await client.close()


def test_typed_values_round_trip_through_the_sync_client(
    clickhouse_server: Any, clickhouse_database: str
) -> None:
    client = clickhouse_connect.get_client(dsn=clickhouse_server.url, autogenerate_session_id=False)
    client.command(
        f"CREATE TABLE {clickhouse_database}.typed (at DateTime64(3, 'UTC'), "
        "m Map(LowCardinality(String), String), n Nullable(Float64), tags Array(String), "
        "raw String) ENGINE = MergeTree ORDER BY at"
    )
    at = datetime(2026, 11, 22, 9, 30, 15, 123000, tzinfo=UTC)
    client.insert(
        "typed",
        [(at, {"region": "eu"}, None, ["a", "b"], b"\xff\x00")],
        column_names=["at", "m", "n", "tags", "raw"],
        database=clickhouse_database,
    )
    rows = client.query(
        f"SELECT at, m, n, tags, hex(raw) FROM {clickhouse_database}.typed"
    ).result_rows
    stored_at = rows[0][0]
    assert stored_at.replace(tzinfo=stored_at.tzinfo or UTC) == at
    assert rows[0][1:] == ({"region": "eu"}, None, ["a", "b"], "FF00")
    client.close()


def test_a_retried_insert_with_the_same_token_is_stored_once(
    clickhouse_server: Any, clickhouse_database: str
) -> None:
    client = clickhouse_connect.get_client(dsn=clickhouse_server.url, autogenerate_session_id=False)
    client.command(
        f"CREATE TABLE {clickhouse_database}.d (a UInt64) ENGINE = MergeTree ORDER BY a "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    for token in ("same", "same", "other"):
        client.insert(
            "d",
            [[1, 2, 3]],
            column_names=["a"],
            database=clickhouse_database,
            column_oriented=True,
            settings={"insert_deduplication_token": token},
        )
    assert client.query(f"SELECT count() FROM {clickhouse_database}.d").result_rows == [(6,)]
    # the token applies to its own request only
    assert client.query("SELECT getSetting('insert_deduplication_token')").result_rows == [("",)]
    client.close()


def test_errors_carry_the_server_message_and_code(clickhouse_server: Any) -> None:
    client = clickhouse_connect.get_client(dsn=clickhouse_server.url, autogenerate_session_id=False)
    with pytest.raises(DatabaseError, match="UNKNOWN_DATABASE"):
        client.query("SELECT * FROM no_such_database.no_such_table")
    client.close()
    response = httpx.post(clickhouse_server.url, content=b"SELEC 1")
    assert response.status_code == 500
    assert response.headers["x-clickhouse-exception-code"] == "62"
    assert response.text.startswith("Code: 62. DB::Exception")


def test_plain_http_works_like_a_clickhouse_server(clickhouse_server: Any) -> None:
    url = clickhouse_server.url
    assert httpx.get(f"{url}/ping").text == "Ok.\n"
    assert httpx.get(url, params={"query": "SELECT 1 + 1"}).text == "2\n"
    assert httpx.post(url, content=b"SELECT 40 + 2 AS x FORMAT JSONEachRow").json() == {"x": 42}
    answer = httpx.post(url, params={"query": "SELECT number FROM numbers(3)"}, content=b"")
    assert answer.text == "0\n1\n2\n"
    assert answer.headers["x-clickhouse-format"] == "TabSeparated"
