"""Training and evaluating the detractor model (``touchpoint model train`` / ``evaluate``).

**Training data is what the stream computes.** The raw events come from ClickHouse
(``events``, every event with its current customer) in event-time order (ties by
``event_id``) and are folded per customer through the stream's own pure code
(:func:`streams.domain.customers.process_records` with in-memory books, one event at a
time). For every survey answer the example is the customer's features
(:func:`streams.domain.risk.features`) just *before* the answer is applied, at the
answer's event time, and the label is whether the answer is a detractor answer
(:func:`streams.domain.alerts.is_detractor`: NPS 0..6, CSAT and CES bottom box).

**Training** fits scikit-learn's ``StandardScaler`` and ``LogisticRegression`` (L2,
``C``, lbfgs, ``random_state`` = the seed) and exports the small JSON artifact the
stream scores with (:class:`streams.domain.risk.Model`); scikit-learn is needed here
only (the ``model`` extra). The bands are set from the training detractor rate ``r``:
``detractor`` from ``2 r``, ``passive`` from ``r``, ``promoter`` below.

**Evaluation** splits the answers by time: the earliest ``1 - test_share`` train a
model, the latest are the test. On the test answers it reports the AUC, the
calibration (mean predicted against observed detractor rate per decile of the
prediction) and the lift of the top decile (its detractor rate over the test's), next
to two naive baselines: the customer's previous answer (1 when it was a detractor
answer, the training rate when there is none) and the detractor rate of the
customer's journey stage in the training answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.alert_rules import DetractorRule
from schemas.clickhouse import EVENT_COLUMN, EVENT_COLUMNS, quote_identifier
from streams.domain.alerts import is_detractor
from streams.domain.customers import (
    CustomerBook,
    PartitionRules,
    process_records,
)
from streams.domain.effort import CaseBook
from streams.domain.risk import FEATURES, Model, features, open_case_stats

__all__ = [
    "Evaluation",
    "Example",
    "Scored",
    "auc",
    "calibration",
    "evaluate",
    "examples_from_rows",
    "fit",
    "format_evaluation",
    "scores_from_rows",
    "top_decile_lift",
]

#: Columns read from ``events`` (the rest of an ``events_store`` row stays empty).
READ_COLUMNS: tuple[str, ...] = (
    "event_id",
    "occurred_at",
    "channel",
    "type",
    "customer_id",
    "case_id",
    "survey_metric",
    "survey_score",
    "survey_scale_max",
    "interaction_direction",
    "interaction_queue",
    "interaction_agent_id",
    "wait_seconds",
    "handle_seconds",
    "transferred",
    "escalated",
    "resolved",
    "context",
)

EVENTS_QUERY = "SELECT {columns} FROM {db}.events ORDER BY occurred_at, event_id"


def events_query(database: str) -> str:
    """The query of the raw events, in event-time order, times in epoch milliseconds."""
    columns = ", ".join(
        f"toUnixTimestamp64Milli({c})" if c == "occurred_at" else c for c in READ_COLUMNS
    )
    return EVENTS_QUERY.format(columns=columns, db=quote_identifier(database))


@dataclass(frozen=True, slots=True)
class Example:
    """One survey answer: the customer's features just before it, and its label."""

    at: int
    event_id: str
    customer_id: str
    metric: str
    score: float
    detractor: bool
    x: tuple[float, ...]
    #: the customer's journey stage just before the answer ("" for none)
    stage: str
    #: whether the customer's previous answer (any metric) was a detractor answer
    previous_detractor: bool | None


def _row(values: Sequence[Any]) -> list[Any]:
    row: list[Any] = [None] * len(EVENT_COLUMNS)
    for name, value in zip(READ_COLUMNS, values, strict=True):
        row[EVENT_COLUMN[name]] = value
    row[EVENT_COLUMN["flags"]] = []
    row[EVENT_COLUMN["journey_stage"]] = ""
    if row[EVENT_COLUMN["context"]] is None:
        row[EVENT_COLUMN["context"]] = {}
    return row


def examples_from_rows(
    rows: Iterable[Sequence[Any]],
    rules: PartitionRules,
    detractor: DetractorRule | None = None,
) -> list[Example]:
    """Fold events (``READ_COLUMNS`` order, event-time order) through the stream's
    customer code; one example per survey answer (features before the answer)."""
    rule = detractor or DetractorRule()
    rules = replace(rules, risk=None, partitions=1)
    book = CustomerBook(lambda _customer: None, lambda _customer: None)
    cases = CaseBook(rules.effort, lambda _customer, _case: None)
    out: list[Example] = []
    metric_at, score_at = EVENT_COLUMN["survey_metric"], EVENT_COLUMN["survey_score"]
    for seq, values in enumerate(rows):
        row = _row(values)
        metric, score = row[metric_at], row[score_at]
        if metric is not None and score is not None and metric in rule.metrics:
            customer_id = row[EVENT_COLUMN["customer_id"]]
            at = row[EVENT_COLUMN["occurred_at"]]
            customer = book.live(customer_id, seq)
            history = customer.journey.answer_history
            out.append(
                Example(
                    at,
                    row[EVENT_COLUMN["event_id"]],
                    customer_id,
                    metric,
                    float(score),
                    is_detractor(rule, metric, float(score)),
                    tuple(
                        features(
                            customer,
                            at,
                            rules.effort.assisted_channels,
                            open_case_stats(customer),
                        )
                    ),
                    customer.journey.stage,
                    is_detractor(rule, history[0].metric, history[0].score) if history else None,
                )
            )
        process_records([(seq, [None, [["e", seq, row, None]]])], book, cases, rules, seq - 1, 1, 0)
        book.dirty.clear()
        cases.dirty.clear()
    return out


def scores_from_rows(rows: Iterable[Sequence[Any]], rules: PartitionRules) -> dict[str, Any]:
    """Every customer's risk (:class:`schemas.customer.Risk`) after all of ``rows``
    (``READ_COLUMNS`` order, event-time order), folded as the stream folds them: what
    ``customer_360.p_detractor`` must hold once the stream has applied the same events."""
    rules = replace(rules, partitions=1)
    book = CustomerBook(lambda _customer: None, lambda _customer: None)
    cases = CaseBook(rules.effort, lambda _customer, _case: None)
    records = [(seq, [None, [["e", seq, _row(values), None]]]) for seq, values in enumerate(rows)]
    process_records(records, book, cases, rules, -1, 1, 0)
    return {cid: c.risk for cid, c in book.customers.items() if c is not None}


# -- training ------------------------------------------------------------------------------


def fit(
    examples: Sequence[Example],
    seed: int = 7,
    c: float = 1.0,
    source: str = "",
) -> Model:
    """A logistic regression on standardised features, as the stream's artifact."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    labels = [e.detractor for e in examples]
    if len(set(labels)) < 2:
        raise ValueError(
            f"training needs detractor and other answers; found {len(examples)} answers, "
            f"{sum(labels)} detractor answers"
        )
    x = np.array([e.x for e in examples], dtype=np.float64)
    y = np.array(labels, dtype=np.int64)
    scaler = StandardScaler().fit(x)
    regression = LogisticRegression(C=c, max_iter=5000, random_state=seed)
    regression.fit(scaler.transform(x), y)
    trained = {
        "algorithm": "scikit-learn LogisticRegression (L2, lbfgs) on StandardScaler features",
        "C": c,
        "seed": seed,
        "answers": len(examples),
        "detractor_answers": int(y.sum()),
        "customers": len({e.customer_id for e in examples}),
        "from": min(e.at for e in examples),
        "to": max(e.at for e in examples),
        "source": source,
    }
    rate = float(y.mean())
    return Model(
        FEATURES,
        tuple(float(v) for v in scaler.mean_),
        tuple(float(v) for v in scaler.scale_),
        tuple(float(v) for v in regression.coef_[0]),
        float(regression.intercept_[0]),
        # bands by the usual risk: detractor from twice the training rate, passive from
        # the training rate, promoter below it
        bands={"detractor": round(min(0.99, 2 * rate), 2), "passive": round(rate, 2)},
        trained=trained,
    )


# -- evaluation ----------------------------------------------------------------------------


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The area under the ROC curve (ties count a half); None without both classes."""
    positives = sum(labels)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum, i = 0.0, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mid = (i + j) / 2 + 1  # the average rank of the tie group (1-based)
        rank_sum += mid * sum(labels[order[k]] for k in range(i, j + 1))
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@dataclass(frozen=True, slots=True)
class Decile:
    decile: int
    answers: int
    predicted: float
    observed: float


def calibration(scores: Sequence[float], labels: Sequence[bool], bins: int = 10) -> list[Decile]:
    """Mean predicted and observed detractor rate per decile of the prediction (the
    answers sorted by prediction, cut into ``bins`` groups as equal as can be; decile 1
    the lowest)."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    n = len(order)
    out = []
    for b in range(bins):
        part = order[b * n // bins : (b + 1) * n // bins]
        if not part:
            continue
        out.append(
            Decile(
                b + 1,
                len(part),
                sum(scores[i] for i in part) / len(part),
                sum(labels[i] for i in part) / len(part),
            )
        )
    return out


def top_decile_lift(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The detractor rate of the top tenth of the prediction over the overall rate;
    answers tied at the cut count in proportion (the expected lift of a random order
    among ties)."""
    n = len(scores)
    overall = sum(labels) / n if n else 0.0
    if not overall:
        return None
    k = max(1, math.ceil(n / 10))
    groups: dict[float, list[bool]] = {}
    for s, y in zip(scores, labels, strict=True):
        groups.setdefault(s, []).append(y)
    taken, hits = 0.0, 0.0
    for s in sorted(groups, reverse=True):
        group = groups[s]
        share = min(len(group), k - taken)
        hits += share * sum(group) / len(group)
        taken += share
        if taken >= k:
            break
    return (hits / k) / overall


@dataclass(frozen=True, slots=True)
class Scored:
    """One predictor's results on the test answers."""

    name: str
    auc: float | None
    lift: float | None
    deciles: list[Decile]
    brier: float


def _scored(name: str, scores: Sequence[float], labels: Sequence[bool]) -> Scored:
    brier = sum((s - y) ** 2 for s, y in zip(scores, labels, strict=True)) / len(scores)
    return Scored(name, auc(scores, labels), top_decile_lift(scores, labels),
                  calibration(scores, labels), brier)  # fmt: skip


@dataclass
class Evaluation:
    """A time-split evaluation: the split, the model's and the baselines' results."""

    train: int
    test: int
    train_detractor_rate: float
    test_detractor_rate: float
    train_to: int
    test_from: int
    test_to: int
    model: Scored
    baselines: list[Scored] = field(default_factory=list)
    coefficients: list[tuple[str, float]] = field(default_factory=list)
    model_version: str = ""

    def to_json(self) -> dict[str, Any]:
        def scored(s: Scored) -> dict[str, Any]:
            return {
                "name": s.name,
                "auc": s.auc,
                "top_decile_lift": s.lift,
                "brier": s.brier,
                "calibration": [
                    {"decile": d.decile, "answers": d.answers, "predicted": d.predicted,
                     "observed": d.observed}
                    for d in s.deciles
                ],
            }  # fmt: skip

        from schemas.alerts import iso

        return {
            "split": {
                "train_answers": self.train,
                "test_answers": self.test,
                "train_detractor_rate": self.train_detractor_rate,
                "test_detractor_rate": self.test_detractor_rate,
                "train_to": iso(self.train_to),
                "test_from": iso(self.test_from),
                "test_to": iso(self.test_to),
            },
            "model": scored(self.model) | {"version": self.model_version},
            "baselines": [scored(b) for b in self.baselines],
            "coefficients": dict(self.coefficients),
        }


def evaluate(
    examples: Sequence[Example], test_share: float = 0.3, seed: int = 7, c: float = 1.0
) -> Evaluation:
    """Train on the earliest answers, test on the latest (see the module docstring)."""
    if not 0 < test_share < 1:
        raise ValueError("test_share must be between 0 and 1")
    ordered = sorted(examples, key=lambda e: (e.at, e.event_id))
    cut = len(ordered) - max(1, round(len(ordered) * test_share))
    train, test = ordered[:cut], ordered[cut:]
    if len(train) < 20 or len(test) < 10:
        raise ValueError(
            f"too few answers to evaluate: {len(train)} to train on, {len(test)} to test"
        )
    model = fit(train, seed=seed, c=c, source="the earliest answers of a time split")
    labels = [e.detractor for e in test]
    train_rate = sum(e.detractor for e in train) / len(train)
    predicted = [model.probability(e.x) for e in test]
    previous = [
        train_rate if e.previous_detractor is None else float(e.previous_detractor) for e in test
    ]
    by_stage: dict[str, list[bool]] = {}
    for e in train:
        by_stage.setdefault(e.stage, []).append(e.detractor)
    stage_rate = {s: sum(v) / len(v) for s, v in by_stage.items()}
    segment = [stage_rate.get(e.stage, train_rate) for e in test]
    return Evaluation(
        len(train),
        len(test),
        train_rate,
        sum(labels) / len(labels),
        train[-1].at,
        test[0].at,
        test[-1].at,
        _scored("model", predicted, labels),
        [
            _scored("previous answer", previous, labels),
            _scored("stage rate", segment, labels),
            _scored("training rate", [train_rate] * len(test), labels),
        ],
        sorted(zip(FEATURES, model.coefficients, strict=True), key=lambda t: -abs(t[1])),
        model.version,
    )


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_evaluation(e: Evaluation) -> str:
    """The evaluation as text."""
    from schemas.alerts import iso

    lines = [
        "detractor model, time split of the survey answers "
        f"(train: {e.train} answers to {iso(e.train_to)}; "
        f"test: {e.test} answers {iso(e.test_from)} .. {iso(e.test_to)})",
        f"  detractor rate: train {e.train_detractor_rate:.1%}, test {e.test_detractor_rate:.1%}",
        "",
        f"  {'predictor':<18}{'AUC':>7}{'top-decile lift':>17}{'Brier':>8}",
    ]
    for s in [e.model, *e.baselines]:
        lines.append(f"  {s.name:<18}{_num(s.auc):>7}{_num(s.lift, 2):>17}{s.brier:>8.3f}")
    lines += ["", "  calibration of the model (test answers by decile of the prediction)"]
    lines.append(f"  {'decile':>8}{'answers':>9}{'predicted':>11}{'observed':>10}")
    for d in e.model.deciles:
        lines.append(f"  {d.decile:>8}{d.answers:>9}{d.predicted:>11.1%}{d.observed:>10.1%}")
    best = max((b for b in e.baselines if b.auc is not None), key=lambda b: b.auc or 0.0)
    verdict = (
        "weak: the model ranks no better than the best naive baseline"
        if (e.model.auc or 0.0) <= (best.auc or 0.0) + 0.02
        else f"the model ranks better than the best baseline ({best.name})"
    )
    strength = e.model.auc or 0.0
    quality = "weak" if strength < 0.65 else "moderate" if strength < 0.75 else "useful"
    lines += ["", f"  verdict: AUC {_num(e.model.auc)} is {quality}; {verdict}"]
    lines += ["", "  strongest coefficients (per standard deviation of the feature)"]
    for name, coef in e.coefficients[:8]:
        lines.append(f"    {name:<24}{coef:+.3f}")
    return "\n".join(lines)
