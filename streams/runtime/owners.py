"""Partition owners: one object per assigned partition holds its state and what is in flight.

Every stage with state (the resolver, each customer partition, the score-drop
detector) keeps it in a changelogged Faust table co-partitioned with the topic it
reads. An :class:`Owner` is built when the partition is assigned to this worker and
dropped when it is revoked; it holds the partition's store access, whatever the stage
keeps in memory for it, and the chain of its batches on their way to durability. No
state outlives an owner: a partition that comes back gets a new one, loaded from the
table.

**Persisting a batch** (:meth:`Owner.persist`): the batch's state changes go to the
partition's local store at once (one RocksDB write batch), so the next batch reads
them; their changelog records are sent only once the batch's ClickHouse rows are
stored, its other records (items for other partitions, alerts, merges) acknowledged by
the broker, and every earlier batch of the partition persisted; then the batch is
acked. A worker that dies in between has sent nothing of the batch's state: whoever
takes the partition replays the batch from the state before it and writes every row
and record again (idempotent downstream).

**Fencing** (:meth:`Owner.fence`): once the partition is revoked, nothing of a batch
begun before reaches the changelog or is acked; a send already on its way is let
finish first. Batches written locally and never sent leave the local store ahead of
the changelog: it is reset, so the next assignment restores it from the changelog, the
truth every worker shares (a stop that leaves them has the store rebuilt at the next
start, ``streams.runtime.app.clean_run``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from streams.runtime.state import reset_local, send_changelog, write_local

__all__ = ["Fenced", "Owner", "PartitionStore"]

logger = logging.getLogger(__name__)


class Fenced(Exception):
    """The partition was revoked while a batch was being processed."""


def _no_op() -> None:
    return None


class PartitionStore:
    """Reads of one partition of a table, straight from its local store."""

    def __init__(self, table: Any, partition: int) -> None:
        self.table = table
        self.partition = partition
        self._store = table.data
        self._rocks = hasattr(self._store, "_db_for_partition")

    def get(self, key: str) -> Any:
        """The value of ``key`` in this partition, or None."""
        store = self._store
        if not self._rocks:  # the memory store (tests): one dict for every partition
            return self.table.get(key)
        raw = store._db_for_partition(self.partition).get(store._encode_key(key))
        return None if raw is None else store._decode_value(raw)

    def keys(self, prefix: str) -> Iterator[str]:
        """The keys of this partition that start with ``prefix``, in order."""
        store = self._store
        if not self._rocks:
            yield from sorted(k for k in self.table if isinstance(k, str) and k.startswith(prefix))
            return
        db = store._db_for_partition(self.partition)
        for raw in db.keys(from_key=store._encode_key(prefix)):
            if raw == store.offset_key:
                continue  # Faust's own record of the changelog offset, not a table key
            key = store._decode_key(raw)
            if not (isinstance(key, str) and key.startswith(prefix)):
                return  # keys are in order: past the prefix
            yield key


class Owner:
    """The state of one assigned partition, and its batches on their way to durability."""

    def __init__(
        self,
        table: Any,
        partition: int,
        spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]],
        crash: Callable[[BaseException], Awaitable[None]],
        revoke_wait_s: float,
    ) -> None:
        self.table = table
        self.partition = partition
        self.store = PartitionStore(table, partition)
        self.fenced = False
        #: batches written locally whose changelog records are not sent yet
        self.unsent = 0
        self._spawn = spawn
        self._crash = crash
        self._revoke_wait_s = revoke_wait_s
        self._chain: asyncio.Task[None] | None = None
        self._sending: asyncio.Future[None] | None = None

    def check(self) -> None:
        """Raise :class:`Fenced` once the partition was revoked."""
        if self.fenced:
            raise Fenced()

    def persist(
        self,
        items: Sequence[tuple[str, bytes | None]],
        *,
        after: asyncio.Event | None = None,
        sends: Sequence[Awaitable[Any]] = (),
        then: Callable[[], None] = _no_op,
    ) -> asyncio.Task[None]:
        """Write ``items`` to the local store now and to the changelog once ``after`` is
        set (the batch's rows are stored), every earlier batch is persisted and the
        broker has ``sends``; then call ``then`` (the ack). Raises :class:`Fenced`,
        writing nothing, once the partition was revoked."""
        self.check()
        encoded = write_local(self.table, self.partition, items)
        previous = self._chain
        self.unsent += 1

        async def send() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            if after is not None:
                await after.wait()
            if self.fenced:
                return  # revoked meanwhile: the next owner replays this batch
            self._sending = sending = asyncio.get_running_loop().create_future()
            try:
                # what the batch sent first: the state says it was sent (a replay from
                # the changelog skips what the state vouches for)
                await asyncio.gather(*sends)
                if self.fenced:
                    return
                written = await send_changelog(self.table, self.partition, encoded)
                await asyncio.gather(*written)
            except Exception as exc:  # committing after this would lose the state change
                logger.critical(
                    "persisting %s partition %d failed, stopping: %s",
                    self.table.name,
                    self.partition,
                    exc,
                )
                await self._crash(exc)
                return
            finally:
                sending.set_result(None)
                self._sending = None
            if self.fenced:
                return  # revoked while it went out: its offsets are the next owner's
            self.unsent -= 1
            then()

        self._chain = task = self._spawn(send())
        return task

    async def settled(self) -> None:
        """Wait until every batch persisted so far is (or was fenced)."""
        if self._chain is not None:
            await asyncio.wait([self._chain])

    async def fence(self, why: str) -> None:
        """No batch begun before now writes state or acks from here on (see the module
        docstring); reset the local store if batches were left unsent."""
        self.fenced = True
        if self._sending is not None:
            await asyncio.wait([self._sending], timeout=self._revoke_wait_s)
        self._chain = None
        if self.unsent:
            logger.warning(
                "%s with %d batches of %s partition %d not in the changelog; they are "
                "processed again by the next owner, and the local state is restored from "
                "the changelog",
                why,
                self.unsent,
                self.table.name,
                self.partition,
            )
            if reset_local(self.table, self.partition):
                self.unsent = 0
