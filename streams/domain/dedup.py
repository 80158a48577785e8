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

**Memory.** A window remembers an id per event for days, so it is kept compact: the
index maps each id to one integer that packs its offset, its (topic, partition) and its
origin, and a chunk keeps its ids as a list beside arrays of offsets and origins (about
100 bytes per id besides the id itself, a third of tuples' cost).
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Chunk", "DuplicateWindow", "Sealed", "chunk_partition"]

Coordinates = tuple[str, int, int]
#: (event_id, offset) or, with an origin, (event_id, offset, origin)
Entry = tuple[str, int] | tuple[str, int, int]

#: An index value packs ``offset << _SLOT_BITS | slot`` (the slot names the topic and
#: partition) and, above ``_ORIGIN_SHIFT``, the origin plus one (0: none).
_SLOT_BITS = 20
_ORIGIN_SHIFT = 64 + _SLOT_BITS
_COORDINATES = (1 << _ORIGIN_SHIFT) - 1
_SLOT_MASK = (1 << _SLOT_BITS) - 1
#: An origin in a chunk's array: none.
_NO_ORIGIN = -1


@dataclass(slots=True)
class Chunk:
    """The ids one batch of one input topic-partition accepted, with its arrival time (ms):
    ``event_ids[i]`` at ``offsets[i]``, first seen with ``origins[i]`` (-1: none)."""

    key: str
    topic: str
    partition: int
    created_ms: int
    event_ids: list[str]
    offsets: array[int]
    origins: array[int] | None = None

    @classmethod
    def of(
        cls, key: str, topic: str, partition: int, created_ms: int, entries: Sequence[Entry]
    ) -> Chunk:
        """A chunk of ``(event_id, offset)`` or ``(event_id, offset, origin)`` entries."""
        origins = None
        if any(len(e) > 2 for e in entries):
            origins = array("q", (e[2] if len(e) > 2 else _NO_ORIGIN for e in entries))
        return cls(
            key,
            topic,
            partition,
            created_ms,
            [e[0] for e in entries],
            array("q", (e[1] for e in entries)),
            origins,
        )

    @property
    def ids(self) -> list[Entry]:
        """The entries, as ``(event_id, offset)`` or ``(event_id, offset, origin)``."""
        if self.origins is None:
            return list(zip(self.event_ids, self.offsets, strict=True))
        return [
            (e, o) if origin == _NO_ORIGIN else (e, o, origin)
            for e, o, origin in zip(self.event_ids, self.offsets, self.origins, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.event_ids)

    def to_value(self) -> dict[str, Any]:
        return {"topic": self.topic, "t": self.created_ms, "ids": [list(i) for i in self.ids]}

    @classmethod
    def from_value(cls, key: str, value: dict[str, Any]) -> Chunk:
        return cls.of(
            key, str(value["topic"]), chunk_partition(key), int(value["t"]),
            [_entry(item) for item in value["ids"]],
        )  # fmt: skip


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


@dataclass(slots=True)
class _Pending:
    """The ids a batch of one topic-partition accepted, not sealed yet."""

    event_ids: list[str] = field(default_factory=list)
    offsets: array[int] = field(default_factory=lambda: array("q"))
    origins: array[int] = field(default_factory=lambda: array("q"))
    with_origins: bool = False


@dataclass
class DuplicateWindow:
    """Remembered event ids of the partitions this worker holds. Not thread-safe."""

    window_ms: int
    max_ids_per_partition: int
    _index: dict[str, int] = field(default_factory=dict)
    _slots: dict[tuple[str, int], int] = field(default_factory=dict)
    _places: list[tuple[str, int]] = field(default_factory=list)
    _chunks: dict[int, deque[Chunk]] = field(default_factory=dict)
    _held: dict[int, int] = field(default_factory=dict)
    _pending: dict[int, _Pending] = field(default_factory=dict)

    def _slot(self, topic: str, partition: int) -> int:
        place = (topic, partition)
        slot = self._slots.get(place)
        if slot is None:
            slot = self._slots[place] = len(self._places)
            if slot > _SLOT_MASK:
                raise OverflowError("more than 2**20 topic-partitions in one duplicate window")
            self._places.append(place)
        return slot

    def is_loaded(self, partition: int) -> bool:
        return partition in self._chunks

    def load(self, partition: int, chunks: Iterable[Chunk]) -> None:
        """Adopt the persisted chunks of ``partition`` (after restart or rebalance)."""
        queue = self._chunks.setdefault(partition, deque())
        index = self._index
        for chunk in sorted(chunks, key=lambda c: (c.created_ms, c.key)):
            queue.append(chunk)
            self._held[partition] = self._held.get(partition, 0) + len(chunk)
            slot = self._slot(chunk.topic, partition)
            origins = chunk.origins
            for i, event_id in enumerate(chunk.event_ids):
                if event_id not in index:
                    value = (chunk.offsets[i] << _SLOT_BITS) | slot
                    if origins is not None and origins[i] != _NO_ORIGIN:
                        value |= (origins[i] + 1) << _ORIGIN_SHIFT
                    index[event_id] = value

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is held for partitions this worker no longer owns."""
        for partition in partitions:
            for chunk in self._chunks.pop(partition, ()):
                self._drop_ids(chunk.event_ids, chunk.offsets, chunk.topic, partition)
            self._held.pop(partition, None)
            for slot in [s for s in self._pending if self._places[s][1] == partition]:
                pending = self._pending.pop(slot)
                self._drop_ids(pending.event_ids, pending.offsets, *self._places[slot])

    def seen(
        self, event_id: str, topic: str, partition: int, offset: int, origin: int | None = None
    ) -> bool:
        """True if ``event_id`` was accepted before at other coordinates: a duplicate.

        Otherwise the id is remembered, with its ``origin`` when given (pending until
        :meth:`seal`), and False returned.
        """
        slot = self._slot(topic, partition)
        at = (offset << _SLOT_BITS) | slot
        first = self._index.get(event_id)
        if first is not None:
            return (first & _COORDINATES) != at
        pending = self._pending.get(slot)
        if pending is None:
            pending = self._pending[slot] = _Pending()
        pending.event_ids.append(event_id)
        pending.offsets.append(offset)
        if origin is not None:
            at |= (origin + 1) << _ORIGIN_SHIFT
            pending.with_origins = True
        pending.origins.append(_NO_ORIGIN if origin is None else origin)
        self._index[event_id] = at
        return False

    def first(self, event_id: str) -> Coordinates | None:
        """The coordinates ``(topic, partition, offset)`` ``event_id`` was first recorded
        at (still pending or sealed), or None when the window does not hold it."""
        value = self._index.get(event_id)
        if value is None:
            return None
        topic, partition = self._places[value & _SLOT_MASK]
        return (topic, partition, (value & _COORDINATES) >> _SLOT_BITS)

    def origin_of(self, event_id: str) -> int | None:
        """The origin the first occurrence of ``event_id`` was seen with, if any."""
        value = self._index.get(event_id)
        if value is None or value >> _ORIGIN_SHIFT == 0:
            return None
        return (value >> _ORIGIN_SHIFT) - 1

    def seal(self, topic: str, partition: int, now_ms: int) -> Sealed:
        """Close the batch of ``topic``/``partition``: the chunk to write and keys to expire."""
        queue = self._chunks.setdefault(partition, deque())
        pending = self._pending.pop(self._slot(topic, partition), None)
        chunk = None
        if pending is not None and pending.event_ids:
            offsets = pending.offsets
            key = f"{partition}/{topic}/{offsets[0]}/{offsets[-1]}"
            origins = pending.origins if pending.with_origins else None
            chunk = Chunk(key, topic, partition, now_ms, pending.event_ids, offsets, origins)
            queue.append(chunk)
            self._held[partition] = self._held.get(partition, 0) + len(chunk)
        expired: list[str] = []
        horizon = now_ms - self.window_ms
        while queue and (
            queue[0].created_ms < horizon or self._held[partition] > self.max_ids_per_partition
        ):
            old = queue.popleft()
            if old is chunk:  # never expire what this very batch wrote
                queue.appendleft(old)
                break
            self._held[partition] -= len(old)
            self._drop_ids(old.event_ids, old.offsets, old.topic, partition)
            expired.append(old.key)
        return Sealed(chunk, tuple(expired))

    def held(self, partition: int) -> int:
        """How many event ids are remembered for ``partition``."""
        return self._held.get(partition, 0)

    def _drop_ids(
        self, event_ids: Sequence[str], offsets: Sequence[int], topic: str, partition: int
    ) -> None:
        slot = self._slot(topic, partition)
        index = self._index
        for event_id, offset in zip(event_ids, offsets, strict=True):
            value = index.get(event_id)
            if value is not None and (value & _COORDINATES) == (offset << _SLOT_BITS) | slot:
                del index[event_id]
