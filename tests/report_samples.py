"""Report rows as :func:`sinks.report_queries.load_report_data` returns them, made up
for tests of the page that need no ClickHouse: a full set (every chart has data, a
segment value that tries to end the script element) and an empty one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["EVIL", "empty_data", "sample_data", "tally_row"]

EVIL = "</script><script>window.hacked=1</script>&<b>"
DAY = 86_400


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tally_row(metric: str, scores: list[float], **key: Any) -> dict[str, Any]:
    """One row of summed tallies for these answers, with score and margin as the SQL
    computes them (CONTRACT section 2)."""
    import math

    n = len(scores)
    promoters = sum(s >= 9 for s in scores) if metric == "nps" else 0
    detractors = sum(s < 7 for s in scores) if metric == "nps" else 0
    passives = n - promoters - detractors if metric == "nps" else 0
    positive = sum(
        s >= 9 if metric == "nps" else s >= 4 if metric == "csat" else s >= 5 for s in scores
    )
    milli = [round(s * 1000) for s in scores]
    if metric == "nps":
        p, d = promoters / n, detractors / n
        score = 100 * (p - d)
        margin: float | None = 1.96 * 100 * math.sqrt(max(0.0, p + d - (p - d) ** 2) / n)
    elif metric == "csat":
        score = 100 * positive / n
        margin = 1.96 * 100 * math.sqrt(score / 100 * (1 - score / 100) / n)
    else:
        score = sum(milli) / 1000 / n
        margin = (
            1.96
            * math.sqrt(
                max(0.0, (sum(m * m for m in milli) - sum(milli) ** 2 / n) / (n - 1)) / 1e6 / n
            )
            if n > 1
            else None
        )
    return {
        **key,
        "metric": metric,
        "responses": n,
        "promoters": promoters,
        "passives": passives,
        "detractors": detractors,
        "positive": positive,
        "score_sum_milli": sum(milli),
        "score_sq_sum_micro": sum(m * m for m in milli),
        "score": score,
        "margin": margin,
        "share_positive": 100 * positive / n,
    }


def sample_data() -> dict[str, Any]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    days = [start + timedelta(days=i) for i in range(10)]
    scores = []
    for i, day in enumerate(days):
        for channel, base in (("web", [10, 9, 8, 6, 10]), ("mobile_app", [9, 10, 7, 3, 9])):
            answers = [0, 2, 3, 6, 1] if channel == "mobile_app" and 5 <= i <= 6 else base
            key = {"period": _iso(day), "segment_kind": "channel", "segment_value": channel}
            scores.append(tally_row("nps", answers, **key))
            scores.append(tally_row("csat", [5, 4, 3, 5][: 2 + i % 3], **key))
            scores.append(tally_row("ces", [7, 5, 6, 2][: 2 + i % 3], **key))
        scores.append(
            tally_row(
                "nps", [10, 3, 9], period=_iso(day), segment_kind="region", segment_value=EVIL
            )
        )
    effort = [
        {"period": _iso(day), "segment_kind": kind, "segment_value": value, "contacts": 10 + i,
         "effort_points": 400 + 10 * i, "effort_index": (400 + 10 * i) / (10 + i),
         "transfers": 2, "escalations": 1, "repeat_contacts": 3, "channel_switches": 1}
        for i, day in enumerate(days)
        for kind, value in (("channel", "call_center"), ("channel", "chat"),
                            ("journey_stage", "support"), ("journey_stage", "usage"))
    ]  # fmt: skip
    drop_to = _iso(days[6] + timedelta(hours=12))
    alerts = [
        {"alert_id": "msg_drop", "type": "score.dropped", "segment_kind": "channel",
         "segment_value": "mobile_app", "metric": "nps", "at": drop_to, "fired_at": drop_to,
         "value": -60.0,
         "before": {"value": 20.0, "responses": 40, "margin": 25.0, "from": _iso(days[0]),
                    "to": _iso(days[5])},
         "after": {"value": -60.0, "responses": 10, "margin": 40.0, "from": _iso(days[5]),
                   "to": drop_to},
         "difference": -80.0, "margin_of_error": 47.2, "z": 3.3, "dropped_alert_id": None},
        {"alert_id": "msg_recovered", "type": "score.recovered", "segment_kind": "channel",
         "segment_value": "mobile_app", "metric": "nps", "at": _iso(days[8]),
         "fired_at": _iso(days[8]), "value": 20.0,
         "before": {"value": 0.0, "responses": 40, "margin": 25.0, "from": _iso(days[1]),
                    "to": _iso(days[7])},
         "after": {"value": 20.0, "responses": 10, "margin": 40.0, "from": _iso(days[7]),
                   "to": _iso(days[8])},
         "difference": 20.0, "margin_of_error": 47.2, "z": -0.8,
         "dropped_alert_id": "msg_drop"},
    ]  # fmt: skip
    drivers = []
    for driver in ("transfers", "escalations", "repeat_contacts", "channel_switches"):
        for level, nps_scores, ces_scores in (
            ("0", [10, 9, 9, 8, 10, 7, 9, 6], [7, 6, 6, 5]),
            ("1", [6, 3, 9, 5, 2], [3, 4, 2]),
            ("2", [0, 4, 1], [2, 1]),
            ("3+", [1, 2], [1]),
        ):
            drivers.append(tally_row("nps", nps_scores, driver=driver, level=level))
            drivers.append(tally_row("ces", ces_scores, driver=driver, level=level))
    return {
        "coverage": {
            "first_event": _iso(days[0]), "last_event": _iso(days[-1] + timedelta(hours=23)),
            "events": 12_345, "customers": 678, "answers": 910, "nps_answers": 400,
            "csat_answers": 300, "ces_answers": 210, "answers_about_a_case": 250,
            "dead_letters": 15, "step_s": DAY, "dead_letter_step_s": DAY,
        },
        "scores": scores,
        "effort": effort,
        "score_alerts": alerts,
        "stages": [{"stage": "usage", "customers": 300}, {"stage": "support", "customers": 120},
                   {"stage": EVIL, "customers": 1}],
        "stage_flow": [
            {"from_stage": "awareness", "to_stage": "consideration", "transitions": 50,
             "customers": 40},
            {"from_stage": "usage", "to_stage": "support", "transitions": 30, "customers": 25},
            {"from_stage": "support", "to_stage": "usage", "transitions": 28, "customers": 24},
        ],
        "case_switches": [
            {"from_channel": "chat", "to_channel": "call_center", "switches": 12},
            {"from_channel": "call_center", "to_channel": "support", "switches": 7},
        ],
        "drivers": drivers,
        "dead_letters": [
            {"period": _iso(days[2]), "reason": "not_json", "messages": 5},
            {"period": _iso(days[2]), "reason": "missing_field", "messages": 3},
            {"period": _iso(days[4]), "reason": "not_json", "messages": 7},
        ],
        "merges": [{"reason": "shared_identifier:email", "merges": 9}],
        "refusals": [{"reason": "unique:account_id", "refusals": 2}],
    }  # fmt: skip


def empty_data() -> dict[str, Any]:
    return {
        "coverage": {
            "first_event": None, "last_event": None, "events": 0, "customers": 0,
            "answers": 0, "nps_answers": 0, "csat_answers": 0, "ces_answers": 0,
            "answers_about_a_case": 0, "dead_letters": 0, "step_s": 60,
            "dead_letter_step_s": 60,
        },
        "scores": [], "effort": [], "score_alerts": [], "stages": [], "stage_flow": [],
        "case_switches": [], "drivers": [], "dead_letters": [], "merges": [], "refusals": [],
    }  # fmt: skip
