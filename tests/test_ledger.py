"""The ledger's coverage arithmetic: which committed offsets no batch read."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from sinks.ledger import holes, span


def test_ranges_that_touch_leave_no_hole() -> None:
    assert holes([(0, 9), (10, 19)], 0, 20) == []


def test_a_range_missing_in_the_middle_is_a_hole() -> None:
    assert holes([(0, 9), (15, 19)], 0, 20) == [(10, 14)]


def test_offsets_before_the_first_range_and_after_the_last_are_holes() -> None:
    assert holes([(5, 9)], 0, 15) == [(0, 4), (10, 14)]


def test_overlapping_and_unordered_ranges_cover_their_union() -> None:
    assert holes([(10, 30), (0, 12), (5, 8)], 0, 31) == []


def test_only_the_interval_asked_about_counts() -> None:
    assert holes([(0, 100)], 40, 60) == []
    assert holes([], 40, 60) == [(40, 59)]
    assert holes([(0, 9)], 5, 5) == []


def test_span_counts_offsets_of_disjoint_ranges() -> None:
    assert span([(0, 0), (3, 5)]) == 4


@given(
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 20)), max_size=12),
    st.integers(0, 60),
    st.integers(0, 60),
)
def test_holes_are_exactly_the_uncovered_offsets(
    raw: list[tuple[int, int]], start: int, length: int
) -> None:
    ranges = [(first, first + extra) for first, extra in raw]
    end = start + length
    covered = {o for first, last in ranges for o in range(first, last + 1)}
    expected = [o for o in range(start, end) if o not in covered]
    found = holes(ranges, start, end)
    assert [o for first, last in found for o in range(first, last + 1)] == expected
    assert all(a <= b for a, b in found)
    assert all(b + 1 < c for (_, b), (c, _) in itertools.pairwise(found))
    assert span(found) == len(expected)
