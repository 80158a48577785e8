"""The customer effort index (migration 0012) and ``touchpoint effort-check`` on the real
ClickHouse engine, over stored rows whose answers are known: constructed contacts and CES
answers go into ``effort_store`` and ``events_store``, and what the views and the check
queries give is compared with the definition computed in Python
(:func:`streams.domain.effort.customer_effort_index`) and with correlations worked out
here.
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from scipy.stats import spearmanr

from sinks.reports import (
    EFFORT_AT_ANSWERS,
    EFFORT_SEGMENT_CELLS,
    effort_check_report,
    format_effort_check,
)
from sinks.truth import EFFORT_RECOMPUTED, check_customer_effort
from streams.domain.effort import customer_effort_index

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
#: the answers are a few days back, so the views' own "now" plays no part in the check
T = datetime(2026, 11, 20, 12, tzinfo=UTC)
#: contact points of the four one-contact cases of c1..c6 before their answer, and the
#: CES each answers: harder cases, lower answers, while the old index is at its cap
LEVELS = [(20, 7), (35, 6), (50, 5), (65, 4), (80, 3), (95, 2)]
ASSISTED = ("chat", "call_center", "support")
EFFORT_COLUMNS = [
    "event_id", "occurred_at", "customer_id", "case_id", "channel", "journey_stage",
    "context", "points", "version",
]  # fmt: skip


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class Rows:
    """Contacts and answers, and how they go into the stores."""

    def __init__(self) -> None:
        self.contacts: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []

    def contact(
        self,
        customer: str,
        at: datetime,
        points: int,
        case_id: str | None = None,
        channel: str = "chat",
        context: dict[str, str] | None = None,
        wait_s: float = 0.0,
    ) -> None:
        event_id = f"e{len(self.contacts) + len(self.answers):04d}"
        self.contacts.append(
            {"event_id": event_id, "at": at, "customer": customer, "case_id": case_id,
             "points": points, "channel": channel, "context": context or {}, "wait_s": wait_s}
        )  # fmt: skip

    def answer(
        self,
        customer: str,
        at: datetime,
        ces: int,
        case_id: str | None = None,
        channel: str = "survey",
        context: dict[str, str] | None = None,
    ) -> None:
        event_id = f"e{len(self.contacts) + len(self.answers):04d}"
        self.answers.append(
            {"event_id": event_id, "at": at, "customer": customer, "case_id": case_id,
             "ces": ces, "channel": channel, "context": context or {}}
        )  # fmt: skip

    async def store(self, client: Any, database: str, *, derive_points: bool = False) -> None:
        """Into ``events_store`` and ``effort_store``; with ``derive_points`` the effort
        rows are the truth check's recomputation from the events (their points then
        follow the definition, not ``points``)."""
        events = [
            [c["event_id"], c["at"], c["channel"], "chat", c["customer"], c["case_id"], None,
             None, c["context"], c["wait_s"]]
            for c in self.contacts
        ] + [
            [a["event_id"], a["at"], a["channel"], "survey_response", a["customer"],
             a["case_id"], "ces", float(a["ces"]), a["context"], None]
            for a in self.answers
        ]  # fmt: skip
        await client.insert(
            f"{database}.events_store",
            events,
            column_names=[
                "event_id",
                "occurred_at",
                "channel",
                "type",
                "customer_id",
                "case_id",
                "survey_metric",
                "survey_score",
                "context",
                "wait_seconds",
            ],
        )
        if derive_points:
            recomputed = EFFORT_RECOMPUTED.format(db=database, repeat_s=7 * 86400)
            await client.command(
                f"INSERT INTO {database}.effort_store (event_id, occurred_at, customer_id, "
                f"case_id, channel, points, version) "
                f"SELECT event_id, at, cust, case_id, channel, pts, 1 FROM ({recomputed})",
                parameters={"assisted": list(ASSISTED)},
            )
            return
        await client.insert(
            f"{database}.effort_store",
            [
                [
                    c["event_id"],
                    c["at"],
                    c["customer"],
                    c["case_id"],
                    c["channel"],
                    "support",
                    c["context"],
                    c["points"],
                    1,
                ]
                for c in self.contacts
            ],
            column_names=EFFORT_COLUMNS,
        )


def close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def customer_rows() -> Rows:
    rows = Rows()
    for n, (points, ces) in enumerate(LEVELS, 1):
        answered = T + n * HOUR
        for days in (4, 3, 2, 1):
            rows.contact(f"c{n}", answered - days * DAY, points)
        rows.contact(f"c{n}", answered + HOUR, 100)  # after the answer: not seen by it
        rows.answer(f"c{n}", answered, ces)
    # a case answered about, and an older contact that weighs a quarter as much
    rows.contact("c7", T - 14 * DAY, 20)
    rows.contact("c7", T - HOUR, 40, case_id="k7", channel="call_center")
    rows.contact("c7", T - HOUR / 2, 50, case_id="k7", channel="chat")
    rows.answer("c7", T, 3, case_id="k7", channel="chat")
    rows.contact("c8", T - 30 * DAY, 70)  # nothing in the 28 days before the answer
    rows.answer("c8", T, 5)
    rows.answer("c9", T, 6)  # no contact at all
    return rows


async def test_effort_check_pairs_each_answer_with_the_index_at_that_moment(
    clickhouse_client: Any, clickhouse_database: str
) -> None:
    rows = customer_rows()
    await rows.store(clickhouse_client, clickhouse_database)
    db = clickhouse_database

    # the definition, in Python, at each answer from the contacts up to it
    expected: dict[str, tuple[float, float | None, int, float | None]] = {}
    for a in rows.answers:
        seen = [c for c in rows.contacts if c["customer"] == a["customer"] and c["at"] <= a["at"]]
        index = customer_effort_index(
            [(c["case_id"], c["event_id"], ms(c["at"]), c["points"]) for c in seen], ms(a["at"])
        )
        old = min(100, sum(c["points"] for c in seen if c["at"] >= a["at"] - 28 * DAY))
        case = (
            sum(c["points"] for c in seen if c["case_id"] == a["case_id"]) if a["case_id"] else None
        )
        expected[a["event_id"]] = (a["ces"], index, old, case)
    got = {
        r[0]: r[1:]
        for r in (
            await clickhouse_client.query(
                f"SELECT answer, ces, customer_index, customer_sum_index, case_effort, cases "
                f"FROM ({EFFORT_AT_ANSWERS.format(db=db)})"
            )
        ).result_rows
    }
    assert set(got) == set(expected)
    for answer, (ces, index, old, case) in expected.items():
        g_ces, g_index, g_old, g_case, _ = got[answer]
        assert g_ces == ces
        assert (g_index is None) == (index is None), answer
        if index is not None:
            assert abs(g_index - round(index, 1)) < 1e-9, answer
        assert g_old == old, answer
        if case is not None:
            assert g_case == case
    # the hand-worked ones: c1..c6 at their level, c7 a quarter of the old contact
    assert [got[a["event_id"]][1] for a in rows.answers[:6]] == [p for p, _ in LEVELS]
    c7 = (20 * 0.25 + 90 * 2 ** (-0.5 / 168)) / (0.25 + 2 ** (-0.5 / 168))
    assert got[rows.answers[6]["event_id"]][1] == round(c7, 1)
    assert got[rows.answers[7]["event_id"]][1] is None  # c8: no case in 28 days
    assert got[rows.answers[8]["event_id"]][1:3] == (None, 0)  # c9: no contact

    # the correlations, as statistics computes them
    answers = (await clickhouse_client.query(EFFORT_AT_ANSWERS.format(db=db))).result_rows
    with_index = [(v[0], v[1]) for v in expected.values() if v[1] is not None]
    ces_i, idx = [c for c, _ in with_index], [round(i or 0, 1) for _, i in with_index]
    ces_all, old_all = [v[0] for v in expected.values()], [float(v[2]) for v in expected.values()]
    report = effort_check_report(answers, [], kind="channel", period="week", min_answers=5)
    new, old = report["customer_index"], report["customer_sum_index"]
    assert new["n"] == 7 and old["n"] == 9 == report["ces_answers"]
    assert close(new["pearson"], round(statistics.correlation(ces_i, idx), 4))
    # Spearman with ties (two answers of 3) at their mean rank
    assert close(new["spearman"], round(float(spearmanr(ces_i, idx).statistic), 4))
    assert close(old["pearson"], round(statistics.correlation(ces_all, old_all), 4))
    assert close(old["spearman"], round(float(spearmanr(ces_all, old_all).statistic), 4))
    # the new index tracks these answers, the capped sum barely does
    assert new["pearson"] < -0.9 and new["spearman"] < -0.9
    assert old["pearson"] > -0.5
    assert report["case_effort"]["n"] == 1
    by = {b["ces"]: b for b in report["by_score"]}
    assert by[7]["mean_customer_index"] == 20.0 and by[7]["mean_customer_sum_index"] == 80.0
    assert by[6]["answers"] == 2 and by[6]["answers_with_index"] == 1
    text = format_effort_check(report)
    assert "customer effort index" in text and "old customer index" in text


async def test_the_segment_check_compares_cells_with_enough_answers(
    clickhouse_client: Any, clickhouse_database: str
) -> None:
    rows = Rows()
    day1, day2 = T, T + DAY
    eu, us = {"region": "eu"}, {"region": "us"}
    for points in (20, 30):
        rows.contact("a", day1, points, channel="chat", context=eu)
    rows.contact("a", day2, 60, channel="chat", context=eu)
    for points in (40, 40, 50):
        rows.contact("b", day1, points, channel="call_center", context=us)
    rows.contact("b", day2, 90, channel="call_center", context=us)
    rows.contact("c", day1, 10, channel="support", context=us)  # no answers there
    for ces in (7, 6):
        rows.answer("a", day1 + HOUR, ces, channel="chat", context=eu)
    for ces in (4, 3):
        rows.answer("a", day2 + HOUR, ces, channel="chat", context=eu)
    for ces in (5, 5, 4):
        rows.answer("b", day1 + HOUR, ces, channel="call_center", context=us)
    rows.answer("b", day2 + HOUR, 2, channel="call_center", context=us)  # one: too few
    await rows.store(clickhouse_client, clickhouse_database)
    db = clickhouse_database

    cell = {"kind": "channel", "period": "day", "min_answers": 2}
    cells = (
        await clickhouse_client.query(EFFORT_SEGMENT_CELLS.format(db=db), parameters=cell)
    ).result_rows
    assert [(v, str(p), n, round(i, 2), a, round(m, 3)) for v, p, n, i, a, m in cells] == [
        ("call_center", str(day1.date()), 3, 43.33, 3, 4.667),
        ("chat", str(day1.date()), 2, 25.0, 2, 6.5),
        ("chat", str(day2.date()), 1, 60.0, 2, 3.5),
    ]
    report = effort_check_report([], cells, kind="channel", period="day", min_answers=2)
    segment = report["segment_index"]
    index, ces = [130 / 3, 25.0, 60.0], [14 / 3, 6.5, 3.5]
    assert (segment["cells"], segment["answers"]) == (3, 7)
    assert close(segment["pearson"], round(statistics.correlation(ces, index), 4))
    assert segment["spearman"] == -1.0
    assert report["ces_answers"] == 0
    assert format_effort_check(report).startswith("no CES answers yet")

    # a context dimension over weeks: the regions, each in one cell
    by_region = {"kind": "region", "period": "week", "min_answers": 1}
    regions = (
        await clickhouse_client.query(EFFORT_SEGMENT_CELLS.format(db=db), parameters=by_region)
    ).result_rows
    assert [(v, n, round(i, 2), a) for v, _, n, i, a, _ in regions] == [
        ("eu", 3, 36.67, 4),
        ("us", 5, 46.0, 4),
    ]


async def test_the_customer_view_equals_the_definition_and_the_truth_check_sees_a_change(
    clickhouse_client: Any, clickhouse_database: str
) -> None:
    """``customer_effort`` and ``customer_360.effort_index`` at the server's now: the
    Python definition, and the truth check's recomputation from ``events``, agree with
    them; a contact the view sees but ``events`` does not is found."""
    db = clickhouse_database
    now = (await clickhouse_client.query("SELECT now64(3)")).result_rows[0][0]
    rows = Rows()
    # light: one case of two contacts (the second a repeat, on another channel, after a
    # ten-minute wait); heavy: ten such cases
    rows.contact("light", now - 2 * DAY, 0, case_id="k1")
    rows.contact("light", now - 2 * DAY + HOUR, 0, case_id="k1", channel="call_center",
                 wait_s=600)  # fmt: skip
    for n in range(10):
        rows.contact("heavy", now - (n + 1) * DAY, 0, case_id=f"h{n}")
        rows.contact("heavy", now - (n + 1) * DAY + HOUR, 0, case_id=f"h{n}",
                     channel="call_center", wait_s=600)  # fmt: skip
    rows.contact("mixed", now - 20 * DAY, 0, wait_s=900)
    rows.contact("mixed", now - 6 * DAY, 0, case_id="m")
    rows.contact("mixed", now - 3 * DAY, 0, case_id="m", wait_s=300)
    rows.contact("mixed", now - DAY, 0)
    rows.contact("gone", now - 40 * DAY, 0, wait_s=120)
    await rows.store(clickhouse_client, db, derive_points=True)
    customers = sorted({c["customer"] for c in rows.contacts} | {"quiet"})
    await clickhouse_client.insert(
        f"{db}.customer_360_store",
        [[c, 1, 0] for c in customers],
        column_names=["customer_id", "version", "deleted"],
    )
    stored = await clickhouse_client.query(f"SELECT event_id, points FROM {db}.effort")
    points = dict(stored.result_rows)
    assert points["e0001"] == 10 + 20 + 15 + 10  # repeat, switch, ten minutes

    result = await clickhouse_client.query(
        f"SELECT e.customer_id, e.effort_index_28d, e.effort_index_7d, e.cases_28d, "
        f"e.effort_sum_index_28d, c.effort_index, now64(3) "
        f"FROM {db}.customer_effort AS e "
        f"LEFT JOIN {db}.customer_360 AS c ON c.customer_id = e.customer_id"
    )
    view = {r[0]: r[1:] for r in result.result_rows}
    assert set(view) == {"light", "heavy", "mixed", "gone"}
    for customer, (index, index_7d, _, _, shown, at) in view.items():
        mine = [
            (c["case_id"], c["event_id"], ms(c["at"]), points[c["event_id"]])
            for c in rows.contacts
            if c["customer"] == customer
        ]
        want = customer_effort_index(mine, ms(at))
        want_7d = customer_effort_index(mine, ms(at), window_ms=7 * 86_400_000)
        assert (index is None) == (want is None) and shown == index, customer
        assert (index_7d is None) == (want_7d is None), customer
        if want is not None:
            assert abs(index - want) <= 0.05 + 1e-9, customer
        if want_7d is not None:
            assert abs(index_7d - want_7d) <= 0.05 + 1e-9, customer
    case = 10 + 55  # a light or heavy case: its two contacts
    assert view["light"][0] == view["heavy"][0] == case  # the same, light or heavy
    assert view["light"][3] == case and view["heavy"][3] == 100  # the old index is not
    assert view["gone"][0] is None and view["gone"][2] == 0
    assert view["heavy"][2] == 10

    truth = await check_customer_effort(clickhouse_client, db, ASSISTED)
    assert truth.ok, truth
    assert truth.compared == 5  # four with contacts, and "quiet" with none
    # a contact the stream stored that the raw events do not hold changes the index
    await clickhouse_client.insert(
        f"{db}.effort_store",
        [["extra", now - HOUR, "light", None, "chat", "support", {}, 100, 1]],
        column_names=EFFORT_COLUMNS,
    )
    truth = await check_customer_effort(clickhouse_client, db, ASSISTED)
    assert not truth.ok and truth.differing == 1 and "'light'" in truth.examples[0]
