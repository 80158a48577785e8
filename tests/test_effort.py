"""Effort signals of contacts against a naive reference, in any arrival order."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.effort import (
    CaseBook,
    Contact,
    EffortRules,
    customer_effort_index,
    is_contact,
    points,
)

DAY = 86_400_000
RULES = EffortRules(repeat_window_ms=7 * DAY, max_contacts_per_case=1000)


def contact(
    event_id: str, at: int, channel: str = "chat", case_id: str | None = "k", **kw: Any
) -> Contact:
    fields: dict[str, Any] = {
        "transferred": False,
        "escalated": False,
        "unresolved": False,
        "wait_s": 0.0,
        **kw,
    }
    return Contact(event_id, at, channel, "c_1", case_id, "support", {}, **fields)


def naive_flags(contacts: list[Contact]) -> dict[str, tuple[bool, bool]]:
    """Straight from the definition: repeat = any earlier contact of the case within 7
    days; switch = the previous contact of the case (event time, then id) on another
    channel."""
    out = {}
    for c in contacts:
        if c.case_id is None:  # no case, nothing to repeat or switch from
            out[c.event_id] = (False, False)
            continue
        same = [o for o in contacts if o.case_id == c.case_id and o.event_id != c.event_id]
        earlier = [o for o in same if (o.at, o.event_id) < (c.at, c.event_id)]
        repeat = any(c.at - o.at <= RULES.repeat_window_ms for o in earlier)
        previous = max(earlier, key=lambda o: (o.at, o.event_id), default=None)
        switch = previous is not None and previous.channel != c.channel
        out[c.event_id] = (repeat, switch)
    return out


class Table:
    """A customers partition's case entries, persisted after every batch."""

    def __init__(self) -> None:
        self.cases: dict[tuple[str, str], list[Any]] = {}

    def book(self) -> CaseBook:
        return CaseBook(RULES, lambda customer_id, case_id: self.cases.get((customer_id, case_id)))

    def persist(self, book: CaseBook) -> None:
        self.cases.update(book.changes())


@st.composite
def contacts(draw: st.DrawFn) -> list[Contact]:
    n = draw(st.integers(1, 25))
    out = []
    for i in range(n):
        out.append(
            contact(
                f"e{i:02d}",
                draw(st.integers(0, 30)) * DAY // 2,
                draw(st.sampled_from(("chat", "call_center", "store"))),
                draw(st.sampled_from(("k1", "k2", None))),
            )
        )
    return out


@settings(max_examples=300, deadline=None)
@given(contacts(), st.randoms(use_true_random=False), st.integers(1, 6), st.data())
def test_newest_rows_equal_the_definition_in_any_order_batching_and_replay(
    items: list[Contact], rng: Any, batch_size: int, data: st.DataObject
) -> None:
    order = list(items)
    rng.shuffle(order)
    # some contacts come again (a replay after a crash) later in the stream
    replays = data.draw(st.lists(st.sampled_from(order), max_size=5))
    stream = order + replays
    table = Table()
    newest: dict[str, Contact] = {}
    for start in range(0, len(stream), batch_size):
        book = table.book()
        for c in stream[start : start + batch_size]:
            fresh = Contact(**{f: getattr(c, f) for f in Contact.__slots__})  # as decoded
            for row, _before in book.apply("c_1", fresh):
                newest[row.event_id] = Contact(**{f: getattr(row, f) for f in Contact.__slots__})
        table.persist(book)
    expected = naive_flags(items)
    assert {e: (c.repeat, c.switch) for e, c in newest.items()} == expected


def test_a_late_earlier_contact_changes_its_successor_and_no_one_else() -> None:
    book = CaseBook(RULES, lambda _c, _k: None)
    book.apply("c_1", contact("a", 0, "chat"))
    book.apply("c_1", contact("c", 2 * DAY, "chat"))
    rows = book.apply("c_1", contact("b", DAY, "call_center"))  # arrives last, in the middle
    assert [(c.event_id, before) for c, before in rows] == [("b", -1), ("c", 30)]
    b, c = rows[0][0], rows[1][0]
    assert (b.repeat, b.switch) == (True, True)
    assert (c.repeat, c.switch) == (True, True)  # its predecessor is now b, on another channel


def test_points_add_the_documented_weights_and_stay_within_100() -> None:
    assert points(contact("a", 0)) == 10
    worst = contact("b", 0, transferred=True, escalated=True, unresolved=True, wait_s=3600)
    worst.repeat = worst.switch = True
    assert points(worst) == 100
    assert points(contact("c", 0, wait_s=179)) == 12  # two full minutes


def test_contacts_are_assisted_channel_events_with_an_interaction_or_a_case() -> None:
    assert is_contact("chat", None, True, RULES)
    assert is_contact("store", "k1", False, RULES)
    assert not is_contact("store", None, False, RULES)  # a store visit, nobody helped
    assert not is_contact("web", "k1", True, RULES)


@settings(max_examples=150, deadline=None)
@given(contacts(), st.data())
def test_absorbing_a_merged_customers_cases_gives_the_definition_in_either_direction(
    items: list[Contact], data: st.DataObject
) -> None:
    """The contacts of a case dealt to two customers that then merge: whichever absorbs
    the other's, the signals are those of one customer that had every contact, and the
    contacts whose signals changed are reported with their points before."""
    mine = data.draw(st.lists(st.booleans(), min_size=len(items), max_size=len(items)))
    parts: list[list[Contact]] = [
        [c for c, m in zip(items, mine, strict=True) if m == side] for side in (True, False)
    ]
    expected = naive_flags(items)
    for into, other in ((0, 1), (1, 0)):
        book = CaseBook(RULES, lambda _c, _k: None)
        for c in parts[into]:
            book.apply("s", copy.copy(c))
        donor = CaseBook(RULES, lambda _c, _k: None)
        for c in parts[other]:
            donor.apply("a", copy.copy(c))
        flags_before = {
            c.event_id: c.points
            for owner, book_ in (("s", book), ("a", donor))
            for case_id in ("k1", "k2")
            for c in book_.contacts(owner, case_id)
        }
        changed: dict[str, int] = {}
        for case_id in ("k1", "k2"):
            incoming = donor.take("a", case_id)
            for c, before in book.absorb("s", case_id, incoming):
                changed[c.event_id] = before
        held = {c.event_id: c for k in ("k1", "k2") for c in book.contacts("s", k)}
        with_case = {e: f for e, f in expected.items() if e in held}
        assert {e: (c.repeat, c.switch) for e, c in held.items()} == with_case
        assert donor.contacts("a", "k1") == [] and donor.contacts("a", "k2") == []
        for event_id, c in held.items():
            if event_id in changed:
                assert changed[event_id] == flags_before[event_id]
            else:
                assert c.points == flags_before[event_id]


# -- the customer effort index ----------------------------------------------------------

NOW = 100 * DAY
#: (case_id or None, event_id, at ms, points)
contacts_st = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3", "k4"])),
        st.uuids().map(str),
        st.integers(NOW - 40 * DAY, NOW),
        st.integers(10, 100),
    ),
    max_size=30,
)


def naive_index(contacts: list[tuple[str | None, str, int, int]], now: int) -> float | None:
    """Straight from the README: cases active in 28 days, efforts capped at 100,
    weighted by 2^(-age / 7 days), mean."""
    cases: dict[str, list[tuple[int, int]]] = {}
    for case_id, event_id, at, pts in contacts:
        cases.setdefault(case_id or f"lone:{event_id}", []).append((at, pts))
    efforts = []
    for held in cases.values():
        latest = max(at for at, _ in held)
        if now - latest <= 28 * DAY:
            efforts.append((0.5 ** ((now - latest) / (7 * DAY)), min(100, sum(p for _, p in held))))
    if not efforts:
        return None
    return sum(w * e for w, e in efforts) / sum(w for w, _ in efforts)


@settings(max_examples=300, deadline=None)
@given(contacts=contacts_st)
def test_the_customer_index_is_the_decayed_mean_of_capped_case_efforts(
    contacts: list[tuple[str | None, str, int, int]],
) -> None:
    got = customer_effort_index(contacts, NOW)
    want = naive_index(contacts, NOW)
    if want is None:
        assert got is None
        return
    assert got is not None
    assert abs(got - want) < 1e-9
    assert 10 - 1e-9 <= got <= 100 + 1e-9  # a case: one or more contacts of 10..100 points


@settings(max_examples=200, deadline=None)
@given(contacts=contacts_st, copies=st.integers(2, 6), shift=st.integers(-DAY, 50 * DAY))
def test_a_heavy_user_with_the_same_cases_has_the_same_index_at_any_time(
    contacts: list[tuple[str | None, str, int, int]], copies: int, shift: int
) -> None:
    """Light or heavy: the same kind of cases, n times over, give the same index; and
    moving every contact and now by the same time changes nothing (it does not drift)."""
    heavy = [
        (None if case is None else f"{case}-{n}", f"{event}-{n}", at, pts)
        for n in range(copies)
        for case, event, at, pts in contacts
    ]
    moved = [(case, event, at + shift, pts) for case, event, at, pts in contacts]
    one = customer_effort_index(contacts, NOW)
    for other in (customer_effort_index(heavy, NOW), customer_effort_index(moved, NOW + shift)):
        assert (one is None) == (other is None)
        if one is not None and other is not None:
            assert abs(one - other) < 1e-9


def test_no_case_in_28_days_gives_no_index() -> None:
    old = [("k", "e1", NOW - 29 * DAY, 50)]
    assert customer_effort_index(old, NOW) is None
    assert customer_effort_index(old, NOW - 2 * DAY) == 50


def test_a_case_two_weeks_old_weighs_a_quarter_of_one_today() -> None:
    contacts = [
        ("old", "e1", NOW - 14 * DAY, 60),
        ("old", "e2", NOW - 14 * DAY, 60),  # capped at 100
        (None, "e3", NOW, 20),
    ]
    assert customer_effort_index(contacts, NOW) == (0.25 * 100 + 20) / 1.25


def test_a_case_counts_whole_when_its_latest_contact_is_recent() -> None:
    contacts = [("k", "e1", NOW - 40 * DAY, 30), ("k", "e2", NOW - DAY, 40)]
    assert customer_effort_index(contacts, NOW) == 70
