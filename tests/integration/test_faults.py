"""The fault suite's short profile, on every change: nothing lost, nothing counted twice.

One run of ``touchpoint faults --profile short`` (see ``streams/tools/faults.py``): Apache
Kafka and the ClickHouse engine of its own, two workers, a few thousand touchpoints
published over 45 s while workers are killed and restarted, stopped and started again,
ClickHouse is killed and restarted, the broker is restarted, and hostile messages
arrive; then every check of the suite, from ClickHouse alone. The seed is fixed so a
failure reproduces (``TOUCHPOINT_FAULT_SEED`` picks another to explore); the long profile
(20 runs) is run before a change to the delivery guarantees lands.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.tools.embedded.kafka import java_available
from streams.tools.faults import PROFILES, FaultRun

pytestmark = pytest.mark.integration


@pytest.mark.timeout(2400)
async def test_nothing_is_lost_or_counted_twice_through_kills_restarts_outages_and_hostile_input(
    tmp_path: Path,
) -> None:
    if not java_available():
        reason = "Apache Kafka needs Java 17+ and Maven on the PATH"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; integration tests never skip in CI")
        pytest.skip(reason)
    seed = int(os.environ.get("TOUCHPOINT_FAULT_SEED", "1"))
    result = await FaultRun(1, seed, PROFILES["short"], tmp_path / "run").bounded_run()
    assert result.ok, result.describe()
    assert sum(result.faults.values()) == sum(PROFILES["short"].faults.values())
    assert result.valid_events > 2000 and result.broken > 20
