"""Is the worker alive, and is it ready: the checks behind ``/live`` and ``/ready``.

*Live* means the process is worth keeping: the app has not crashed and its event loop
still runs its heartbeat on time. A failed liveness check is a reason to restart the
worker (an orchestrator's liveness probe), so it looks only at things a restart cures.

*Ready* means the worker is doing its job: the consumer group has given it its
partitions after the last rebalance and their state is recovered, ClickHouse answered
recently (an insert or a ping), and no row has waited in the sink longer than allowed.
A worker that is not ready is left alone (it may be recovering state or waiting out a
ClickHouse outage); a rolling update waits for it before moving on.

The checks themselves are pure functions of what the worker observed, with ``now`` and
the observations as arguments (monotonic seconds), so the tests state them directly.
:class:`LoopWatch` and :class:`AssignmentWatch` collect those observations.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AssignmentWatch",
    "Check",
    "LoopWatch",
    "ReadyLimits",
    "Verdict",
    "liveness",
    "readiness",
]


@dataclass(frozen=True, slots=True)
class Check:
    """One named check, whether it passed and a sentence saying what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """All checks of a probe; the probe passes when every check does."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the checks that failed, in check order."""
        return tuple(c.name for c in self.checks if not c.ok)

    def to_json(self) -> dict[str, Any]:
        """The probe's JSON body: ``ok``, the failed checks, and every check's detail."""
        return {
            "ok": self.ok,
            "failed": list(self.failed),
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks},
        }


@dataclass(frozen=True, slots=True)
class ReadyLimits:
    """How old the evidence of a working ClickHouse and sink may be, in seconds."""

    clickhouse_max_age_s: float = 30.0
    sink_max_age_s: float = 120.0


def liveness(*, crashed: str | None, loop_lag_s: float, max_loop_lag_s: float) -> Verdict:
    """``crashed``: why the app or one of its agents crashed, None while none did.
    ``loop_lag_s``: how late the event loop's heartbeat is (see :class:`LoopWatch`)."""
    return Verdict(
        (
            Check(
                "not_crashed",
                crashed is None,
                "running" if crashed is None else f"crashed: {crashed}",
            ),
            Check(
                "event_loop",
                loop_lag_s <= max_loop_lag_s,
                f"heartbeat {loop_lag_s:.2f} s late (limit {max_loop_lag_s:g} s)",
            ),
        )
    )


def readiness(
    *,
    assigned: int | None,
    rebalancing: bool,
    sink_started: bool,
    clickhouse_ok_at: float | None,
    oldest_pending_at: float | None,
    now: float,
    limits: ReadyLimits,
) -> Verdict:
    """The readiness checks.

    ``assigned``: partitions the group gave this worker at its last assignment, None
    while it has none (not joined yet, or revoked and waiting for the next one); an
    empty assignment (more workers than partitions) is ready. ``rebalancing``: a
    rebalance or the recovery of table state after it is under way.
    ``clickhouse_ok_at``: monotonic time of the last successful insert or ping.
    ``oldest_pending_at``: monotonic time the oldest row not yet stored was queued.
    """
    if assigned is None:
        partitions = Check("partitions_assigned", False, "waiting for a partition assignment")
    elif rebalancing:
        partitions = Check(
            "partitions_assigned", False, f"{assigned} partitions assigned, recovering state"
        )
    else:
        partitions = Check("partitions_assigned", True, f"{assigned} partitions assigned")
    if not sink_started:
        clickhouse = Check("clickhouse", False, "the ClickHouse sink has not started")
    elif clickhouse_ok_at is None:
        clickhouse = Check("clickhouse", False, "no insert or ping has succeeded yet")
    else:
        age = now - clickhouse_ok_at
        clickhouse = Check(
            "clickhouse",
            age <= limits.clickhouse_max_age_s,
            f"last successful insert or ping {age:.1f} s ago "
            f"(limit {limits.clickhouse_max_age_s:g} s)",
        )
    if oldest_pending_at is None:
        sink = Check("sink", True, "every row is stored")
    else:
        waited = now - oldest_pending_at
        sink = Check(
            "sink",
            waited <= limits.sink_max_age_s,
            f"oldest row waiting {waited:.1f} s (limit {limits.sink_max_age_s:g} s)",
        )
    return Verdict((partitions, clickhouse, sink))


class LoopWatch:
    """A heartbeat on the event loop: how late it ran lately, and how late it is now.

    The heartbeat sleeps ``interval_s`` in a loop; each wake-up records how much later
    than asked it came. A loop blocked by a long computation shows in :meth:`lag` for
    ``window_s`` after it runs again, and a loop blocked right now shows as a heartbeat
    that is overdue (from whatever thread asks). Nothing is late before :meth:`start`.
    """

    def __init__(self, interval_s: float = 0.5, window_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self.window_s = window_s
        self._last_beat = time.monotonic()
        #: (when, how late) of the beats within the window, oldest first
        self._beats: deque[tuple[float, float]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._started = False

    def start(self) -> None:
        """Start the heartbeat on the running loop (once; later calls do nothing)."""
        if self._task is None:
            self._last_beat = time.monotonic()
            self._started = True
            self._task = asyncio.ensure_future(self.run())

    def lag(self, now: float | None = None) -> float:
        """Seconds the heartbeat fell behind: the worst lateness within the window, or
        how overdue the next beat is, whichever is more; 0 before it started."""
        if not self._started:
            return 0.0
        now = time.monotonic() if now is None else now
        overdue = now - self._last_beat - self.interval_s
        recent = (late for when, late in self._beats if now - when <= self.window_s)
        return max(overdue, *recent, 0.0)

    def beat(self, now: float, expected: float) -> None:
        """Record a heartbeat at ``now`` that was due at ``expected``."""
        self._started = True
        self._last_beat = now
        self._beats.append((now, max(0.0, now - expected)))
        while self._beats and now - self._beats[0][0] > self.window_s:
            self._beats.popleft()

    async def run(self) -> None:
        """Beat until cancelled."""
        while True:
            expected = time.monotonic() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.beat(time.monotonic(), expected)


class AssignmentWatch:
    """The partitions the consumer group gave this worker, as the rebalance signals say.

    Faust sends ``on_partitions_revoked`` when a rebalance starts and
    ``on_partitions_assigned`` once the new assignment is in place; in between the
    worker holds nothing for sure.
    """

    def __init__(self) -> None:
        self.assigned: frozenset[Any] | None = None
        self.generations = 0

    def on_revoked(self, revoked: Iterable[Any]) -> None:
        self.assigned = None

    def on_assigned(self, assigned: Iterable[Any]) -> None:
        self.assigned = frozenset(assigned)
        self.generations += 1
