"""Memory bounds of the worker's local state: bounded RocksDB options on every table,
and records waiting for their changelog send held at their own size."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import orjson
import pytest

from streams.runtime.app import create_worker
from streams.runtime.state import write_local
from streams.settings import Settings

MIB = 1024 * 1024


@pytest.mark.parametrize(("cache_mib", "buffer_mib"), [(None, None), (64, 16)])
def test_every_table_bounds_its_rocksdb_caches_and_write_buffers(
    tmp_path: Path, cache_mib: int | None, buffer_mib: int | None
) -> None:
    """Faust's defaults reserve up to 2 GiB of block cache and 192 MB of write buffers
    per partition's database; the ingest duplicate window once kept them."""
    extra = {}
    if cache_mib is not None:
        extra = {"state_block_cache_mib": cache_mib, "state_write_buffer_mib": buffer_mib}
    worker = create_worker(Settings(data_dir=tmp_path, **extra), ("touchpoints.web",))
    tables = list(worker.app.tables.values())
    assert len(tables) >= 4
    for table in tables:
        options = table.options or {}
        assert options.get("block_cache_size") == (cache_mib or 8) * MIB, table.name
        assert options.get("write_buffer_size") == (buffer_mib or 8) * MIB, table.name
        assert options.get("max_write_buffer_number") == 2, table.name


def test_records_waiting_for_the_changelog_are_held_at_their_own_size(tmp_path: Path) -> None:
    """orjson's output keeps a buffer of at least 4 KiB whatever its length; a backlog of
    small keys and values waiting for their send was most of a worker's memory
    (2.5 GiB for 300,000 customers)."""
    worker = create_worker(Settings(data_dir=tmp_path), ("touchpoints.web",))
    table = worker.resolver_table
    n = 2000
    items = [(f"n/email:user{i}@example.com", orjson.dumps([f"c{i}", i])) for i in range(n)]
    tracemalloc.start()
    try:
        encoded = write_local(table, 0, items)
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(encoded) == n
    assert encoded[0] == (b'"n/email:user0@example.com"', b'["c0",0]')
    # about 100 bytes per key and per value; orjson's own buffers would hold 16 MB
    assert held < n * 400, held
    assert table.data._db_for_partition(0).get(encoded[-1][0]) == encoded[-1][1]
