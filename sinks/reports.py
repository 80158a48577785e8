"""Questions the project asks of ClickHouse itself: how well effort tracks CES answers.

Effort points are a weighting of behaviour, not a measurement of what customers say;
``touchpoint effort-check`` checks them against the CES answers in the data. Each CES
answer is paired with, all resolved to the customer it belongs to now:

* case effort: for an answer that names a ``case_id``, the sum of the effort points of
  that case's contacts up to the answer;
* the customer effort index at the moment of the answer, as ``customer_effort`` would
  have shown it then (migration 0012): the time-decayed mean (half-life 7 days) of the
  efforts of the customer's cases active in the 28 days up to the answer, each case's
  effort the points of its contacts up to the answer, at most 100; NULL (left out)
  when the customer had no such case;
* for comparison, the old customer index: the points of the customer's contacts in the
  28 days up to the answer, at most 100.

And the segment effort index (mean points per contact) is compared with the mean CES
answer cell by cell: a cell is one value of a segment kind (``channel`` by default, or
``journey_stage``, or a context dimension) in one day or week of event time, with at
least ``min_answers`` CES answers given in it; an answer is in the segment value of its
own event.

For each it gives Pearson's and Spearman's correlation with the CES score and the sample
size. CES is "7 = easy", so effort that tracks it correlates negatively.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CUSTOMER_INDEX_HALF_LIFE_DAYS",
    "CUSTOMER_INDEX_WINDOW_DAYS",
    "EFFORT_AT_ANSWERS",
    "EFFORT_SEGMENT_CELLS",
    "SEGMENT_PERIODS",
    "effort_check_report",
    "format_effort_check",
    "pearson",
    "spearman",
]

#: The customer index's half-life and window (migration 0012, README "Effort").
CUSTOMER_INDEX_HALF_LIFE_DAYS = 7
CUSTOMER_INDEX_WINDOW_DAYS = 28

#: The periods a segment cell can span.
SEGMENT_PERIODS = ("day", "week")

# One row per CES answer and case of its customer (a contact without a case is a case of
# its own): the case's contacts, points and latest contact up to the answer. An answer
# whose customer has no contact at all keeps one row with no contacts (the LEFT JOIN's
# defaults, recognised by the empty event id).
_CASES_AT_ANSWERS = """
    SELECT a.event_id AS answer, a.survey_score AS ces, a.case_id AS answer_case,
           a.occurred_at AS answered_at,
           f.case_id AS case_id, if(f.case_id IS NULL, f.event_id, '') AS lone_contact,
           countIf(f.event_id != '' AND f.occurred_at <= a.occurred_at) AS contacts,
           sumIf(f.points, f.event_id != '' AND f.occurred_at <= a.occurred_at) AS points,
           maxIf(f.occurred_at, f.event_id != '' AND f.occurred_at <= a.occurred_at) AS latest,
           sumIf(f.points, f.event_id != '' AND f.occurred_at <= a.occurred_at
                 AND f.occurred_at >= a.occurred_at - INTERVAL 28 DAY) AS points_28d
    FROM (SELECT event_id, customer_id, occurred_at, survey_score, case_id
          FROM {db}.events WHERE survey_metric = 'ces') AS a
    LEFT JOIN {db}.effort AS f ON f.customer_id = a.customer_id
    GROUP BY answer, ces, answer_case, answered_at, case_id, lone_contact
"""

#: One row per CES answer (``answer``, ``ces``, ``answer_case``): the effort of the case it
#: is about (``case_effort``), and at the moment of the answer the customer's active cases
#: (``cases``), customer index (``customer_index``, NULL without a case) and old 28-day
#: sum index (``customer_sum_index``).
EFFORT_AT_ANSWERS = (
    """
    SELECT answer, ces, answer_case,
           sumIf(points, ifNull(case_id = answer_case, false)) AS case_effort,
           countIf(contacts > 0 AND latest >= answered_at - INTERVAL 28 DAY) AS cases,
           if(cases = 0, NULL,
              round(sumIf(weight * least(100, points),
                          contacts > 0 AND latest >= answered_at - INTERVAL 28 DAY)
                    / sumIf(weight, contacts > 0 AND latest >= answered_at - INTERVAL 28 DAY),
                    1)) AS customer_index,
           least(100, sum(points_28d)) AS customer_sum_index
    FROM (
        SELECT *, exp2((toUnixTimestamp64Milli(latest) - toUnixTimestamp64Milli(answered_at))
                       / 604800000) AS weight
        FROM ("""
    + _CASES_AT_ANSWERS
    + """)
    )
    GROUP BY answer, ces, answer_case
"""
)

# (doubled braces: the queries are filled in with str.format(db=...), then bound)
_SEGMENT_VALUE = (
    "multiIf({{kind:String}} = 'channel', toString(channel), "
    "{{kind:String}} = 'journey_stage', "
    "if(journey_stage = '', 'unknown', toString(journey_stage)), "
    "context[{{kind:String}}])"
)
_PERIOD = "if({{period:String}} = 'week', toMonday(occurred_at), toDate(occurred_at))"

#: Parameters ``kind``, ``period`` (:data:`SEGMENT_PERIODS`), ``min_answers``: one row per
#: cell (segment value x period) with that many CES answers: value, period start,
#: contacts, segment effort index (mean points per contact), answers, mean CES.
EFFORT_SEGMENT_CELLS = f"""
SELECT e.value, e.period, e.contacts, e.effort_index, a.answers, a.mean_ces
FROM
(
    SELECT {_SEGMENT_VALUE} AS value, {_PERIOD} AS period,
           count() AS contacts, sum(points) / count() AS effort_index
    FROM {{db}}.effort GROUP BY value, period
) AS e
INNER JOIN
(
    SELECT {_SEGMENT_VALUE} AS value, {_PERIOD} AS period,
           count() AS answers, avg(survey_score) AS mean_ces
    FROM {{db}}.events WHERE survey_metric = 'ces' GROUP BY value, period
) AS a ON e.value = a.value AND e.period = a.period
WHERE a.answers >= {{{{min_answers:UInt32}}}} AND e.value != ''
ORDER BY e.value, e.period
"""


def _number(x: Any) -> float | None:
    """A correlation or mean as JSON can carry it: None when undefined (NaN)."""
    return None if x is None or x != x else round(float(x), 4)


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    first = 0
    while first < len(order):
        last = first
        while last + 1 < len(order) and values[order[last + 1]] == values[order[first]]:
            last += 1
        for k in range(first, last + 1):
            out[order[k]] = (first + last) / 2 + 1
        first = last + 1
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; None when it is undefined (fewer than two pairs, or a constant)."""
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return statistics.correlation([float(v) for v in x], [float(v) for v in y])


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the ranks, ties at their mean rank (CES answers are
    whole numbers, so ties are the rule; ClickHouse's ``rankCorr`` uses the formula
    that holds only without ties)."""
    return pearson(_ranks(x), _ranks(y))


def _correlation(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    x, y = [a for a, _ in pairs], [b for _, b in pairs]
    return {"n": len(pairs), "pearson": _number(pearson(x, y)), "spearman": _number(spearman(x, y))}


def _mean(values: list[float]) -> float | None:
    return _number(statistics.fmean(values)) if values else None


def effort_check_report(
    answers: Sequence[Sequence[Any]],
    cells: Sequence[Sequence[Any]],
    *,
    kind: str,
    period: str,
    min_answers: int,
) -> dict[str, Any]:
    """The rows of :data:`EFFORT_AT_ANSWERS` and :data:`EFFORT_SEGMENT_CELLS` as one
    report (what ``touchpoint effort-check --json`` prints): for each effort measure the
    number of pairs and Pearson's and Spearman's correlation with the CES score (None
    when undefined), the means per CES score, and the cells."""
    rows = [
        {
            "ces": float(ces),
            "case": case,
            "case_effort": float(case_effort),
            "index": None if index is None else float(index),
            "sum_index": float(sum_index),
        }
        for _, ces, case, case_effort, _, index, sum_index in answers
    ]
    scores = sorted({round(r["ces"]) for r in rows})
    segment = [(float(ces), float(index)) for _, _, _, index, _, ces in cells]
    return {
        "ces_answers": len(rows),
        "customer_index": {
            "definition": (
                f"time-decayed mean (half-life {CUSTOMER_INDEX_HALF_LIFE_DAYS} days) of the "
                f"efforts of the customer's cases active in the {CUSTOMER_INDEX_WINDOW_DAYS} "
                "days up to the answer, each at most 100"
            ),
            **_correlation([(r["ces"], r["index"]) for r in rows if r["index"] is not None]),
        },
        "customer_sum_index": {
            "definition": "old: points of the customer's contacts in the 28 days up to the "
            "answer, at most 100",
            **_correlation([(r["ces"], r["sum_index"]) for r in rows]),
        },
        "case_effort": {
            "definition": "points of the answered case's contacts up to the answer",
            **_correlation([(r["ces"], r["case_effort"]) for r in rows if r["case"] is not None]),
        },
        "segment_index": {
            "definition": "mean points per contact of a segment cell vs the cell's mean CES",
            "kind": kind,
            "period": period,
            "min_answers": min_answers,
            "cells": len(segment),
            "answers": sum(int(c[4]) for c in cells),
            "pearson": _number(pearson([a for a, _ in segment], [b for _, b in segment])),
            "spearman": _number(spearman([a for a, _ in segment], [b for _, b in segment])),
            "rows": [
                {
                    "value": str(value),
                    "period": str(start),
                    "contacts": int(contacts),
                    "effort_index": _number(index),
                    "answers": int(n),
                    "mean_ces": _number(ces),
                }
                for value, start, contacts, index, n, ces in cells
            ],
        },
        "by_score": [
            {
                "ces": score,
                "answers": len(at := [r for r in rows if round(r["ces"]) == score]),
                "mean_customer_index": _mean([r["index"] for r in at if r["index"] is not None]),
                "answers_with_index": sum(1 for r in at if r["index"] is not None),
                "mean_customer_sum_index": _mean([r["sum_index"] for r in at]),
                "answers_with_case": sum(1 for r in at if r["case"] is not None),
                "mean_case_effort": _mean([r["case_effort"] for r in at if r["case"] is not None]),
            }
            for score in scores
        ],
    }


def format_effort_check(report: dict[str, Any]) -> str:
    """:func:`effort_check_report` as the text ``touchpoint effort-check`` prints."""
    if not report["ces_answers"]:
        return "no CES answers yet: nothing to compare effort with"

    def r(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.3f}"

    def avg(x: float | None) -> str:
        return "" if x is None else f"{x:.1f}"

    def ces(x: float | None) -> str:
        return "" if x is None else f"{x:.2f}"

    def line(label: str, part: dict[str, Any], n: str = "answers") -> str:
        count = part.get("n", part.get("cells", 0))
        return (
            f"  {label:<44} {n}={count:<5,} Pearson r={r(part['pearson'])}  "
            f"Spearman r={r(part['spearman'])}"
        )

    seg = report["segment_index"]
    half_life, window = CUSTOMER_INDEX_HALF_LIFE_DAYS, CUSTOMER_INDEX_WINDOW_DAYS
    return "\n".join(
        [
            "effort vs CES answers (CES 7 = easy: a negative r means effort tracks it)",
            line(
                f"customer effort index (cases, {window} d, half-life {half_life} d)",
                report["customer_index"],
            ),
            line("old customer index (points in 28 d, capped)", report["customer_sum_index"]),
            line("case effort points, answers about a case", report["case_effort"]),
            line(
                f"segment effort index, {seg['kind']} x {seg['period']}",
                seg,
                "cells",
            )
            + f"  ({seg['answers']:,} answers, cells with {seg['min_answers']}+)",
            "",
            "  CES  answers  mean customer index  old index   with case  mean case effort",
            *(
                f"  {b['ces']:>3}  {b['answers']:>7,}  {avg(b['mean_customer_index']):>19}  "
                f"{avg(b['mean_customer_sum_index']):>9}   {b['answers_with_case']:>9,}  "
                f"{avg(b['mean_case_effort']):>16}"
                for b in report["by_score"]
            ),
            "",
            f"  {seg['kind']:<14} {seg['period']:<10}  contacts  effort index  answers  mean CES",
            *(
                f"  {c['value']:<14} {c['period']:<10}  {c['contacts']:>8,}  "
                f"{avg(c['effort_index']):>12}  {c['answers']:>7,}  {ces(c['mean_ces']):>8}"
                for c in seg["rows"]
            ),
        ]
    )
