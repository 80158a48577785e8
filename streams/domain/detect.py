"""Global score-drop detection over the tallies of every customer partition (pure).

Customer partitions run in parallel; a segment's score is global. Each partition
sends, per batch, the tallies its on-time answers and effort contacts added, record by
record (``(offset, tallies)``), with the resolver's progress: the event time up to which
every input partition still sending had been resolved when the partition's last record
was routed (``complete_to``). :class:`Lookout` sums the tallies into the stream's
rolling view and looks at the scores (:class:`~streams.domain.alerts.DropDetector`)
only up to the event time *every* customer partition has reported complete: what
fires then depends on event time, never on how many workers share the partitions or
how their batches fall. A record reported twice (its partition replayed a batch) is
added once: the lookout remembers each partition's last offset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from schemas.alert_rules import ScoreDropRule
from schemas.alerts import Alert
from streams.domain.alerts import DropDetector, SeriesKey, looks
from streams.domain.scores import Key, Rolling, Tally

__all__ = [
    "FULL_CHECK_S",
    "LOOKS_PER_WINDOW",
    "MAX_LOOKS",
    "Lookout",
    "decode_tallies",
    "encode_tallies",
]

#: How often (wall clock, seconds) every series of the rolling view is checked for drops.
FULL_CHECK_S = 60.0
#: Looks at the scores per window length of event time (every 30 minutes for a day).
LOOKS_PER_WINDOW = 48
#: At most this many looks at once (a clock far ahead must not cost one per step).
MAX_LOOKS = 1000


def encode_tallies(
    partition: int, complete_to: int | None, entries: Sequence[tuple[int, dict[Key, Tally]]]
) -> bytes:
    """One message of the tallies topic: a customer partition's batch."""
    return orjson.dumps(
        [
            partition,
            complete_to,
            [
                [offset, [[*key, *tally.as_tuple()] for key, tally in tallies.items()]]
                for offset, tallies in entries
            ],
        ]
    )


def decode_tallies(
    value: bytes,
) -> tuple[int, int | None, list[tuple[int, dict[Key, Tally]]]]:
    """Read back what :func:`encode_tallies` wrote."""
    partition, complete_to, entries = orjson.loads(value)
    return (
        partition,
        complete_to,
        [
            (offset, {(s, k, v, m): Tally(*counts) for s, k, v, m, *counts in tallies})
            for offset, tallies in entries
        ],
    )


class Lookout:
    """The rolling view of every partition's tallies, their progress, and the looks.

    ``state`` is what :meth:`state` returned (the detector's hysteresis and cooldowns,
    and each partition's progress), persisted by the caller; the rolling view itself is
    rebuilt from the tallies that arrive (it starts empty with each new owner).
    """

    def __init__(
        self,
        rule: ScoreDropRule,
        bucket_ms: int,
        horizon_ms: int,
        partitions: int,
        state: bytes | None = None,
    ) -> None:
        self.rule = rule
        self.bucket_ms = bucket_ms
        self.partitions = partitions
        self.rolling = Rolling(bucket_ms, horizon_ms)
        raw = orjson.loads(state) if state else {}
        self.detector = DropDetector.from_json(rule, orjson.dumps(raw.get("detector", [])))
        #: partition -> [last offset added, complete_to reported]
        self.progress: dict[int, list[Any]] = {
            int(p): list(v) for p, v in raw.get("progress", {}).items()
        }
        #: series with tallies not yet looked at: (kind, value, metric) -> newest bucket
        self.pending: dict[SeriesKey, int] = {}
        self.last_look: int | None = None
        self.last_check = -float("inf")
        self.last_full_check = -float("inf")
        self.changed = False

    def add(
        self,
        partition: int,
        complete_to: int | None,
        entries: Iterable[tuple[int, dict[Key, Tally]]],
    ) -> int:
        """Add a partition's tallies (those of records not added before) and its
        progress; return how many records were new."""
        progress = self.progress.setdefault(partition, [-1, None])
        added = 0
        for offset, tallies in entries:
            if offset <= progress[0]:
                continue
            progress[0] = offset
            added += 1
            self.rolling.add(tallies)
            for start, kind, value, metric in tallies:
                key = (kind, value, metric)
                self.pending[key] = max(start, self.pending.get(key, start))
        if complete_to is not None and (progress[1] is None or complete_to > progress[1]):
            progress[1] = complete_to
        self.changed = True
        self.rolling.prune()
        return added

    def complete_to(self) -> int | None:
        """The event time every partition has reported complete (None until each has)."""
        marks: list[int | None] = [
            self.progress.get(p, [0, None])[1] for p in range(self.partitions)
        ]
        known = [mark for mark in marks if mark is not None]
        return min(known) if len(known) == len(marks) and known else None

    def look(self, wall_s: float, now_ms: int) -> list[Alert]:
        """Significant drops and recoveries, looked at every step of event time since the
        last look up to :meth:`complete_to`; at most every ``evaluate_every`` seconds of
        ``wall_s`` (a monotonic clock). ``now_ms`` stamps the alerts."""
        rule = self.rule
        if wall_s - self.last_check < rule.evaluate_every:
            return []
        complete = self.complete_to()
        if complete is None:
            return []
        end = complete - complete % self.bucket_ms  # buckets before it are whole
        if self.last_look is not None and end <= self.last_look:
            return []
        self.last_check = wall_s
        series = set(self.pending)
        if wall_s - self.last_full_check >= FULL_CHECK_S:
            # windows move on without new answers too: look at every series now and then
            self.last_full_check = wall_s
            series |= set(self.rolling.series)
        step = max(self.bucket_ms, int(rule.window * 1000) // LOOKS_PER_WINDOW)
        previous = self.last_look
        if previous is None:  # this owner's first look: step through everything it holds
            oldest = min((min(b) for b in self.rolling.series.values() if b), default=end)
            previous = oldest - step
        ends = looks(previous, end, step, MAX_LOOKS)
        fired = self.detector.evaluate_looks(self.rolling, ends, series, now_ms)
        self.last_look = end
        for key in [k for k, newest in self.pending.items() if newest < end]:
            del self.pending[key]  # looked at with every tally it has
        if fired:
            self.changed = True
        return fired

    def state(self) -> bytes:
        """What a new owner needs to go on: hysteresis, cooldowns, progress."""
        self.changed = False
        return orjson.dumps(
            {
                "detector": orjson.loads(self.detector.to_json()),
                "progress": {str(p): v for p, v in self.progress.items()},
            }
        )
