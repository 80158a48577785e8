"""The duplicate window: which ``event_id`` values this worker has already accepted.

Pure and in memory; persistence is the caller's. Every batch the window *seals* the
event ids it accepted from one input partition into one chunk (a key and a JSON-able
value) that the worker writes to a changelogged table, co-partitioned with the input.
One table write per batch instead of one per event keeps state writes off the hot path;
after a restart or rebalance the chunks of a partition are loaded back with
:meth:`DuplicateWindow.load`.

A repeated ``event_id`` is a duplicate only when it arrives at *other* coordinates
(topic, partition, offset) than its first occurrence. The same coordinates mean the
same message delivered again after a crash (at-least-once replay): that is processed
again, idempotently, so nothing whose first delivery was not yet stored is lost.

Bounds, per input partition: chunks older than the window (by arrival time) expire,
and the oldest chunks expire while more than ``max_ids_per_partition`` ids are held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Chunk", "DuplicateWindow", "Sealed", "chunk_partition"]

Coordinates = tuple[str, int, int]


@dataclass(slots=True)
class Chunk:
    """The ids one batch of one input topic-partition accepted, with its arrival time (ms)."""

    key: str
    topic: str
    partition: int
    created_ms: int
    ids: list[tuple[str, int]]

    def to_value(self) -> dict[str, Any]:
        return {"topic": self.topic, "t": self.created_ms, "ids": [list(i) for i in self.ids]}

    @classmethod
    def from_value(cls, key: str, value: dict[str, Any]) -> Chunk:
        return cls(
            key=key,
            topic=str(value["topic"]),
            partition=chunk_partition(key),
            created_ms=int(value["t"]),
            ids=[(str(eid), int(off)) for eid, off in value["ids"]],
        )


@dataclass(frozen=True, slots=True)
class Sealed:
    """What the caller persists after a batch: a chunk to write, chunk keys to delete."""

    write: Chunk | None
    delete: tuple[str, ...]


def chunk_partition(key: str) -> int:
    """The input partition a chunk key belongs to (keys are ``partition/topic/first/last``)."""
    return int(key.split("/", 1)[0])


@dataclass
class DuplicateWindow:
    """Remembered event ids of the partitions this worker holds. Not thread-safe."""

    window_ms: int
    max_ids_per_partition: int
    _index: dict[str, Coordinates] = field(default_factory=dict)
    _chunks: dict[int, deque[Chunk]] = field(default_factory=dict)
    _held: dict[int, int] = field(default_factory=dict)
    _pending: dict[tuple[str, int], list[tuple[str, int]]] = field(default_factory=dict)

    def is_loaded(self, partition: int) -> bool:
        return partition in self._chunks

    def load(self, partition: int, chunks: Iterable[Chunk]) -> None:
        """Adopt the persisted chunks of ``partition`` (after restart or rebalance)."""
        queue = self._chunks.setdefault(partition, deque())
        for chunk in sorted(chunks, key=lambda c: (c.created_ms, c.key)):
            queue.append(chunk)
            self._held[partition] = self._held.get(partition, 0) + len(chunk.ids)
            for event_id, offset in chunk.ids:
                self._index.setdefault(event_id, (chunk.topic, partition, offset))

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is held for partitions this worker no longer owns."""
        for partition in partitions:
            for chunk in self._chunks.pop(partition, ()):
                self._drop_ids(chunk)
            self._held.pop(partition, None)
            for key in [k for k in self._pending if k[1] == partition]:
                topic = key[0]
                for event_id, offset in self._pending.pop(key):
                    if self._index.get(event_id) == (topic, partition, offset):
                        del self._index[event_id]

    def seen(self, event_id: str, topic: str, partition: int, offset: int) -> bool:
        """True if ``event_id`` was accepted before at other coordinates: a duplicate.

        Otherwise the id is remembered (pending until :meth:`seal`) and False returned.
        """
        first = self._index.get(event_id)
        if first is None:
            self._index[event_id] = (topic, partition, offset)
            self._pending.setdefault((topic, partition), []).append((event_id, offset))
            return False
        return first != (topic, partition, offset)

    def seal(self, topic: str, partition: int, now_ms: int) -> Sealed:
        """Close the batch of ``topic``/``partition``: the chunk to write and keys to expire."""
        queue = self._chunks.setdefault(partition, deque())
        ids = self._pending.pop((topic, partition), [])
        chunk = None
        if ids:
            key = f"{partition}/{topic}/{ids[0][1]}/{ids[-1][1]}"
            chunk = Chunk(key, topic, partition, now_ms, ids)
            queue.append(chunk)
            self._held[partition] = self._held.get(partition, 0) + len(ids)
        expired: list[str] = []
        horizon = now_ms - self.window_ms
        while queue and (
            queue[0].created_ms < horizon or self._held[partition] > self.max_ids_per_partition
        ):
            old = queue.popleft()
            if old is chunk:  # never expire what this very batch wrote
                queue.appendleft(old)
                break
            self._held[partition] -= len(old.ids)
            self._drop_ids(old)
            expired.append(old.key)
        return Sealed(chunk, tuple(expired))

    def held(self, partition: int) -> int:
        """How many event ids are remembered for ``partition``."""
        return self._held.get(partition, 0)

    def _drop_ids(self, chunk: Chunk) -> None:
        for event_id, offset in chunk.ids:
            if self._index.get(event_id) == (chunk.topic, chunk.partition, offset):
                del self._index[event_id]
