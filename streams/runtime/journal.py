"""A batch's state writes, all or none: the journal.

A batch's writes reach its table's changelog as several Kafka record batches (see
``streams.runtime.state``). A worker killed while they go out leaves a prefix of them
in the changelog, and the partition's next owner restores the store from it. Where
any prefix replays to the same decisions, that is enough (the customer partitions
order their writes so). The resolver's is not: a merge half written can be decided
again differently, or not at all, after the items it caused were already sent.

So a batch's writes go out journaled (:func:`journaled`): first the whole list of
writes as *parts* (``j/p00000``, ...: JSON, each at most ``max_bytes``) marked with a
batch id, then the *head* (``j/head``: the batch id and the number of parts), then the
writes themselves. One record is atomic, and a batch's records reach the changelog
in order, after every record of the batches before it. So whatever prefix a crash
leaves, the partition's next owner finds (:func:`recover`):

* a head whose parts all carry its batch id: the writes of the last batch, which may
  be cut short; applying them again completes the batch (a write applied twice is
  the same write);
* or a head whose parts were overwritten in part by the next batch, or no head: that
  batch's writes had not begun, and every batch before it is complete.

The owner applies what it recovers before it reads anything, and writes it again
with its next batch, journaled, so the changelog holds it before the head moves on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson

__all__ = ["HEAD", "PART_PREFIX", "Recovered", "Write", "journaled", "part_key", "recover"]

#: Key of the journal's head: ``{"b": batch id, "n": number of parts}``.
HEAD = "j/head"
#: Prefix of the keys of the journal's parts: ``{"b": batch id, "w": [[key, value], ...]}``.
PART_PREFIX = "j/p"
Write = tuple[str, bytes | None]


def part_key(index: int) -> str:
    return f"{PART_PREFIX}{index:05d}"


def journaled(
    writes: Sequence[Write], held: int, max_bytes: int, *, batch: str | None = None
) -> tuple[list[Write], int]:
    """The writes to persist for ``writes``: the journal's parts, its head, the deletion
    of parts an earlier journal left beyond this one's (``held``: how many parts the
    store holds), then ``writes`` themselves; a part holds about ``max_bytes`` of JSON
    (the owner's record bound). Returns them and the parts now held."""
    if not writes:
        return [], held
    batch = batch or os.urandom(8).hex()
    parts: list[bytes] = []
    current: list[list[str | None]] = []
    size = 0
    for key, value in writes:
        text = None if value is None else value.decode()
        entry_size = len(key) + (len(text) if text is not None else 4) + 8
        if current and size + entry_size > max_bytes:
            parts.append(orjson.dumps({"b": batch, "w": current}))
            current, size = [], 0
        current.append([key, text])
        size += entry_size
    parts.append(orjson.dumps({"b": batch, "w": current}))
    out: list[Write] = [(part_key(i), part) for i, part in enumerate(parts)]
    out.append((HEAD, orjson.dumps({"b": batch, "n": len(parts)})))
    out += [(part_key(i), None) for i in range(len(parts), held)]
    out += writes
    return out, len(parts)


@dataclass(frozen=True, slots=True)
class Recovered:
    """What :func:`recover` found: the writes to apply again, and the parts held."""

    writes: list[Write]
    held: int


def recover(get: Callable[[str], bytes | None], part_keys: Iterable[str]) -> Recovered:
    """The writes of the last journaled batch, if its journal is whole (see the module
    docstring), else none; ``part_keys`` are the part keys the store holds."""
    held = 0
    for key in part_keys:
        held = max(held, int(key[len(PART_PREFIX) :]) + 1)
    raw = get(HEAD)
    if raw is None:
        return Recovered([], held)
    head = orjson.loads(bytes(raw))
    writes: list[Write] = []
    for index in range(int(head["n"])):
        value = get(part_key(index))
        if value is None:
            return Recovered([], held)
        part = orjson.loads(bytes(value))
        if part["b"] != head["b"]:
            return Recovered([], held)  # the next batch's journal began: this one is whole
        writes += [(k, None if v is None else v.encode()) for k, v in part["w"]]
    return Recovered(writes, held)
