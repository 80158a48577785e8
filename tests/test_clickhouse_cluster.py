"""The schema on a ClickHouse cluster: the same migration files, rendered for it.

The engine the tests use has no keeper, so it cannot run ``ON CLUSTER`` or replicated
tables; it parses and formats every rendered statement, which catches any statement
ClickHouse would refuse to read. The rest is checked against the single-server files:
each table replicated and distributed under its own name, sharded so that the copies of
a row meet, each view on every node, each column change on both tables.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest
from chdb import session

from schemas.clickhouse import (
    TABLE_COLUMNS,
    TABLE_REPLACEMENTS,
    cluster_statements,
    migrations,
)
from sinks.migrations import setup_statements

CLUSTER = "touchpoint_cluster"
DB = "touchpoints"

#: What today's deployments applied (their schema_migrations holds these checksums).
APPLIED = {
    1: "90098761416c6582e56b8313d1091a19e30b2c7259e2f6cebe35a0265a3f55b0",
    2: "1287f676fe60c2b8336a3c7fcec7868fa7d209cda80fd5bbb1e441fae8bfcbe0",
    3: "cfb973f5ce6f8882bf983c4d5f86b95349a825c92a4e4b2dc06048c2facb48a4",
    4: "973e96f1a59c533d617e4abae72d8659e1349bb6926d8d855ee171ebd62dd4ba",
    5: "0b4d17aa493640fc2a09b08583acfc6e0b33ae9007589282562315570f79cf77",
    6: "0f822a773a8e40edd2640a55f1e523c86a517df56442bd902648991e611462d8",
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[session.Session]:
    engine = session.Session(str(tmp_path_factory.mktemp("chdb")))
    yield engine
    engine.close()


def every_statement(cluster: str | None) -> list[str]:
    statements = setup_statements(DB, cluster)
    statements += [s for m in migrations() for s in m.statements(DB, cluster)]
    for move in TABLE_REPLACEMENTS.values():
        statements += [
            move.rename(DB, cluster),
            move.rename(DB, cluster, first_done=True),
            move.copy(DB, cluster),
            move.drop(move.retired, DB, cluster),
        ]
    return statements


def formatted(engine: session.Session, statement: str) -> str:
    literal = statement.replace("\\", "\\\\").replace("'", "\\'")
    return str(engine.query(f"SELECT formatQuery('{literal}')", "TabSeparatedRaw")).strip()


def test_every_rendered_statement_is_read_by_the_clickhouse_engine(
    engine: session.Session,
) -> None:
    statements = every_statement(CLUSTER)
    for statement in statements:
        text = formatted(engine, statement)
        if not statement.startswith(("INSERT", "RENAME", "DROP")):
            assert f"ON CLUSTER {CLUSTER}" in text, statement[:120]
    assert len(statements) > len(every_statement(None))  # tables come in pairs


def test_a_syntax_error_is_caught_by_the_same_check(engine: session.Session) -> None:
    with pytest.raises(Exception, match="Syntax error"):
        formatted(engine, "CREATE TABLE t ON CLUSTER c (a Int32) ENGINE = MergeTree ORDER BY (a")


def test_every_table_is_replicated_locally_and_distributed_under_its_own_name() -> None:
    statements = every_statement(CLUSTER)
    local = {
        m["name"]: m["engine"]
        for s in statements
        if (
            m := re.match(
                r"CREATE TABLE IF NOT EXISTS `\w+`\.`(?P<name>\w+)_local`.*?ENGINE = (?P<engine>\w+)",
                s,
                re.S,
            )
        )
    }
    distributed = {
        m["name"]: m["key"]
        for s in statements
        if (
            m := re.search(
                r"`(?P<name>\w+)` ON CLUSTER .*Distributed\(.*cityHash64\((?P<key>.+)\)\)$", s
            )
        )
    }
    assert set(TABLE_COLUMNS) | {"schema_migrations"} <= set(local)
    assert set(local) == set(distributed)
    assert all(engine.startswith("Replicated") for engine in local.values())
    assert distributed["events_store"] == "event_id"
    assert distributed["events_store_0008"] == "toDate(occurred_at), channel, event_id"
    assert distributed["customer_aliases_store"] == "identifier_kind, identifier_value"
    assert distributed["scores_store"] == "stitch_offset, first_event_id"


def test_the_shards_are_keyed_by_the_sorting_key_so_copies_of_a_row_meet() -> None:
    for migration in migrations():
        for statement in migration.statements(DB):
            order = re.search(r"ORDER BY (.+)$", statement, re.M)
            if not statement.startswith("CREATE TABLE") or order is None:
                continue
            key = order.group(1).strip().removeprefix("(").removesuffix(")")
            (distributed,) = [
                s for s in cluster_statements(statement, CLUSTER) if "Distributed" in s
            ]
            assert distributed.endswith(f"cityHash64({key}))")


def test_views_are_on_every_node_and_join_distributed_tables_globally() -> None:
    views = [s for s in every_statement(CLUSTER) if s.startswith("CREATE OR REPLACE VIEW")]
    assert len(views) >= 15
    for view in views:
        assert re.search(r"SETTINGS .*distributed_product_mode = 'global'$", view), view[-200:]
    (events,) = [v for v in views if "`events` ON CLUSTER" in v and "events_store AS e FINAL" in v][
        -1:
    ]
    assert events.endswith("SETTINGS join_use_nulls = 0, distributed_product_mode = 'global'")


def test_a_column_change_alters_both_tables_and_an_index_only_the_local_one() -> None:
    add_column = "ALTER TABLE `db`.events_store\n    ADD COLUMN IF NOT EXISTS x String"
    assert [s.split(" ON ")[0] for s in cluster_statements(add_column, CLUSTER)] == [
        "ALTER TABLE `db`.`events_store_local`",
        "ALTER TABLE `db`.`events_store`",
    ]
    add_index = "ALTER TABLE `db`.events_store\n    ADD INDEX IF NOT EXISTS i x TYPE set(0)"
    (only,) = cluster_statements(add_index, CLUSTER)
    assert only.startswith("ALTER TABLE `db`.`events_store_local` ON CLUSTER")


def test_a_statement_the_renderer_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot render"):
        cluster_statements("OPTIMIZE TABLE `db`.events_store FINAL", CLUSTER)


def test_one_server_gets_the_files_as_they_are_and_applied_files_are_unchanged() -> None:
    """Existing deployments recorded these checksums: an edit would report CHANGED."""
    found = {m.version: m for m in migrations()}
    for version, checksum in APPLIED.items():
        assert found[version].checksum == checksum
        assert hashlib.sha256(found[version].sql.encode()).hexdigest() == checksum
        text = "\n".join(
            line for line in found[version].sql.splitlines() if not line.lstrip().startswith("--")
        )
        assert found[version].statements(DB) == [
            part.strip().replace("{database}", f"`{DB}`")
            for part in text.split(";")
            if part.strip()
        ]
