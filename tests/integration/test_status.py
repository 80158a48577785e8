"""``touchpoint status`` against a running deployment: the real broker, ClickHouse and a
worker. Healthy once everything is read and stored; unhealthy, saying why, with a topic
of the wrong partition count, a stopped worker with messages piling up, or a schema
that was never migrated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import orjson
import pytest

from schemas.clickhouse import migrations
from tests.integration import test_worker_end_to_end as e2e
from tests.integration.test_worker_end_to_end import (
    PARTITIONS,
    Stack,
    accounting,
    channel_topic,
    create_topics,
    event,
    produce,
    settled,
    started,
)

pytestmark = pytest.mark.integration

# the end to end tests' fixture: a worker stack on the session's broker and ClickHouse
stack = e2e.stack


def status(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", "status", *args],
        env={**stack.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def findings(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    report = json.loads(result.stdout)
    return {f["check"]: f for f in report["checks"]}


async def test_status_is_healthy_then_says_why_it_is_not(stack: Stack) -> None:
    web = channel_topic(stack, "web")
    await create_topics(stack, [web])
    worker = await started(stack.start_worker())
    stopped = False
    try:
        await produce(
            stack.bootstrap,
            [(web, None, orjson.dumps(event(f"s-{i}")), []) for i in range(30)],
            None,
        )
        await settled(stack, [web], worker)
        assert (await accounting(worker))["consumed"] == 30

        # --- healthy: every check passes, and the numbers are the deployment's
        ok = status(stack, "--worker", worker.web, "--max-lag", "0", "--json")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        report = json.loads(ok.stdout)
        assert report["healthy"] is True
        checks = findings(ok)
        assert {name: f["level"] for name, f in checks.items()} == {
            "input_topics": "ok",
            "consumer_lag": "ok",
            "migrations": "ok",
            "workers": "ok",
            "sink_backlog": "ok",
            "alert_queues": "ok",
            "accounting": "ok",
            "reconciliation": "ok",
        }
        assert checks["reconciliation"]["details"]["unaccounted_offsets"] == {}
        assert checks["input_topics"]["details"]["read"] == [web]
        assert set(checks["consumer_lag"]["details"]["lag"].values()) == {0}
        assert checks["migrations"]["details"]["pending"] == []
        shipped = [m.version for m in migrations()]
        assert checks["migrations"]["details"]["applied"] == shipped
        assert checks["accounting"]["details"]["totals"]["consumed"] == 30
        assert checks["sink_backlog"]["details"]["pending_rows"] == {worker.web: 0}
        text = status(stack, "--worker", worker.web)
        assert text.returncode == 0
        assert text.stdout.splitlines()[0] == "healthy"

        # --- a topic the worker must not read: wrong partition count
        odd = channel_topic(stack, "kiosk")
        await create_topics(stack, [odd], partitions=PARTITIONS - 2)
        refused = status(stack, "--worker", worker.web)
        assert refused.returncode == 1
        headline, *lines = refused.stdout.splitlines()
        assert headline.startswith("UNHEALTHY: 1 check failed (input_topics)")
        problem = next(line for line in lines if "FAIL" in line)
        assert f"{odd} ({PARTITIONS - 2} partitions)" in problem
        assert f"needs {PARTITIONS} partitions" in problem

        # --- the worker stops and messages pile up behind it
        worker.stop()
        stopped = True
        await produce(
            stack.bootstrap,
            [(web, None, orjson.dumps(event(f"t-{i}")), []) for i in range(20)],
            None,
        )
        down = status(stack, "--worker", worker.web, "--max-lag", "5", "--json")
        assert down.returncode == 1
        checks = findings(down)
        assert checks["workers"]["level"] == "fail"
        assert worker.web in checks["workers"]["summary"]
        assert checks["consumer_lag"]["level"] == "fail"
        assert checks["consumer_lag"]["details"]["lag"][web] == 20
        assert checks["accounting"]["level"] == "warn"  # nobody to ask
        assert checks["reconciliation"]["level"] == "warn"
    finally:
        if not stopped:
            worker.stop()


async def test_a_database_that_was_never_migrated_is_unhealthy(stack: Stack) -> None:
    empty = f"never_{uuid.uuid4().hex[:8]}"
    result = status(stack, "--json", TOUCHPOINT_CLICKHOUSE_DATABASE=empty)
    assert result.returncode == 1
    migrations = findings(result)["migrations"]
    assert migrations["level"] == "fail"
    assert "touchpoint migrate" in migrations["summary"]


async def test_an_unreachable_clickhouse_fails_the_check_and_names_the_setting(
    stack: Stack,
) -> None:
    from streams.tools.embedded.process import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = status(stack, TOUCHPOINT_CLICKHOUSE_URL=url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = next(x for x in result.stdout.splitlines() if x.lstrip().startswith("FAIL  migrations"))
    assert url in line and "TOUCHPOINT_CLICKHOUSE_URL" in line
