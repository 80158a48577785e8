"""Questions the project asks of ClickHouse itself: how well effort tracks CES answers.

Effort points are a weighting of behaviour, not a measurement of what customers say;
:data:`EFFORT_VS_CES` checks them against the CES answers in the data, two ways:

* case effort: for an answer that names a ``case_id``, the sum of the effort points of
  that case's contacts up to the answer;
* customer effort index: for every answer, the customer's effort index at that moment,
  the points of their contacts in the 28 days up to the answer, capped at 100 (both
  resolved to the customer they belong to now).

For each it gives Pearson's and Spearman's correlation with the CES score and the sample
size. CES is "7 = easy", so effort that tracks it correlates negatively.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EFFORT_VS_CES", "EFFORT_VS_CES_BY_SCORE", "format_effort_vs_ces"]

_PAIRS = """
    SELECT a.event_id AS answer, any(a.survey_score) AS ces, any(a.case_id) AS answer_case,
           sumIf(f.points, f.case_id = a.case_id AND f.occurred_at <= a.occurred_at)
               AS case_effort,
           least(100, sumIf(f.points, f.occurred_at <= a.occurred_at
                            AND f.occurred_at > a.occurred_at - INTERVAL 28 DAY))
               AS customer_index
    FROM (SELECT event_id, customer_id, occurred_at, survey_score, case_id
          FROM {db}.events WHERE survey_metric = 'ces') AS a
    LEFT JOIN {db}.effort AS f ON f.customer_id = a.customer_id
    GROUP BY a.event_id
"""

#: case: r, rank r, answers; customer index: r, rank r, answers.
EFFORT_VS_CES = (
    "SELECT corrIf(ces, toFloat64(case_effort), answer_case IS NOT NULL), "
    "rankCorrIf(ces, toFloat64(case_effort), answer_case IS NOT NULL), "
    "countIf(answer_case IS NOT NULL), "
    "corr(ces, toFloat64(customer_index)), rankCorr(ces, toFloat64(customer_index)), count() "
    "FROM (" + _PAIRS + ")"
)

#: CES score -> answers with a case, their mean case effort; answers, mean customer index.
EFFORT_VS_CES_BY_SCORE = (
    "SELECT round(ces) AS score, countIf(answer_case IS NOT NULL), "
    "avgIf(case_effort, answer_case IS NOT NULL), count(), avg(customer_index) "
    "FROM (" + _PAIRS + ") GROUP BY score ORDER BY score"
)


def format_effort_vs_ces(summary: tuple[Any, ...], by_score: list[tuple[Any, ...]]) -> str:
    case_r, case_rank, case_n, index_r, index_rank, answers = summary
    if not answers:
        return "no CES answers yet: nothing to compare effort with"

    def show(x: Any) -> str:
        return "n/a" if x is None or x != x else f"{x:+.3f}"

    def avg(x: Any) -> str:
        return "" if x is None or x != x else f"{x:.1f}"

    return "\n".join(
        [
            "effort vs CES answers (CES 7 = easy: a negative r means effort tracks it)",
            f"  case effort points, answers about a case: n={case_n:,}  "
            f"Pearson r={show(case_r)}  Spearman r={show(case_rank)}",
            f"  customer effort index (28 days), all answers: n={answers:,}  "
            f"Pearson r={show(index_r)}  Spearman r={show(index_rank)}",
            "  CES   with case  mean case effort   answers  mean customer index",
            *(
                f"  {int(s):>3}   {nc:>9,}  {avg(ce):>16}   {n:>7,}  {avg(ci):>19}"
                for s, nc, ce, n, ci in by_score
            ),
        ]
    )
