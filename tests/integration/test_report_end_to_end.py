"""``touchpoint report`` end to end: a known small data set through the real worker (real
Apache Kafka, the real ClickHouse engine), the report written by the real command, and
the data embedded in the page checked three ways: against what we sent (recomputed in
Python), against independent SQL over the raw ``events`` rows, and against the figures
drawn from it. Then the page is opened in headless Chromium.

The data set: NPS answers on web that fall for an hour and recover (one score drop and
one recovery, with rules scaled to it), support cases on the call centre and chat with
transfers, escalations and channel switches followed by NPS and CES answers, customers
moving between journey stages, one identity merge, one refused link, CSAT answers by
e-mail and a few broken messages.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

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
from tests.report_browser import render

pytestmark = pytest.mark.integration
__all__ = ["ch", "stack"]  # fixtures used by name

MINUTE = 60_000
HOUR = 60 * MINUTE
BASELINE = [10, 9, 10, 8, 9, 10, 7, 10]
INCIDENT = [3, 6, 2, 5, 0, 6, 4, 1]
#: (transferred, escalated, NPS answer) of each single-contact case on the call centre
CASES = [
    (False, False, 10), (False, False, 9), (False, False, 9), (False, False, 8),
    (False, False, 10), (False, False, 6), (True, False, 3), (True, False, 5),
    (True, False, 9), (True, False, 2), (False, True, 0), (False, True, 7),
]  # fmt: skip
#: CES answers: (transferred, CES) of single-contact cases on chat
CES_CASES = [(False, 7), (False, 6), (False, 6), (True, 3), (True, 2), (True, 4)]
#: the journeys (event types in order) of customers who only browse and buy
JOURNEYS = [
    ["page_view", "search", "purchase", "login"],
    ["page_view", "page_view", "purchase"],
    ["search", "login", "payment_failed", "login"],
    ["email_open", "search", "search", "purchase", "login"],
]
STAGE = {
    "page_view": "awareness", "email_open": "awareness", "search": "consideration",
    "purchase": "purchase", "login": "usage", "payment_failed": "churn_risk",
    "call": "support", "chat": "support",
}  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "report"


class DataSet:
    """Every valid event we send, and what it means, so expectations are recomputed
    from it in Python."""

    def __init__(self, stack: Stack, start: int) -> None:
        self.stack = stack
        self.start = start
        self.events: list[dict[str, Any]] = []
        self.person_of: dict[str, str] = {}
        self.broken: list[tuple[str, bytes]] = []

    def add(self, person: str, channel: str, at: int, type_: str, **extra: Any) -> None:
        event_id = f"r-{len(self.events)}"
        document = {
            "event_id": event_id,
            "occurred_at": at,
            "type": type_,
            "identifiers": extra.pop("identifiers", {"email": f"{person}@example.com"}),
            **extra,
        }
        self.events.append({"channel": channel, "person": person, **document})
        self.person_of[event_id] = person

    def messages(self) -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]:
        out = []
        for e in self.events:
            document = {k: v for k, v in e.items() if k not in ("channel", "person")}
            topic = channel_topic(self.stack, e["channel"])
            out.append((topic, e["person"].encode(), orjson.dumps(document), []))
        web = channel_topic(self.stack, "web")
        out += [(web, b"broken", raw, []) for _, raw in self.broken]
        return out


def build(stack: Stack, now: int) -> DataSet:
    t0 = now - 9 * HOUR
    data = DataSet(stack, t0)
    # web NPS: six hours as usual, an hour of incident, an hour of recovery
    for i in range(72):
        data.add(f"w{i % 9}", "web", t0 + i * 5 * MINUTE, "survey_response",
                 survey={"metric": "nps", "score": BASELINE[i % 8]})  # fmt: skip
    for i in range(48):
        data.add(f"v{i % 11}", "web", t0 + 6 * HOUR + i * 75_000 + 1000, "survey_response",
                 survey={"metric": "nps", "score": INCIDENT[i % 8]})  # fmt: skip
    for i in range(48):
        data.add(f"u{i % 10}", "web", t0 + 7 * HOUR + i * 75_000 + 2000, "survey_response",
                 survey={"metric": "nps", "score": BASELINE[i % 8]})  # fmt: skip
    # support cases: a login, a call (maybe transferred or escalated), then the NPS answer.
    # The login goes to the call centre's topic too (with no interaction nor case it is no
    # contact), so it arrives before the call: each event keeps the stage its customer had
    # when it was stitched, which depends on the order of arrival across topics.
    for n, (transferred, escalated, score) in enumerate(CASES):
        person, at, case = f"k{n}", t0 + 30 * MINUTE + n * 20 * MINUTE, f"case-k{n}"
        data.add(person, "call_center", at, "login")
        data.add(person, "call_center", at + MINUTE, "call", case_id=case,
                 interaction={"transferred": transferred, "escalated": escalated,
                              "wait_seconds": 30})  # fmt: skip
        data.add(person, "call_center", at + 5 * MINUTE, "survey_response", case_id=case,
                 survey={"metric": "nps", "score": score})  # fmt: skip
    for n, (transferred, ces) in enumerate(CES_CASES):
        person, at, case = f"c{n}", t0 + 40 * MINUTE + n * 30 * MINUTE, f"case-c{n}"
        data.add(person, "chat", at, "chat", case_id=case,
                 interaction={"transferred": transferred})  # fmt: skip
        data.add(person, "chat", at + 4 * MINUTE, "survey_response", case_id=case,
                 survey={"metric": "ces", "score": ces})  # fmt: skip
    # two cases that switch from chat to the call centre before their answer
    for n in range(2):
        person, at, case = f"s{n}", t0 + 2 * HOUR + n * HOUR, f"case-s{n}"
        data.add(person, "chat", at, "chat", case_id=case, interaction={"resolved": False})
        data.add(person, "call_center", at + 10 * MINUTE, "call", case_id=case,
                 interaction={"transferred": False})  # fmt: skip
        data.add(person, "call_center", at + 15 * MINUTE, "survey_response", case_id=case,
                 survey={"metric": "nps", "score": 4 + n})  # fmt: skip
    for n, journey in enumerate(JOURNEYS):
        for i, type_ in enumerate(journey):
            data.add(f"j{n}", "web", t0 + 3 * HOUR + n * 7 * MINUTE + i * MINUTE, type_)
    for n in range(6):  # CSAT answers by e-mail
        data.add(f"e{n}", "email", t0 + 4 * HOUR + n * 9 * MINUTE, "survey_response",
                 survey={"metric": "csat", "score": 5 - n % 3})  # fmt: skip
    # one merge: a cookie and an e-mail address seen apart, then together at login
    m = t0 + 5 * HOUR
    data.add("m", "web", m, "page_view", identifiers={"anonymous_id": "anon-report-m"})
    data.add("m", "email", m + MINUTE, "email_open", identifiers={"email": "m@example.com"})
    data.add("m", "web", m + 2 * MINUTE, "login",
             identifiers={"anonymous_id": "anon-report-m", "email": "m@example.com"})  # fmt: skip
    # one refused link: two accounts show the same phone number
    data.add("r1", "web", m + 3 * MINUTE, "login",
             identifiers={"account_id": "acc-report-1", "phone": "+4915112345678"})  # fmt: skip
    data.add("r2", "web", m + 4 * MINUTE, "login",
             identifiers={"account_id": "acc-report-2", "phone": "+4915112345678"})  # fmt: skip
    data.broken = [
        ("not_json", b"{not json"),
        ("not_json", b"{still not json"),
        ("not_json", b"nope"),
        ("missing_field", orjson.dumps({"event_id": "r-bad", "type": "x"})),
        ("missing_field", orjson.dumps({"event_id": "r-bad2", "identifiers": {"email": "x@y.z"}})),
    ]
    return data


# --- what we sent, recomputed in Python ---------------------------------------------------


def nps(scores: list[float]) -> tuple[float, float]:
    n = len(scores)
    p = sum(s >= 9 for s in scores) / n
    d = sum(s < 7 for s in scores) / n
    return 100 * (p - d), 1.96 * 100 * math.sqrt(max(0.0, p + d - (p - d) ** 2) / n)


def expected_stage_moves(data: DataSet) -> Counter[tuple[str, str]]:
    """Each person's stage after each of their events (the stage of their latest typed
    event), and the moves between consecutive events whose stage differs."""
    moves: Counter[tuple[str, str]] = Counter()
    by_person: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in data.events:
        by_person[e["person"]].append(e)
    for events in by_person.values():
        stage, previous = "", ""
        for e in sorted(events, key=lambda e: (e["occurred_at"], e["event_id"])):
            stage = STAGE.get(e["type"], stage)
            if stage and previous and stage != previous:
                moves[(previous, stage)] += 1
            previous = stage or previous
    return moves


# --- independent SQL over the raw events --------------------------------------------------

NPS_BY_STEP = """
SELECT toUnixTimestamp(toStartOfInterval(occurred_at, INTERVAL {step} SECOND)) AS t,
       count() AS n, 100 * (countIf(survey_score >= 9) - countIf(survey_score <= 6)) / n
FROM {db}.events WHERE survey_metric = 'nps' AND channel = '{channel}'
GROUP BY t ORDER BY t
"""

#: transfers on the answer's case from the contacts' own `interaction` (not from effort)
NPS_BY_TRANSFERS = """
SELECT a.transfers > 0 AS transferred, count(),
       100 * (countIf(a.score >= 9) - countIf(a.score <= 6)) / count()
FROM
(
    SELECT s.event_id AS id, any(s.survey_score) AS score,
           countIf(c.transferred AND c.occurred_at <= s.occurred_at) AS transfers
    FROM {db}.events AS s
    LEFT JOIN (SELECT case_id, occurred_at, transferred FROM {db}.events
               WHERE type IN ('call', 'chat')) AS c ON c.case_id = s.case_id
    WHERE s.survey_metric = 'nps' AND s.case_id IS NOT NULL
    GROUP BY s.event_id
) AS a
GROUP BY transferred ORDER BY transferred
"""

#: stage moves with arrays: each customer's stages in event-time order, adjacent pairs
STAGE_MOVES = """
SELECT pair.1, pair.2, count()
FROM
(
    SELECT arrayMap(x -> x.3, arraySort(groupArray((occurred_at, event_id, journey_stage))))
               AS stages
    FROM {db}.events WHERE journey_stage != '' GROUP BY customer_id
)
ARRAY JOIN arrayFilter(p -> p.1 != p.2,
                       arrayZip(arrayPopBack(stages), arrayPopFront(stages))) AS pair
GROUP BY pair.1, pair.2
"""


def epoch_s(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def report_json(page: str) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S
    )
    assert match, "the page has no report-data block"
    return dict(json.loads(match.group(1)))


async def test_the_report_equals_what_was_sent_and_the_sql_and_draws_in_a_browser(
    stack: Stack, ch: Any, tmp_path: Path
) -> None:
    stack.env["TOUCHPOINT_ALERTS"] = json.dumps(
        {
            "score_drop": {
                "metrics": ["nps"],
                "segments": ["channel"],
                "window": "1h",
                "baseline": "6h",
                "min_responses": 20,
                "cooldown": "6h",
                "evaluate_every": 0.2,
            },
        }
    )
    assisted = [
        channel_topic(stack, c).removeprefix("touchpoints.") for c in ("call_center", "chat")
    ]
    stack.env["TOUCHPOINT_EFFORT_ASSISTED_CHANNELS"] = json.dumps(assisted)
    data = build(stack, int(time.time() * 1000))
    topics = sorted({channel_topic(stack, e["channel"]) for e in data.events})
    await create_topics(stack, topics)
    worker = await started(stack.start_worker())
    db = stack.database
    try:
        await produce(stack.bootstrap, data.messages(), None)

        async def recovered() -> bool:
            found = await scalar(ch, f"SELECT countIf(type = 'score.recovered') FROM {db}.alerts")
            return bool(found)

        await wait_for(recovered, worker, timeout=180, what="the web drop and its recovery")
        await settled(stack, [*topics, stack.env["TOUCHPOINT_ALERTS_TOPIC"]], worker)
    finally:
        worker.stop()

    output = tmp_path / "report.html"
    env = {**stack.env, "TOUCHPOINT_CLICKHOUSE_DATABASE": db}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams", "report", "--output", str(output),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    assert str(output) in out.decode()
    page = output.read_text(encoding="utf-8")
    document = report_json(page)
    rows = document["data"]
    web = channel_topic(stack, "web").removeprefix("touchpoints.")

    # the header: what the report covers
    covers = rows["coverage"]
    answers = [e for e in data.events if "survey" in e]
    assert covers["events"] == len(data.events)
    assert covers["customers"] == len({e["person"] for e in data.events})
    assert covers["answers"] == len(answers)
    assert covers["nps_answers"] == sum(e["survey"]["metric"] == "nps" for e in answers)
    assert covers["dead_letters"] == len(data.broken)
    assert epoch_s(covers["first_event"]) * 1000 == min(e["occurred_at"] for e in data.events)
    assert epoch_s(covers["last_event"]) * 1000 == max(e["occurred_at"] for e in data.events)
    step = covers["step_s"]
    assert step == 900  # nine hours of data: quarters of an hour

    # NPS over time on web: from what we sent, and from independent SQL
    sent: dict[int, list[float]] = defaultdict(list)
    for e in answers:
        if e["channel"] == "web":
            sent[e["occurred_at"] // 1000 // step * step].append(e["survey"]["score"])
    drawn = {
        int(epoch_s(r["period"])): r
        for r in rows["scores"]
        if r["segment_kind"] == "channel" and r["segment_value"] == web and r["metric"] == "nps"
    }  # fmt: skip
    assert set(drawn) == set(sent)
    for t, scores in sent.items():
        score, margin = nps(scores)
        assert drawn[t]["responses"] == len(scores)
        assert drawn[t]["score"] == pytest.approx(score)
        assert drawn[t]["margin"] == pytest.approx(margin)
    by_sql = (await ch.query(NPS_BY_STEP.format(db=db, step=step, channel=web))).result_rows
    assert [(t, n, pytest.approx(v)) for t, n, v in by_sql] == [
        (t, drawn[t]["responses"], drawn[t]["score"]) for t in sorted(drawn)
    ]

    # the figure draws those rows: the web panel's line, and the alerts on it
    nps_chart = next(c for c in document["charts"] if c["id"] == "nps_over_time")
    line = next(
        t for t in nps_chart["figure"]["data"] if t.get("name") == web and t["mode"] == "lines+markers"
    )  # fmt: skip
    assert line["y"] == [drawn[t]["score"] for t in sorted(drawn)]
    fired = (
        await ch.query(
            f"SELECT alert_id, type FROM {db}.alerts WHERE type LIKE 'score.%' "
            "ORDER BY JSONExtractString(payload, 'data', 'after', 'to'), type"
        )
    ).result_rows
    assert [t for _, t in fired] == ["score.dropped", "score.recovered"]
    alerts = rows["score_alerts"]
    assert [(a["alert_id"], a["type"]) for a in alerts] == [tuple(r) for r in fired]
    assert all(a["segment_value"] == web and a["metric"] == "nps" for a in alerts)
    dropped, recovered = alerts
    assert dropped["value"] < dropped["before"]["value"] - dropped["margin_of_error"]
    assert recovered["dropped_alert_id"] == dropped["alert_id"]
    incident_start, incident_end = data.start + 6 * HOUR, data.start + 8 * HOUR
    for a in alerts:  # marked where they were judged: during or after the incident
        at = epoch_s(a["at"])
        assert incident_start / 1000 < at <= incident_end / 1000 + 3600
    markers = {
        t["name"]: t for t in nps_chart["figure"]["data"] if t.get("name", "").startswith("score.")
    }
    assert markers["score.dropped"]["y"] == [dropped["value"]]
    assert markers["score.recovered"]["y"] == [recovered["value"]]

    # what drives NPS: answers about cases with and without a transfer
    with_transfer = [s for tr, _, s in CASES if tr]
    without = [s for tr, _, s in CASES if not tr] + [4, 5]  # and the two switched cases
    finding = next(
        f for f in document["findings"]["drivers"] if (f["driver"], f["metric"]) == ("transfers", "nps")
    )  # fmt: skip
    for side, scores in (("cases_with", with_transfer), ("cases_without", without)):
        score, margin = nps(scores)
        assert finding[side]["responses"] == len(scores)
        assert finding[side]["score"] == pytest.approx(score)
        assert finding[side]["margin"] == pytest.approx(margin)
    assert finding["difference"] == pytest.approx(nps(with_transfer)[0] - nps(without)[0])
    by_transfers = (await ch.query(NPS_BY_TRANSFERS.format(db=db))).result_rows
    assert [(n, pytest.approx(v)) for _, n, v in by_transfers] == [
        (len(without), finding["cases_without"]["score"]),
        (len(with_transfer), finding["cases_with"]["score"]),
    ]
    sentence = document["findings"]["sentence"]
    assert sentence.startswith("Do transfers and escalations hurt NPS in this data?")
    assert f"{finding['cases_with']['score']:.1f} with a transfer" in sentence
    assert sentence in page  # the page says it too
    ces = next(
        f for f in document["findings"]["drivers"] if (f["driver"], f["metric"]) == ("transfers", "ces")
    )  # fmt: skip
    assert ces["cases_with"]["score"] == pytest.approx(3.0)
    assert ces["cases_without"]["score"] == pytest.approx(19 / 3)

    # the journey: moves between stages, from what we sent and from SQL with arrays
    moves = {(r["from_stage"], r["to_stage"]): r["transitions"] for r in rows["stage_flow"]}
    assert moves == dict(expected_stage_moves(data))
    by_arrays = (await ch.query(STAGE_MOVES.format(db=db))).result_rows
    assert moves == {(a, b): n for a, b, n in by_arrays}
    stages = {r["stage"]: r["customers"] for r in rows["stages"]}
    assert stages == dict(
        (
            await ch.query(
                f"SELECT if(journey_stage = '', 'unknown', journey_stage), count() "
                f"FROM {db}.customer_360 GROUP BY 1"
            )
        ).result_rows
    )
    chat, call = (
        channel_topic(stack, c).removeprefix("touchpoints.") for c in ("chat", "call_center")
    )
    assert [(r["from_channel"], r["to_channel"], r["switches"]) for r in rows["case_switches"]] == [
        (chat, call, 2)
    ]

    # dead letters, merges, refusals
    assert Counter({r["reason"]: r["messages"] for r in rows["dead_letters"]}) == Counter(
        reason for reason, _ in data.broken
    )
    assert sum(r["merges"] for r in rows["merges"]) == 1
    assert {r["reason"]: r["refusals"] for r in rows["refusals"]} == {"unique:account_id": 1}

    # and in a real browser: no errors, no request, every chart drawn
    # (Playwright's sync API runs in a thread of its own, outside the test's event loop)
    shown = await asyncio.to_thread(render, output, SCREENSHOTS / "end_to_end.png")
    assert shown.console_errors == [] and shown.page_errors == []
    assert shown.requests == []
    assert [c["id"] for c in shown.charts] == [c["id"] for c in document["charts"]]
    for chart in shown.charts:
        assert chart["svgs"] > 0 and chart["traces"] > 0 and chart["marks"] > 0, chart
    assert (SCREENSHOTS / "end_to_end.png").stat().st_size > 10_000
