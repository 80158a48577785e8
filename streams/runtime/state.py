"""Write many keys of a Faust table at once: one RocksDB write batch, changelog record batches.

A Faust table write (``table[key] = value``) stores the value and sends one changelog
record through Faust's producer buffer with a callback per record; that costs about as
much as stitching the event itself. The stitch agent writes every key a batch touched,
so it writes them together: the values go to the table's RocksDB store in one write
batch (:func:`write_local`) and to the table's changelog as a few Kafka record batches
(:func:`send_changelog`). The two steps are apart so that the caller can hold the
changelog back until what the batch produced elsewhere is durable.

What a reader, a restart and a rebalance see is what Faust's own writes would give:

* the bytes stored and sent are the table's own encoding of key and value, and Faust's
  changelog recovery copies records into the store byte for byte;
* the changelog records are sent with the producer Faust flushes before every offset
  commit, so no commit passes a state change that is not in the changelog;
* the store remembers the last changelog offset written (as Faust does per record), so
  a restart reads only the changelog written after it.

A changelog send that fails crashes the worker: committing after it would leave state
that a restart could not rebuild.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
from collections.abc import Sequence
from typing import Any

__all__ = ["exact", "reset_local", "send_changelog", "write_local"]

logger = logging.getLogger(__name__)
_crashing: set[asyncio.Future[Any]] = set()


def write_local(
    table: Any, partition: int, items: Sequence[tuple[str, bytes | None]]
) -> list[tuple[bytes, bytes | None]]:
    """Write the keys to the table's local store now, in one RocksDB write batch, and
    return the encoded records :func:`send_changelog` must still send (none for the
    memory store, whose writes go through Faust with their changelog records)."""
    if not items:
        return []
    store = table.data
    if not hasattr(store, "_db_for_partition"):  # not RocksDB (the memory store, in tests)
        for key, value in items:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        return []

    import rocksdict

    db = store._db_for_partition(partition)
    encoded = []
    writes = rocksdict.WriteBatch(raw_mode=True)
    for key, value in items:
        # exact-size copies: the encoded records wait here for the batch's rows and sends,
        # and orjson's output (Faust's key codec, our values) keeps a buffer of at least
        # 4 KiB whatever its length; a backlog of them was most of a worker's memory
        key_bytes = exact(store._encode_key(key))
        value_bytes = None if value is None else exact(store._encode_value(value))
        if value_bytes is None:
            writes.delete(key_bytes)
        else:
            writes.put(key_bytes, value_bytes)
            store._key_index[key_bytes] = partition
        encoded.append((key_bytes, value_bytes))
    db.write(writes)
    return encoded


def exact(data: bytes) -> bytes:
    """``data`` in an allocation of its own length (see :func:`write_local`)."""
    return bytes(memoryview(data))


async def send_changelog(
    table: Any, partition: int, encoded: Sequence[tuple[bytes, bytes | None]]
) -> list[asyncio.Future[Any]]:
    """Send records :func:`write_local` wrote to the table's changelog, as few Kafka
    record batches as fit, through the producer Faust flushes before every commit."""
    if not encoded:
        return []
    store = table.data
    producer = table.app.producer._ensure_producer()  # the aiokafka producer Faust flushes
    topic = table.changelog_topic.get_topic_name()
    sends: list[asyncio.Future[Any]] = []
    batch = producer.create_batch()
    for key_bytes, value_bytes in encoded:
        if batch.append(key=key_bytes, value=value_bytes, timestamp=None) is None:
            sends.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            if batch.append(key=key_bytes, value=value_bytes, timestamp=None) is None:
                raise ValueError(f"a table value of {len(value_bytes or b'')} bytes is too large")
    sends.append(await producer.send_batch(batch, topic, partition=partition))
    sends[-1].add_done_callback(lambda done: _persisted(table, store, done))
    for send in sends:
        send.add_done_callback(lambda done: _check(table, done))
    return sends


def _persisted(table: Any, store: Any, done: asyncio.Future[Any]) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    metadata = done.result()
    store.set_persisted_offset(metadata.topic_partition, metadata.offset)


def _check(table: Any, done: asyncio.Future[Any]) -> None:
    error = None if done.cancelled() else done.exception()
    if done.cancelled() or error is not None:
        exc = error or asyncio.CancelledError("changelog send cancelled")
        logger.critical("writing the %s changelog failed, stopping: %s", table.name, exc)
        crash = asyncio.ensure_future(table.app.crash(exc))
        _crashing.add(crash)
        crash.add_done_callback(_crashing.discard)


def reset_local(table: Any, partition: int) -> bool:
    """Forget the local copy of one partition of the table: the next assignment restores
    it from the changelog (its persisted offset goes with it). Returns whether the copy
    was dropped; the memory store (tests) keeps no local copy apart from Faust's own.

    Used when local writes were made that the changelog will never have (a batch
    fenced off after its local write): restoring over such a store would keep them.
    """
    store = table.data
    if not hasattr(store, "_dbs"):
        return False
    db = store._dbs.pop(partition, None)
    if db is not None:
        db.close()
    del db
    gc.collect()
    for key in [k for k, p in store._key_index.items() if p == partition]:
        del store._key_index[key]
    shutil.rmtree(store.partition_path(partition), ignore_errors=True)
    logger.warning("local state of %s partition %d dropped", table.name, partition)
    return True
