"""The events table's layout on the real ClickHouse engine: a fresh database and an
existing one both end with the lookup sorting key, an existing one keeps its rows and
reports no changed migration, an interrupted move finishes, and the analysts' lookups
read only the granules they need (shown by EXPLAIN)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.clickhouse import TABLE_REPLACEMENTS, migrations
from sinks.migrations import migrate

pytestmark = pytest.mark.integration

LOOKUP_KEY = "toDate(occurred_at), channel, event_id"
#: The version that rebuilt events_store; every version before it is today's schema.
REBUILD = next(v for v, r in TABLE_REPLACEMENTS.items() if r.table == "events_store")
BEFORE_REBUILD = max(m.version for m in migrations() if m.version < REBUILD)


async def tables(client: Any, database: str) -> dict[str, str]:
    result = await client.query(
        "SELECT name, sorting_key FROM system.tables WHERE database = {db:String} "
        "AND name LIKE 'events_store%'",
        parameters={"db": database},
    )
    return {str(n): str(k) for n, k in result.result_rows}


async def scalar(client: Any, sql: str) -> Any:
    return (await client.query(sql)).result_rows[0][0]


async def insert_events(
    client: Any, database: str, rows: int, *, days: int = 30, customers: int = 5000, of: int = 0
) -> None:
    """The first ``rows`` of ``of`` (default ``rows``) events spread over ``days`` days,
    four channels and ``customers`` customers; event ``e<n>`` is the same event whatever
    ``rows`` is (a second call sends copies, as a replay does)."""
    await client.command(
        f"INSERT INTO {database}.events_store (event_id, occurred_at, client_occurred_at, "
        "received_at, channel, type, customer_id, properties, source_topic) "
        "SELECT concat('e', toString(number)), "
        f"toDateTime64('2026-10-01', 3, 'UTC') + toIntervalSecond(number * {days * 86400} "
        f"DIV {of or rows}), "
        "now64(3), now64(3), ['web', 'sms', 'email', 'chat'][1 + number % 4], 'page_view', "
        f"concat('c_', toString(intHash32(number) % {customers})), '{{}}', 'touchpoints.web' "
        f"FROM numbers({rows})",
        settings={"async_insert": 0},
    )


async def test_a_fresh_database_gets_the_lookup_layout_and_nothing_left_behind(
    clickhouse_client: Any, clickhouse_database: str
) -> None:
    """``clickhouse_client`` migrated the database already."""
    assert await tables(clickhouse_client, clickhouse_database) == {"events_store": LOOKUP_KEY}
    indexes = await clickhouse_client.query(
        "SELECT name, type FROM system.data_skipping_indices "
        "WHERE database = {db:String} AND table = 'events_store'",
        parameters={"db": clickhouse_database},
    )
    assert ("customer_id_bloom", "bloom_filter") in indexes.result_rows
    again = await migrate(clickhouse_client, clickhouse_database)
    assert again.applied == () and again.changed == ()


async def test_an_existing_deployment_keeps_every_row_and_sees_no_changed_migration(
    clickhouse_server: Any, clickhouse_database: str
) -> None:
    import clickhouse_connect

    client = await clickhouse_connect.get_async_client(
        dsn=clickhouse_server.url, autogenerate_session_id=False
    )
    db = clickhouse_database
    try:
        before = await migrate(client, db, target=BEFORE_REBUILD)  # today's deployment
        assert REBUILD not in before.applied
        assert (await tables(client, db))["events_store"] == "event_id"
        await insert_events(client, db, 20_000)
        await insert_events(client, db, 500, of=20_000)  # a replay: copies of 500 events
        assert await scalar(client, f"SELECT count() FROM {db}.events") == 20_000

        report = await migrate(client, db)
        assert REBUILD in report.applied
        assert report.changed == ()
        assert await tables(client, db) == {"events_store": LOOKUP_KEY}
        assert await scalar(client, f"SELECT count() FROM {db}.events") == 20_000
        assert await scalar(client, f"SELECT uniqExact(event_id) FROM {db}.events") == 20_000
    finally:
        await client.close()


@pytest.mark.parametrize("interrupted_after", ["both_renames", "first_rename"])
async def test_a_move_interrupted_half_way_finishes_at_the_next_run(
    clickhouse_server: Any, clickhouse_database: str, interrupted_after: str
) -> None:
    import clickhouse_connect

    client = await clickhouse_connect.get_async_client(
        dsn=clickhouse_server.url, autogenerate_session_id=False
    )
    db = clickhouse_database
    move = TABLE_REPLACEMENTS[REBUILD]
    try:
        await migrate(client, db, target=BEFORE_REBUILD)
        await insert_events(client, db, 3000)
        (rebuild,) = [m for m in migrations() if m.version == REBUILD]
        for statement in rebuild.statements(db):
            await client.command(statement)
        if interrupted_after == "both_renames":
            await client.command(move.rename(db, None))
        else:
            await client.command(f"RENAME TABLE {db}.{move.table} TO {db}.{move.retired}")
        report = await migrate(client, db)
        assert REBUILD in report.applied
        assert await tables(client, db) == {"events_store": LOOKUP_KEY}
        assert await scalar(client, f"SELECT count() FROM {db}.events") == 3000
    finally:
        await client.close()


async def explain(client: Any, sql: str) -> str:
    result = await client.query(f"EXPLAIN indexes = 1 {sql}")
    return "\n".join(str(row[0]) for row in result.result_rows)


def read_granules(plan: str, table: str) -> tuple[int, int]:
    """Granules the plan reads from ``table`` after every index, and the table's total."""
    lines = [line.strip(" │├└─") for line in plan.splitlines()]
    start = next(i for i, line in enumerate(lines) if line == f"ReadFromMergeTree ({table})")
    read = total = None
    for line in lines[start + 1 :]:
        if read is None and line.startswith("Parts:") and "| Granules:" in line:
            read = int(line.rsplit(":", 1)[1])
        elif total is None and line.startswith("Granules:") and "/" in line:
            total = int(line.split("/")[1])
        if read is not None and total is not None:
            return read, total
    raise AssertionError(f"no granules for {table}:\n{plan}")


async def test_a_day_of_a_channel_and_a_customer_read_only_their_granules(
    clickhouse_client: Any, clickhouse_database: str
) -> None:
    db = clickhouse_database
    # a customer has a few touchpoints over the month, as most real ones do
    await insert_events(clickhouse_client, db, 1_000_000, customers=500_000)
    await clickhouse_client.command(f"OPTIMIZE TABLE {db}.events_store FINAL")
    # c_7 was merged into c_42: its events belong to c_42 now
    await clickhouse_client.command(
        f"INSERT INTO {db}.customer_redirects_store VALUES ('c_7', 'c_42', 1)",
        settings={"async_insert": 0},
    )

    day = await explain(
        clickhouse_client,
        f"SELECT count() FROM {db}.events WHERE occurred_at >= '2026-10-10 00:00:00' "
        "AND occurred_at < '2026-10-11 00:00:00' AND channel = 'sms'",
    )
    assert "Keys:\n" in day and "toDate(occurred_at)" in day  # the sorting key serves it
    read, total = read_granules(day, f"{db}.events_store")
    assert total >= 100 and read * 20 <= total, day  # one day of one channel of 30 days

    customer = await explain(
        clickhouse_client, f"SELECT * FROM {db}.customer_events(customer_id = 'c_42')"
    )
    assert "customer_id_bloom" in customer
    read, total = read_granules(customer, f"{db}.events_store")
    assert read * 4 <= total, customer

    for who in ("c_42", "c_7", "c_1234"):
        through_view = await clickhouse_client.query(
            f"SELECT event_id, customer_id FROM {db}.events WHERE customer_id = '{who}' "
            "ORDER BY event_id"
        )
        served = await clickhouse_client.query(
            f"SELECT event_id, customer_id FROM {db}.customer_events(customer_id = '{who}') "
            "ORDER BY event_id"
        )
        assert served.result_rows == through_view.result_rows, who
    merged = await scalar(
        clickhouse_client, f"SELECT count() FROM {db}.customer_events(customer_id = 'c_42')"
    )
    own = await scalar(
        clickhouse_client, f"SELECT countIf(customer_id IN ('c_42', 'c_7')) FROM {db}.events_store"
    )
    assert merged == own > 0
