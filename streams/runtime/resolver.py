"""The resolver's partition owner: identity state, duplicate window, watermarks.

One partition (``<app_id>-resolve``), one owner at a time: the identity table holds
``n/<kind>:<value>`` (the identifier's customer), ``c/<customer_id>``
(:class:`~streams.domain.identity.Identity`), ``d/<chunk>`` (the duplicate window's
chunks), ``w/event_time`` (the input partitions' watermarks) and ``j/...`` (the journal
that makes each batch's writes all or none, ``streams.runtime.journal``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.domain.dedup import Chunk, DuplicateWindow
from streams.domain.identity import Identity, IdentityRules, Resolver, node_key
from streams.domain.resolve import ResolveOutput, partition_of, resolve_records, seq_of
from streams.domain.scores import Watermarks
from streams.runtime.journal import PART_PREFIX, Write, journaled, recover
from streams.runtime.owners import Owner
from streams.runtime.state import write_local

__all__ = ["RECORD_BYTES", "Resolved", "ResolverOwner", "encode_records"]

logger = logging.getLogger(__name__)

#: Key of the input partitions' event-time watermarks.
WATERMARKS_KEY = "w/event_time"
#: Largest record of an internal topic (bytes of JSON); below Kafka's default
#: message.max.bytes of 1 MiB. Ingest's records to the resolver are cut to it too.
RECORD_BYTES = 512 * 1024


@dataclass
class Resolved:
    """A resolved segment: the output, the state to persist and the resolver's progress."""

    output: ResolveOutput
    state: list[tuple[str, bytes | None]]
    complete_to: int | None
    records: dict[int, list[bytes]] = field(default_factory=dict)


def encode_records(
    complete_to: int | None, items: Sequence[Any], max_bytes: int = RECORD_BYTES
) -> list[bytes]:
    """Customers-topic records ``[complete_to, [item, ...]]`` holding ``items`` in order,
    each at most ``max_bytes`` (one item larger than that gets a record of its own)."""
    head = b"[" + orjson.dumps(complete_to) + b",["
    records: list[bytes] = []
    current: list[bytes] = []
    size = len(head) + 2
    for item in items:
        encoded = orjson.dumps(item)
        if current and size + len(encoded) + 1 > max_bytes:
            records.append(head + b",".join(current) + b"]]")
            current, size = [], len(head) + 2
        current.append(encoded)
        size += len(encoded) + 1
    if current or not records:
        records.append(head + b",".join(current) + b"]]")
    return records


class ResolverOwner(Owner):
    """The resolve partition's state on this worker (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        rules: IdentityRules,
        topic: str,
        partitions: int,
        window: DuplicateWindow,
        grace_s: float,
        idle_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rules = rules
        self.topic = topic
        self.partitions = partitions
        self.window = window
        self.grace_s = grace_s
        self.idle_s = idle_s
        self.watermarks: Watermarks | None = None
        #: the progress last sent to every partition (ticks)
        self.progress_sent: int | None = None
        #: the journal's parts the store holds
        self._journal_parts = 0
        #: writes of a batch cut short, completed locally, to go with the next batch
        self._recovered: list[Write] = []

    def _load(self) -> Watermarks:
        if self.watermarks is None:
            # first complete a batch whose writes a crash cut short: everything read
            # below (the window's chunks included) must see it whole
            found = recover(self.store.get, self.store.keys(PART_PREFIX))
            self._journal_parts = found.held
            if found.writes:
                logger.info(
                    "completing the resolver's last batch from its journal (%d writes; a "
                    "crash may have cut them short)",
                    len(found.writes),
                )
                write_local(self.table, self.partition, found.writes)
                self._recovered = found.writes
            self.window.load(0, self._chunks())
            value = self.store.get(WATERMARKS_KEY)
            marks = orjson.loads(value) if value else {}
            self.watermarks = Watermarks(int(self.grace_s * 1000), marks)
        return self.watermarks

    def _chunks(self) -> list[Chunk]:
        return [
            Chunk.from_value(key[2:], orjson.loads(value))
            for key in self.store.keys("d/")
            if (value := self.store.get(key))
        ]

    def resolver(self) -> Resolver:
        store = self.store

        def read_node(key: str) -> str | None:
            value = store.get(f"n/{key}")
            return None if value is None else bytes(value).decode()

        def read_identity(customer_id: str) -> Identity | None:
            value = store.get(f"c/{customer_id}")
            return None if value is None else Identity.from_json(customer_id, value)

        return Resolver(self.rules, read_node, read_identity)

    def resolve(self, records: Sequence[tuple[int, list[list[Any]]]], now_ms: int) -> Resolved:
        """Resolve consecutive event records (``(offset, rows)``); nothing is written."""
        self.check()
        watermarks = self._load()
        resolver = self.resolver()
        output = resolve_records(
            records, resolver, self.window, self.topic, self.partitions, watermarks, now_ms
        )
        state = _identity_writes(resolver)
        sealed = self.window.seal(self.topic, 0, now_ms)
        # the window's chunk goes after the state it vouches for
        state += [(f"d/{key}", None) for key in sealed.delete]
        if sealed.write is not None:
            state.append((f"d/{sealed.write.key}", orjson.dumps(sealed.write.to_value())))
        if watermarks.changed:
            state.append((WATERMARKS_KEY, orjson.dumps(watermarks.marks)))
            watermarks.changed = False
        complete_to = watermarks.complete_to(self.idle_s)
        resolved = Resolved(output, self._journaled(state), complete_to)
        resolved.records = {
            p: encode_records(complete_to, items) for p, items in output.items.items()
        }
        return resolved

    def progress_due(self) -> bool:
        """Whether the resolver's progress moved on since it was last sent."""
        if self.watermarks is None:
            return False
        complete_to = self.watermarks.complete_to(self.idle_s)
        return complete_to is not None and complete_to != self.progress_sent

    def progress(self) -> tuple[int | None, dict[int, list[bytes]]]:
        """A tick: the resolver's progress, to every partition, when it moved on."""
        complete_to = self._load().complete_to(self.idle_s)
        if complete_to is None or complete_to == self.progress_sent:
            return complete_to, {}
        self.progress_sent = complete_to
        record = encode_records(complete_to, [])
        return complete_to, {p: record for p in range(self.partitions)}

    def erase(
        self, request: dict[str, Any]
    ) -> tuple[list[tuple[str, bytes | None]], dict[str, Any] | None, int]:
        """Forget the customer that owns the request's identifier: the state writes,
        the item for the customer's partition (None when nobody owns it) and how many
        identifiers were removed."""
        self.check()
        self._load()
        resolver = self.resolver()
        owner = resolver.owner(request["kind"], request["value"])
        identity = resolver.identity(owner) if owner else None
        if owner is None or identity is None:
            return [], None, 0
        removed = resolver.forget(owner)
        item = {
            "request_id": request["request_id"],
            "kind": request["kind"],
            "customer_id": owner,
            "ids": [owner, *identity.absorbed],
            "requested_at": request["requested_at"],
            "removed": len(removed),
            "node": node_key(request["kind"], "..."),
        }
        return (
            self._journaled(_identity_writes(resolver)),
            item,
            partition_of(owner, self.partitions),
        )

    def _journaled(self, state: list[Write]) -> list[Write]:
        """A batch's writes, all or none (see ``streams.runtime.journal``), with the
        writes of a batch cut short before them, the first time."""
        if self._recovered:
            state = self._recovered + state
            self._recovered = []
        writes, self._journal_parts = journaled(state, self._journal_parts, RECORD_BYTES)
        return writes

    @staticmethod
    def erase_record(item: dict[str, Any], offset: int) -> bytes:
        return encode_records(None, [["x", seq_of(offset, 0, 0), item]])[0]


def _identity_writes(resolver: Resolver) -> list[tuple[str, bytes | None]]:
    """The resolver's changes in replay-safe order: live customers, nodes, deletions."""
    changes = resolver.changes()
    items: list[tuple[str, bytes | None]] = [
        (f"c/{customer_id}", identity.to_json())
        for customer_id, identity in changes.identities.items()
        if identity is not None
    ]
    items += [
        (f"n/{key}", None if owner is None else owner.encode())
        for key, owner in changes.nodes.items()
    ]
    items += [(f"c/{k}", None) for k, i in changes.identities.items() if i is None]
    return items
