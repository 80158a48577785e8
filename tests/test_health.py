"""The probes: what makes a worker live, and what makes it ready."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from streams.runtime.app import create_worker
from streams.runtime.health import AssignmentWatch, LoopWatch, ReadyLimits, liveness, readiness
from streams.runtime.web import Probes
from streams.settings import Settings

LIMITS = ReadyLimits(clickhouse_max_age_s=30, sink_max_age_s=120)


def ready(**overrides: object) -> tuple[bool, tuple[str, ...]]:
    observed: dict[str, object] = {
        "assigned": 5,
        "rebalancing": False,
        "sink_started": True,
        "clickhouse_ok_at": 995.0,
        "oldest_pending_at": None,
        "now": 1000.0,
        "limits": LIMITS,
    }
    observed.update(overrides)
    verdict = readiness(**observed)  # type: ignore[arg-type]
    return verdict.ok, verdict.failed


def test_ready_when_assigned_recovered_clickhouse_answering_and_nothing_waiting() -> None:
    assert ready() == (True, ())


def test_not_ready_before_any_assignment_or_after_a_revocation() -> None:
    assert ready(assigned=None) == (False, ("partitions_assigned",))


def test_not_ready_while_the_state_of_new_partitions_is_recovering() -> None:
    assert ready(rebalancing=True) == (False, ("partitions_assigned",))


def test_an_empty_assignment_is_ready_more_workers_than_partitions() -> None:
    assert ready(assigned=0) == (True, ())


def test_not_ready_before_the_sink_starts_or_clickhouse_ever_answered() -> None:
    assert ready(sink_started=False) == (False, ("clickhouse",))
    assert ready(clickhouse_ok_at=None) == (False, ("clickhouse",))


def test_clickhouse_counts_as_reachable_up_to_the_limit_and_not_after() -> None:
    assert ready(clickhouse_ok_at=970.0) == (True, ())
    assert ready(clickhouse_ok_at=969.9) == (False, ("clickhouse",))


def test_the_sink_is_stuck_once_its_oldest_row_waited_longer_than_the_limit() -> None:
    assert ready(oldest_pending_at=880.0) == (True, ())
    assert ready(oldest_pending_at=879.9) == (False, ("sink",))


def test_every_failed_check_is_named_in_the_body() -> None:
    verdict = readiness(
        assigned=None,
        rebalancing=False,
        sink_started=True,
        clickhouse_ok_at=None,
        oldest_pending_at=0.0,
        now=1000.0,
        limits=LIMITS,
    )
    body = verdict.to_json()
    assert body["ok"] is False
    assert body["failed"] == ["partitions_assigned", "clickhouse", "sink"]
    assert body["checks"]["sink"] == {
        "ok": False,
        "detail": "oldest row waiting 1000.0 s (limit 120 s)",
    }


def test_live_until_crashed_or_the_loop_falls_behind() -> None:
    assert liveness(crashed=None, loop_lag_s=0.2, max_loop_lag_s=10).ok
    crashed = liveness(crashed="RuntimeError('boom')", loop_lag_s=0.0, max_loop_lag_s=10)
    assert crashed.failed == ("not_crashed",)
    assert "boom" in crashed.to_json()["checks"]["not_crashed"]["detail"]
    assert liveness(crashed=None, loop_lag_s=10.5, max_loop_lag_s=10).failed == ("event_loop",)


def test_the_heartbeat_is_late_by_how_long_the_loop_was_blocked() -> None:
    watch = LoopWatch(interval_s=0.5, window_s=5.0)
    assert watch.lag(now=10_000.0) == 0.0  # not started: nothing to be late for
    watch.beat(now=100.0, expected=97.0)  # three seconds late
    watch.beat(now=100.5, expected=100.5)
    assert watch.lag(now=100.9) == pytest.approx(3.0)  # remembered for the window
    watch.beat(now=105.5, expected=105.5)
    assert watch.lag(now=105.6) == 0.0  # forgotten after it
    assert watch.lag(now=118.0) == pytest.approx(12.0)  # no beat for 12.5 s: blocked now


async def test_the_heartbeat_notices_a_blocked_loop() -> None:
    import time

    watch = LoopWatch(interval_s=0.05)
    watch.start()
    await asyncio.sleep(0.12)
    time.sleep(0.4)  # noqa: ASYNC251  # the loop is blocked, which is the point
    await asyncio.sleep(0.12)
    assert watch.lag() >= 0.3
    assert watch._task is not None
    watch._task.cancel()


def test_assignment_is_known_from_assigned_until_the_next_revocation() -> None:
    watch = AssignmentWatch()
    assert watch.assigned is None
    watch.on_assigned({("t", 0), ("t", 1)})
    assert watch.assigned == frozenset({("t", 0), ("t", 1)})
    watch.on_revoked({("t", 1)})
    assert watch.assigned is None
    watch.on_assigned(set())
    assert watch.assigned == frozenset()


async def test_a_crashed_app_is_not_live_at_once(tmp_path: Path) -> None:
    """The real app object: once Faust marks it crashed, /live says so."""
    settings = Settings(data_dir=tmp_path, store="memory://")
    worker = create_worker(settings, ("touchpoints.web",))
    probes = Probes(worker)
    assert probes.live().ok
    await worker.app.crash(RuntimeError("forwarding failed"))
    verdict = probes.live()
    assert verdict.failed == ("not_crashed",)
    assert "forwarding failed" in verdict.to_json()["checks"]["not_crashed"]["detail"]


def test_only_the_workers_pages_are_routed_whatever_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_WEB_TABLES_ENABLED", "true")
    monkeypatch.setenv("APP_WEB_STATS_ENABLED", "true")
    settings = Settings(data_dir=tmp_path, store="memory://")
    worker = create_worker(settings, ("touchpoints.web",))
    web = worker.app.web
    web.init_server()
    routed = {r.resource.canonical for r in web.web_app.router.routes() if r.resource}
    assert routed == {"/metrics", "/accounting", "/scores", "/live", "/ready"}
