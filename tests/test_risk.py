"""Detractor risk: the behaviour summary, the features, the model and the at-risk crossing.

Properties: the summary is the same whatever order the contacts arrive in and however
they are split between two customers that merge (as the case book's flags are); the
stream's score equals scikit-learn's ``predict_proba`` for the model it was fitted as;
an at-risk alert fires once per crossing of the threshold.
"""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.clickhouse import CUSTOMER_COLUMNS, EVENT_COLUMN
from schemas.customer import Behaviour, Customer, customer_from_json, customer_to_json
from streams.domain.customers import CustomerBook, PartitionRules, ScoreRules, process_records
from streams.domain.effort import CaseBook, Contact, EffortRules
from streams.domain.journey import JourneyRules
from streams.domain.risk import (
    FEATURES,
    SIGNALS,
    Model,
    RiskRules,
    add_contacts,
    band_of,
    combine_behaviour,
    crossing,
    decayed,
    default_model,
    features,
    note_case,
)
from streams.operate.model import Example, auc, calibration, evaluate, fit, top_decile_lift
from tests.test_resolve import event_row

HOUR = 3_600_000
T0 = 1_700_000_000_000
EFFORT = EffortRules()

contact_specs = st.lists(
    st.tuples(
        st.integers(0, 20 * 24),  # hour of event time
        st.sampled_from(["k1", "k2"]),
        st.sampled_from(["call_center", "chat", "support"]),
        st.booleans(),  # transferred
        st.booleans(),  # escalated
        st.floats(0, 3000),  # wait seconds
    ),
    min_size=1,
    max_size=12,
)


def _contacts(specs: list[tuple[Any, ...]], owner: str = "c_1") -> list[Contact]:
    return [
        Contact(
            f"e{i:03d}", T0 + hour * HOUR, channel, owner, case, "support", {}, tr, esc, True, wait
        )
        for i, (hour, case, channel, tr, esc, wait) in enumerate(specs)
    ]


def _fold(contacts: list[Contact], owner: str = "c_1") -> tuple[Behaviour, CaseBook]:
    """The summary a customer gets when its contacts arrive in this order."""
    book = CaseBook(EFFORT, lambda _c, _k: None)
    behaviour = Behaviour()
    for c in contacts:
        mine = Contact(c.event_id, c.at, c.channel, owner, c.case_id, c.stage, {},
                       c.transferred, c.escalated, c.unresolved, c.wait_s)  # fmt: skip
        add_contacts(behaviour, book.apply(owner, mine), mine.event_id)
        assert mine.case_id is not None
        note_case(behaviour, mine.case_id, book.contacts(owner, mine.case_id))
    return behaviour, book


def _close(a: Behaviour, b: Behaviour, t: int) -> bool:
    return all(
        math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
        for x, y in zip(decayed(a, t), decayed(b, t), strict=True)
    ) and (a.last_contact_at == b.last_contact_at)


def _direct(book: CaseBook, owner: str, t: int) -> list[float]:
    """The summary straight from the definition: every contact's signals, as its case
    flags them now, weighted by its age at ``t``."""
    total = [0.0] * len(SIGNALS)
    for (customer, _case), contacts in book.cases.items():
        if customer != owner:
            continue
        for c in contacts:
            w = 2.0 ** (-(t - c.at) / (7 * 24 * HOUR))
            signals = (1, c.repeat, c.switch, c.transferred, c.escalated, c.unresolved,
                       min(60.0, c.wait_s / 60))  # fmt: skip
            total = [v + w * s for v, s in zip(total, signals, strict=True)]
    return total


@settings(max_examples=150, deadline=None)
@given(contact_specs, st.randoms(use_true_random=False))
def test_the_behaviour_summary_is_the_same_in_any_arrival_order(
    specs: list[tuple[Any, ...]], rnd: random.Random
) -> None:
    contacts = _contacts(specs)
    in_time = sorted(contacts, key=lambda c: (c.at, c.event_id))
    shuffled = list(contacts)
    rnd.shuffle(shuffled)
    a, book_a = _fold(in_time)
    b, _ = _fold(shuffled)
    t = T0 + 30 * 24 * HOUR
    assert _close(a, b, t)
    # and it is what the definition gives from the contacts as their cases flag them
    for got, want in zip(decayed(b, t), _direct(book_a, "c_1", t), strict=True):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=150, deadline=None)
@given(contact_specs, st.randoms(use_true_random=False))
def test_two_customers_combined_on_a_merge_have_the_summary_of_one(
    specs: list[tuple[Any, ...]], rnd: random.Random
) -> None:
    contacts = _contacts(specs)
    mine = [c for c in contacts if rnd.random() < 0.5]
    theirs = [c for c in contacts if c not in mine]
    survivor, survivor_cases = _fold(mine, "c_s")
    source, source_cases = _fold(theirs, "c_a")
    # the hand-over: the source's summary combined in, its cases absorbed
    combine_behaviour(survivor, source)
    for case_id in ("k1", "k2"):
        incoming = source_cases.contacts("c_a", case_id)
        if incoming:
            survivor_cases.absorb("c_s", case_id, list(incoming))
            note_case(survivor, case_id, survivor_cases.contacts("c_s", case_id))
    one, _ = _fold(contacts, "c_s")
    assert _close(survivor, one, T0 + 30 * 24 * HOUR)


def test_a_summary_decays_by_half_every_week() -> None:
    b = Behaviour()
    (c,) = _contacts([(0, "k1", "chat", True, False, 600.0)])
    add_contacts(b, [(c, -1)], c.event_id)
    week_later = decayed(b, T0 + 7 * 24 * HOUR)
    assert week_later[SIGNALS.index("contacts")] == pytest.approx(0.5)
    assert week_later[SIGNALS.index("transfers")] == pytest.approx(0.5)
    assert week_later[SIGNALS.index("wait_minutes")] == pytest.approx(5.0)


# -- the model ----------------------------------------------------------------------------


def _examples(n: int, seed: int) -> list[Example]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        x = tuple(
            rnd.gauss(0, 1) if k % 3 else float(rnd.random() < 0.3) for k in range(len(FEATURES))
        )
        logit = -1.2 + 1.5 * x[0] - 0.8 * x[4]
        y = rnd.random() < 1 / (1 + math.exp(-logit))
        out.append(Example(T0 + i * HOUR, f"e{i}", f"c{i % 50}", "nps", 3.0 if y else 9.0, y,
                           x, "support", None))  # fmt: skip
    return out


def test_the_stream_scores_as_scikit_learn_predicts() -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    examples = _examples(400, 1)
    model = fit(examples, seed=7, c=1.0)
    pipeline = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, random_state=7)
    )
    pipeline.fit(np.array([e.x for e in examples]), np.array([e.detractor for e in examples]))
    probe = _examples(50, 2)
    expected = pipeline.predict_proba(np.array([e.x for e in probe]))[:, 1]
    for e, want in zip(probe, expected, strict=True):
        assert model.probability(e.x) == pytest.approx(float(want), rel=1e-9, abs=1e-12)


def test_a_model_round_trips_and_its_version_is_its_content() -> None:
    model = fit(_examples(300, 3), seed=7)
    again = Model.from_json(model.to_json())
    assert again == model and again.version == model.version
    assert fit(_examples(300, 3), seed=7).version == model.version  # same data, same seed
    edited = orjson.loads(model.to_json())
    edited["intercept"] += 0.1
    with pytest.raises(ValueError, match="edited"):
        Model.from_json(orjson.dumps(edited))
    other = orjson.loads(model.to_json())
    other["features"] = other["features"][:-1]
    other["means"], other["scales"] = other["means"][:-1], other["scales"][:-1]
    other["coefficients"] = other["coefficients"][:-1]
    del other["version"]
    with pytest.raises(ValueError, match="other features"):
        Model.from_json(orjson.dumps(other))


def test_reasons_are_the_features_that_raise_the_score_most() -> None:
    model = default_model()
    x = list(model.means)
    biggest = max(range(len(FEATURES)), key=lambda i: model.coefficients[i])
    x[biggest] += 3 * model.scales[biggest]
    (first, *_rest) = model.reasons(x)
    assert first["feature"] == FEATURES[biggest]
    assert all(r["contribution"] > 0 for r in model.reasons(x))
    assert model.reasons(list(model.means)) == []  # at the means nothing raises it


def test_bands_follow_the_models_thresholds() -> None:
    model = default_model()
    assert band_of(model, model.bands["detractor"]) == "detractor"
    assert band_of(model, model.bands["passive"]) == "passive"
    assert band_of(model, model.bands["passive"] - 0.01) == "promoter"


# -- at risk ------------------------------------------------------------------------------


@given(st.lists(st.floats(0, 1), max_size=60))
def test_at_risk_fires_once_per_crossing(ps: list[float]) -> None:
    threshold, rearm = 0.5, 0.4
    above, fired = False, 0
    armed, expected = True, 0  # the rule read naively
    for p in ps:
        above, fires = crossing(above, p, threshold, rearm)
        fired += fires
        if armed and p >= threshold:
            expected += 1
            armed = False
        elif not armed and p < rearm:
            armed = True
    assert fired == expected


def test_a_customer_at_risk_fires_once_and_a_replay_fires_nothing() -> None:
    model = default_model()
    rules = PartitionRules(
        JourneyRules(), EffortRules(), ScoreRules(60_000, ()), risk=RiskRules(model, 0.3, 0.25)
    )
    stored: dict[str, bytes] = {}

    def books() -> tuple[CustomerBook, CaseBook]:
        def read(customer_id: str) -> Customer | None:
            value = stored.get(customer_id)
            return None if value is None else customer_from_json(value)

        return CustomerBook(read, lambda _c: None), CaseBook(rules.effort, lambda _c, _k: None)

    # a case with many long waits, transfers and channel switches, contact after contact
    items = []
    for i in range(12):
        row = event_row(f"e{i}", T0 + i * HOUR, {"email": "x@example.com"},
                        channel=("call_center", "chat")[i % 2], type_="call", case_id="k1",
                        interaction={"wait_seconds": 1800, "transferred": True,
                                     "escalated": True, "resolved": False})  # fmt: skip
        row[EVENT_COLUMN["customer_id"]] = "c_1"
        items.append(["e", i, row, None])
    book, cases = books()
    out, hwm = process_records([(0, [None, items])], book, cases, rules, -1, 1, T0)
    customer = book.customer("c_1")
    assert customer is not None and customer.risk is not None
    assert customer.risk.p >= 0.3 and customer.risk.above
    assert len(out.at_risk) == 1 and out.at_risk[0].reasons
    (row,) = out.rows["customer_360_store"]
    assert row[CUSTOMER_COLUMNS.index("p_detractor")] == customer.risk.p
    assert row[CUSTOMER_COLUMNS.index("predicted_nps_band")] == customer.risk.band
    stored["c_1"] = customer_to_json(customer)
    # the same records again (a replay after a restart): nothing fires, nothing changes
    book, cases = books()
    again, _ = process_records([(0, [None, items])], book, cases, rules, hwm, 2, T0)
    assert again.at_risk == []


def test_a_customer_stored_before_the_model_loads() -> None:
    stored = orjson.loads(customer_to_json(Customer("c_1")))
    del stored["behaviour"], stored["risk"]
    old = customer_from_json(orjson.dumps(stored))
    assert old.risk is None and old.behaviour == Behaviour()
    assert len(features(old, T0)) == len(FEATURES)


# -- evaluation ---------------------------------------------------------------------------


def test_auc_counts_ties_as_half_and_lift_takes_a_share_of_ties() -> None:
    assert auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auc([0.5] * 4, [False, True, False, True]) == 0.5
    labels = [True] * 2 + [False] * 18
    assert top_decile_lift([1.0, 1.0] + [0.0] * 18, labels) == pytest.approx(10.0)
    assert top_decile_lift([0.5] * 20, labels) == pytest.approx(1.0)
    deciles = calibration([i / 20 for i in range(20)], labels, bins=10)
    assert [d.answers for d in deciles] == [2] * 10


def test_evaluation_splits_by_time_and_beats_the_baselines_on_a_clear_signal() -> None:
    e = evaluate(_examples(600, 4), test_share=0.3)
    assert (e.train, e.test) == (420, 180) and e.train_to < e.test_from
    assert e.model.auc is not None and e.model.auc > 0.7
    assert all(e.model.auc > (b.auc or 0.0) for b in e.baselines)


@given(contact_specs)
def test_the_open_case_points_are_the_effort_points(specs: list[tuple[Any, ...]]) -> None:
    from streams.domain.risk import _points

    _behaviour, book = _fold(_contacts(specs))
    for contacts in book.cases.values():
        for c in contacts:
            assert _points(c) == c.points
