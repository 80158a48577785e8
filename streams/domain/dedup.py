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

An id can carry an *origin*, a number that names where the message first came from
(the stitch agent keys its window by stitch-topic offsets, and notes the input
coordinates as the origin): :meth:`DuplicateWindow.origin_of` tells a repeat that is
the same input message forwarded again from one that is another message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Chunk", "DuplicateWindow", "Sealed", "chunk_partition"]

Coordinates = tuple[str, int, int]
#: (event_id, offset) or, with an origin, (event_id, offset, origin)
Entry = tuple[str, int] | tuple[str, int, int]


@dataclass(slots=True)
class Chunk:
    """The ids one batch of one input topic-partition accepted, with its arrival time (ms)."""

    key: str
    topic: str
    partition: int
    created_ms: int
    ids: list[Entry]

    def to_value(self) -> dict[str, Any]:
        return {"topic": self.topic, "t": self.created_ms, "ids": [list(i) for i in self.ids]}

    @classmethod
    def from_value(cls, key: str, value: dict[str, Any]) -> Chunk:
        return cls(
            key=key,
            topic=str(value["topic"]),
            partition=chunk_partition(key),
            created_ms=int(value["t"]),
            ids=[_entry(item) for item in value["ids"]],
        )


def _entry(item: Any) -> Entry:
    """A persisted id: ``[event_id, offset]``, or with its origin ``[.., origin]``."""
    if len(item) > 2 and item[2] is not None:
        return (str(item[0]), int(item[1]), int(item[2]))
    return (str(item[0]), int(item[1]))


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
    _origins: dict[str, int] = field(default_factory=dict)
    _chunks: dict[int, deque[Chunk]] = field(default_factory=dict)
    _held: dict[int, int] = field(default_factory=dict)
    _pending: dict[tuple[str, int], list[Entry]] = field(default_factory=dict)

    def is_loaded(self, partition: int) -> bool:
        return partition in self._chunks

    def load(self, partition: int, chunks: Iterable[Chunk]) -> None:
        """Adopt the persisted chunks of ``partition`` (after restart or rebalance)."""
        queue = self._chunks.setdefault(partition, deque())
        for chunk in sorted(chunks, key=lambda c: (c.created_ms, c.key)):
            queue.append(chunk)
            self._held[partition] = self._held.get(partition, 0) + len(chunk.ids)
            for entry in chunk.ids:
                event_id = entry[0]
                if event_id not in self._index:
                    self._index[event_id] = (chunk.topic, partition, entry[1])
                    if len(entry) > 2:
                        self._origins[event_id] = entry[2]

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is held for partitions this worker no longer owns."""
        for partition in partitions:
            for chunk in self._chunks.pop(partition, ()):
                self._drop_ids(chunk)
            self._held.pop(partition, None)
            for key in [k for k in self._pending if k[1] == partition]:
                topic = key[0]
                for entry in self._pending.pop(key):
                    self._drop_id(entry, topic, partition)

    def seen(
        self, event_id: str, topic: str, partition: int, offset: int, origin: int | None = None
    ) -> bool:
        """True if ``event_id`` was accepted before at other coordinates: a duplicate.

        Otherwise the id is remembered, with its ``origin`` when given (pending until
        :meth:`seal`), and False returned.
        """
        first = self._index.get(event_id)
        if first is None:
            self._index[event_id] = (topic, partition, offset)
            entry: Entry = (event_id, offset)
            if origin is not None:
                self._origins[event_id] = origin
                entry = (event_id, offset, origin)
            self._pending.setdefault((topic, partition), []).append(entry)
            return False
        return first != (topic, partition, offset)

    def first(self, event_id: str) -> Coordinates | None:
        """The coordinates ``(topic, partition, offset)`` ``event_id`` was first recorded
        at (still pending or sealed), or None when the window does not hold it."""
        return self._index.get(event_id)

    def origin_of(self, event_id: str) -> int | None:
        """The origin the first occurrence of ``event_id`` was seen with, if any."""
        return self._origins.get(event_id)

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
        for entry in chunk.ids:
            self._drop_id(entry, chunk.topic, chunk.partition)

    def _drop_id(self, entry: Entry, topic: str, partition: int) -> None:
        event_id = entry[0]
        if self._index.get(event_id) == (topic, partition, entry[1]):
            del self._index[event_id]
            self._origins.pop(event_id, None)
