"""Detractor risk on the real broker and ClickHouse: every customer in ``customer_360``
has the score the offline fold of ClickHouse's ``events`` gives (the same code
``touchpoint model train`` reads them with), after a restart mid-stream; a worker that
rebuilds its state from the changelog on an empty machine keeps every score and fires
no at-risk alert a second time; ``touchpoint model train`` and ``evaluate`` run on
those events (the commands run in a thread: they start their own event loop).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.cli import main
from streams.domain.risk import Model, default_model
from streams.operate.model import events_query, scores_from_rows
from streams.runtime.app import partition_rules
from streams.settings import Settings
from tests.integration.test_scores_end_to_end import ASSISTED, CHANNELS, journeys
from tests.integration.test_worker_end_to_end import (
    Stack,
    ch,
    channel_topic,
    create_topics,
    produce,
    scalar,
    settled,
    stack,
    started,
    wait_for,
)

__all__ = ["ch", "stack"]  # fixtures used by name

pytestmark = pytest.mark.integration

MINUTE = 60_000
SCORES = "SELECT customer_id, p_detractor, predicted_nps_band FROM {db}.customer_360"
AT_RISK = "SELECT alert_id, customer_id, payload FROM {db}.alerts WHERE type = 'customer.at_risk'"


async def test_every_customer_is_scored_as_the_offline_fold_scores_them(
    stack: Stack, ch: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(5)
    start_ms = (int(time.time() * 1000) - 6 * 3_600_000) // MINUTE * MINUTE
    events = journeys(rng, 120, start_ms)
    topics = {c: channel_topic(stack, c) for c in (*CHANNELS, *ASSISTED)}
    await create_topics(stack, list(topics.values()))
    assisted = [topics[c].removeprefix("touchpoints.") for c in ASSISTED]
    stack.env["TOUCHPOINT_EFFORT_ASSISTED_CHANNELS"] = orjson.dumps(assisted).decode()
    # a low threshold, so that some customers cross it
    stack.env["TOUCHPOINT_ALERTS"] = orjson.dumps(
        {"at_risk": {"threshold": 0.2, "rearm_below": 0.15}}
    ).decode()

    def messages(batch: list[dict[str, Any]]) -> list[Any]:
        return [
            (
                topics[e["channel"]],
                None,
                orjson.dumps({k: v for k, v in e.items() if k != "channel"}),
                [],
            )
            for e in batch
        ]

    db = stack.database
    half = len(events) // 2
    w1 = await started(stack.start_worker("w1", state=stack.tmp / "w1"))
    try:
        await produce(stack.bootstrap, messages(events[:half]), None)

        async def some_stored() -> bool:
            return bool(await scalar(ch, f"SELECT count() FROM {db}.events_store") > half // 3)

        await wait_for(some_stored, w1, what="the first events to be stored")
        w1.stop(signal.SIGTERM)  # restarted mid-stream
        await produce(stack.bootstrap, messages(events[half:]), None)
        w1 = stack.start_worker("w1-again", state=stack.tmp / "w1")

        async def all_stored() -> bool:
            stored = await scalar(ch, f"SELECT sum(touchpoints) FROM {db}.customer_360")
            return bool(stored == len(events))

        await wait_for(all_stored, w1, timeout=90, what="every event stitched and stored")
        await settled(stack, list(topics.values()), w1)

        # -- every customer has a score, the one the offline fold gives ------------------
        rows = (await ch.query(events_query(db))).result_rows
        settings = Settings.model_construct(effort_assisted_channels=frozenset(assisted))
        offline = scores_from_rows(rows, partition_rules(settings))
        stream = {c: (p, band) for c, p, band in (await ch.query(SCORES.format(db=db))).result_rows}
        assert set(stream) == set(offline) and len(stream) >= 120
        assert all(p is not None for p, _band in stream.values())
        for customer_id, (p, band) in stream.items():
            assert p == pytest.approx(offline[customer_id].p, rel=1e-9, abs=1e-12), customer_id
            assert band == offline[customer_id].band
        alerts = (await ch.query(AT_RISK.format(db=db))).result_rows
        assert alerts, "no customer crossed the test's low threshold"
        for _id, customer_id, payload in alerts:
            data = orjson.loads(payload)["data"]
            assert data["customer_id"] == customer_id and data["p_detractor"] >= 0.2
            assert data["model_version"] == default_model().version and data["reasons"]
        w1.stop(signal.SIGTERM)

        # -- an empty machine: state from the changelog, the same scores, no alert again --
        w2 = await started(stack.start_worker("w2", state=stack.tmp / "w2"))
        marker = {
            "event_id": "risk-marker",
            "occurred_at": start_ms + 12 * 3_600_000,
            "type": "page_view",
            "channel": "web",
            "identifiers": {"account_id": "acct-0"},
        }
        await produce(stack.bootstrap, messages([marker]), None)

        async def marker_stored() -> bool:
            stored = await scalar(ch, f"SELECT sum(touchpoints) FROM {db}.customer_360")
            return bool(stored == len(events) + 1)

        await wait_for(marker_stored, w2, timeout=90, what="the marker to be applied")
        await settled(stack, list(topics.values()), w2)
        after = {c: (p, band) for c, p, band in (await ch.query(SCORES.format(db=db))).result_rows}
        marked = next(c for c, in (await ch.query(
            f"SELECT customer_id FROM {db}.events WHERE event_id = 'risk-marker'")).result_rows)  # fmt: skip
        assert {c: v for c, v in after.items() if c != marked} == {
            c: v for c, v in stream.items() if c != marked
        }
        again = (await ch.query(AT_RISK.format(db=db))).result_rows
        fired_for_marker = [
            a for a in again if orjson.loads(a[2])["data"]["event_id"] == "risk-marker"
        ]
        assert len(again) == len(alerts) + len(fired_for_marker)
        w2.stop(signal.SIGTERM)
    finally:
        w1.stop(signal.SIGTERM)

    # -- training and evaluation read the same events ------------------------------------
    env = ["--config", str(_config(tmp_path, stack, assisted))]
    artifact = tmp_path / "model.json"
    assert await asyncio.to_thread(main, ["model", "train", *env, "--output", str(artifact)]) == 0
    model = Model.from_json(artifact.read_bytes())
    answers = sum(1 for e in events if "survey" in e)
    assert model.trained["answers"] == answers
    again = ["model", "train", *env, "--output", str(tmp_path / "again.json")]
    assert await asyncio.to_thread(main, again) == 0
    assert (tmp_path / "again.json").read_bytes() == artifact.read_bytes()  # reproducible
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["model", "evaluate", *env, "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["split"]["train_answers"] + report["split"]["test_answers"] == answers
    assert {b["name"] for b in report["baselines"]} >= {"previous answer", "stage rate"}
    assert len(report["model"]["calibration"]) == 10


def _config(tmp_path: Path, stack: Stack, assisted: list[str]) -> Path:
    path = tmp_path / "touchpoint.toml"
    path.write_text(
        f'clickhouse_url = "{stack.clickhouse_url}"\n'
        f'clickhouse_database = "{stack.database}"\n'
        f"effort_assisted_channels = {orjson.dumps(assisted).decode()}\n",
        encoding="utf-8",
    )
    return path
