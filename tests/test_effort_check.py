"""The correlations ``touchpoint effort-check`` reports, against their textbook reading."""

from __future__ import annotations

import math
import statistics

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sinks.reports import effort_check_report, format_effort_check, pearson, spearman

pairs_st = st.lists(
    st.tuples(st.integers(1, 7), st.integers(0, 1000).map(lambda i: i / 10)),
    min_size=3,
    max_size=40,
)


def mean_ranks(values: list[float]) -> list[float]:
    """Each value's rank: 1 + how many are smaller + half of the others equal to it."""
    return [1 + sum(v < x for v in values) + (sum(v == x for v in values) - 1) / 2 for x in values]


@settings(max_examples=200, deadline=None)
@given(pairs=pairs_st)
def test_spearman_is_pearson_of_mean_ranks_and_ignores_monotone_rescaling(
    pairs: list[tuple[int, float]],
) -> None:
    x, y = [float(a) for a, _ in pairs], [b for _, b in pairs]
    assume(len(set(x)) > 1 and len(set(y)) > 1)
    rho = spearman(x, y)
    assert rho is not None
    assert math.isclose(rho, statistics.correlation(mean_ranks(x), mean_ranks(y)), abs_tol=1e-9)
    rescaled = spearman([math.exp(v) for v in x], [v**3 + 2 for v in y])  # still in order
    assert rescaled is not None and math.isclose(rho, rescaled, abs_tol=1e-9)
    r = pearson(x, y)
    assert r is not None and -1 - 1e-9 <= r <= 1 + 1e-9


def test_ties_in_ces_answers_are_ranked_at_their_mean() -> None:
    """With whole-number answers the shortcut 1 - 6 sum d^2 / (n (n^2 - 1)) is wrong."""
    ces = [7.0, 7.0, 6.0, 1.0]
    effort = [10.0, 20.0, 30.0, 40.0]
    assert spearman(ces, effort) == statistics.correlation([3.5, 3.5, 2, 1], [1, 2, 3, 4])


def test_a_constant_or_a_single_pair_has_no_correlation() -> None:
    assert pearson([1.0], [2.0]) is None
    assert spearman([5.0, 5.0, 5.0], [1.0, 2.0, 3.0]) is None


def test_the_report_counts_answers_by_what_they_can_be_paired_with() -> None:
    # answer, ces, answer case, case effort, cases, customer index, old sum index
    answers = [
        ("a1", 7.0, "k1", 20, 1, 20.0, 20),
        ("a2", 2.0, "k2", 90, 2, 80.0, 100),
        ("a3", 4.0, None, 0, 1, 50.0, 100),
        ("a4", 5.0, None, 0, 0, None, 0),
    ]
    report = effort_check_report(answers, [], kind="channel", period="week", min_answers=5)
    assert report["ces_answers"] == 4
    assert report["customer_index"]["n"] == 3
    assert report["customer_index"]["pearson"] == round(
        statistics.correlation([7, 2, 4], [20, 80, 50]), 4
    )
    assert report["case_effort"]["n"] == 2
    assert report["case_effort"]["pearson"] == -1.0
    assert report["customer_sum_index"]["n"] == 4
    assert report["segment_index"]["cells"] == 0
    assert report["segment_index"]["pearson"] is None
    five = next(b for b in report["by_score"] if b["ces"] == 5)
    assert five["answers"] == 1 and five["answers_with_index"] == 0
    assert five["mean_customer_index"] is None and five["mean_customer_sum_index"] == 0
    text = format_effort_check(report)
    assert "n/a" in text  # the segment correlation, with no cell
