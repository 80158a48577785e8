"""Effort signals of contacts against a naive reference, in any arrival order."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.effort import CaseBook, Contact, EffortRules, is_contact, points

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
    """The identity table's case entries, persisted after every batch."""

    def __init__(self) -> None:
        self.cases: dict[str, list[Any]] = {}

    def book(self) -> CaseBook:
        return CaseBook(RULES, self.cases.get)

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
            for row, _before in book.apply(fresh):
                newest[row.event_id] = Contact(**{f: getattr(row, f) for f in Contact.__slots__})
        table.persist(book)
    expected = naive_flags(items)
    assert {e: (c.repeat, c.switch) for e, c in newest.items()} == expected


def test_a_late_earlier_contact_changes_its_successor_and_no_one_else() -> None:
    book = CaseBook(RULES, lambda _: None)
    book.apply(contact("a", 0, "chat"))
    book.apply(contact("c", 2 * DAY, "chat"))
    rows = book.apply(contact("b", DAY, "call_center"))  # arrives last, sits in the middle
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
