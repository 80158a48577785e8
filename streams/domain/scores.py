"""Survey scores in time buckets per segment: additive tallies and the formulas (pure).

A :class:`Tally` holds what one bucket x segment x metric contributes: counts and
integer sums. Tallies add, so any rolling window is the exact sum of its buckets, and
a late answer is one more tally for its own bucket, never a rewrite. Score sums are
kept in thousandths (and squares in millionths) as integers, so sums are exact in any
order; scores on the wire have at most three decimals that matter.

CONTRACT section 2 fixes the formulas:

* NPS = 100 x (promoters - detractors) / responses, margin 1.96 x 100 x
  sqrt((p + d - (p - d)^2) / n);
* CSAT % = share of top-two-box answers (score >= scale_max - 1), margin of a share;
* CES: mean score and share of answers >= 5, margins of a mean and of a share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "METRICS",
    "Answer",
    "ScoreValue",
    "Tally",
    "bucket_of",
    "segments_of",
    "tally_answers",
    "value_of",
]

METRICS = ("nps", "csat", "ces")
#: The stream's rolling view also holds ``effort``: contacts and their effort points.
#: z for a two-sided 95 % interval.
Z95 = 1.96
CES_POSITIVE = 5


@dataclass(slots=True)
class Tally:
    """Additive aggregate of answers: counts, and score sums as integers.

    ``positive`` is the top-two-box count for CSAT, answers >= 5 for CES and promoters
    for NPS. ``score_milli`` is the sum of scores x 1000, ``score_sq_micro`` the sum of
    (score x 1000)^2.
    """

    responses: int = 0
    promoters: int = 0
    passives: int = 0
    detractors: int = 0
    positive: int = 0
    score_milli: int = 0
    score_sq_micro: int = 0

    def add(self, other: Tally) -> None:
        self.responses += other.responses
        self.promoters += other.promoters
        self.passives += other.passives
        self.detractors += other.detractors
        self.positive += other.positive
        self.score_milli += other.score_milli
        self.score_sq_micro += other.score_sq_micro

    def as_tuple(self) -> tuple[int, int, int, int, int, int, int]:
        return (
            self.responses,
            self.promoters,
            self.passives,
            self.detractors,
            self.positive,
            self.score_milli,
            self.score_sq_micro,
        )


def answer_tally(metric: str, score: float, scale_max: int | None) -> Tally:
    """The tally of one answer (``metric`` in :data:`METRICS`, score already validated)."""
    milli = round(score * 1000)
    tally = Tally(responses=1, score_milli=milli, score_sq_micro=milli * milli)
    if metric == "nps":
        if score >= 9:
            tally.promoters = tally.positive = 1
        elif score >= 7:
            tally.passives = 1
        else:
            tally.detractors = 1
    elif metric == "csat":
        tally.positive = int(score >= (scale_max or 5) - 1)
    else:
        tally.positive = int(score >= CES_POSITIVE)
    return tally


@dataclass(frozen=True, slots=True)
class Answer:
    """One survey answer with where it belongs: event time (epoch ms) and segments, and
    whose it is (for the alerts)."""

    at: int
    metric: str
    score: float
    scale_max: int | None
    segments: tuple[tuple[str, str], ...]
    event_id: str = ""
    customer_id: str = ""
    channel: str = ""


def bucket_of(at_ms: int, bucket_ms: int) -> int:
    """Start (epoch ms) of the bucket holding ``at_ms``; buckets are aligned to the epoch."""
    return at_ms - at_ms % bucket_ms


def segments_of(
    channel: str, stage: str, context: Mapping[str, str], dimensions: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    """Every segment an event counts in: all, its channel, its journey stage, and each
    configured ``context`` dimension it carries."""
    out = [("all", "all"), ("channel", channel), ("journey_stage", stage or "unknown")]
    out += [(d, context[d]) for d in dimensions if context.get(d)]
    return tuple(out)


Key = tuple[int, str, str, str]
"""(bucket_start ms, segment_kind, segment_value, metric)."""


def tally_answers(answers: Iterable[Answer], bucket_ms: int) -> dict[Key, Tally]:
    """Sum answers into tallies per bucket x segment x metric."""
    out: dict[Key, Tally] = {}
    for answer in answers:
        one = answer_tally(answer.metric, answer.score, answer.scale_max)
        start = bucket_of(answer.at, bucket_ms)
        for kind, value in answer.segments:
            key = (start, kind, value, answer.metric)
            tally = out.get(key)
            if tally is None:
                out[key] = tally = Tally()
            tally.add(one)
    return out


@dataclass(frozen=True, slots=True)
class ScoreValue:
    """A score with its 95 % margin of error (None where the sample cannot give one)."""

    metric: str
    responses: int
    value: float | None
    margin: float | None
    share_positive: float | None = None
    share_margin: float | None = None


def value_of(metric: str, tally: Tally) -> ScoreValue:
    """The score a tally gives: NPS (-100..100), CSAT % (0..100), mean CES (1..7) or,
    for ``effort``, the mean effort points per contact (0..100)."""
    n = tally.responses
    if n == 0:
        return ScoreValue(metric, 0, None, None)
    if metric == "nps":
        p, d = tally.promoters / n, tally.detractors / n
        variance = max(0.0, p + d - (p - d) ** 2)
        return ScoreValue(metric, n, 100 * (p - d), Z95 * 100 * math.sqrt(variance / n))
    share = tally.positive / n
    share_margin = Z95 * 100 * math.sqrt(share * (1 - share) / n)
    if metric == "csat":
        return ScoreValue(metric, n, 100 * share, share_margin, 100 * share, share_margin)
    mean = tally.score_milli / 1000 / n
    margin = None
    if n > 1:
        # sample variance from exact integer sums (thousandths)
        var_micro = (tally.score_sq_micro - tally.score_milli**2 / n) / (n - 1)
        margin = Z95 * math.sqrt(max(0.0, var_micro) / 1e6 / n)
    if metric == "effort":  # mean effort points per contact; no "positive" share
        return ScoreValue(metric, n, mean, margin)
    return ScoreValue(metric, n, mean, margin, 100 * share, share_margin)


class Watermarks:
    """Event-time progress per input partition, and which events are late.

    A partition's watermark is the latest event time seen on it. An event more than
    ``grace_ms`` behind its own partition's watermark is late: the stream's rolling views
    leave it out and it is counted as late; ClickHouse still counts it in its bucket.
    """

    def __init__(
        self,
        grace_ms: int,
        marks: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grace_ms = grace_ms
        self.marks: dict[str, int] = dict(marks or {})
        self.changed = False
        self._clock = clock
        #: wall-clock time (``clock``) each partition last brought an event, in this run
        self.heard: dict[str, float] = {}
        self.first_heard: float | None = None

    def observe(self, partition: str, at: int) -> bool:
        """Note an event at ``at`` on ``partition``; True when it is late."""
        self.heard[partition] = now = self._clock()
        if self.first_heard is None:
            self.first_heard = now
        mark = self.marks.get(partition)
        if mark is None or at > mark:
            self.marks[partition] = at
            self.changed = True
            return False
        return at < mark - self.grace_ms

    def low(self) -> int | None:
        """The stream's watermark: the least advanced partition's (None before any)."""
        return min(self.marks.values()) if self.marks else None

    def complete_to(self, idle_s: float) -> int | None:
        """The event time up to which every partition still sending has sent: the least
        advanced watermark among the partitions heard from in the last ``idle_s`` (wall
        clock), or the most advanced one once all of them are quiet. None while the run
        is younger than ``idle_s``: partitions read at their own pace (a backlog, a
        restart) have not all spoken yet.

        A partition that goes quiet stops holding event time back after ``idle_s``; what
        it sends later is judged against its own watermark as before (late or not)."""
        now = self._clock()
        if self.first_heard is None or now - self.first_heard < idle_s or not self.marks:
            return None
        active = [
            mark for p, mark in self.marks.items() if now - self.heard.get(p, -math.inf) < idle_s
        ]
        return min(active) if active else max(self.marks.values())


class Rolling:
    """The stream's own view of the scores: tallies per segment, metric and bucket for
    the last ``horizon_ms`` of event time, any window an exact sum of buckets."""

    def __init__(self, bucket_ms: int, horizon_ms: int) -> None:
        self.bucket_ms = bucket_ms
        self.horizon_ms = horizon_ms
        self.series: dict[tuple[str, str, str], dict[int, Tally]] = {}
        self.newest = 0

    def add(self, tallies: Mapping[Key, Tally]) -> None:
        for (start, kind, value, metric), tally in tallies.items():
            buckets = self.series.setdefault((kind, value, metric), {})
            held = buckets.get(start)
            if held is None:
                buckets[start] = held = Tally()
            held.add(tally)
            self.newest = max(self.newest, start)

    def window(self, kind: str, value: str, metric: str, end_ms: int, length_ms: int) -> Tally:
        """Sum of the buckets starting in [end_ms - length_ms, end_ms)."""
        out = Tally()
        for start, tally in self.series.get((kind, value, metric), {}).items():
            if end_ms - length_ms <= start < end_ms:
                out.add(tally)
        return out

    def clear(self) -> None:
        self.series.clear()
        self.newest = 0

    def prune(self) -> None:
        """Forget buckets older than the horizon behind the newest bucket."""
        cutoff = self.newest - self.horizon_ms
        for key in list(self.series):
            buckets = self.series[key]
            for start in [s for s in buckets if s < cutoff]:
                del buckets[start]
            if not buckets:
                del self.series[key]

    def report(self, end_ms: int, length_ms: int) -> list[dict[str, object]]:
        """Every segment and metric over the window ending at ``end_ms``: score, margin and
        the counts, as the stream sees them (late events left out)."""
        out: list[dict[str, object]] = []
        for kind, value, metric in sorted(self.series):
            tally = self.window(kind, value, metric, end_ms, length_ms)
            if tally.responses == 0:
                continue
            score = value_of(metric, tally)
            out.append(
                {
                    "segment_kind": kind,
                    "segment_value": value,
                    "metric": metric,
                    "responses": tally.responses,
                    "score": score.value,
                    "margin": score.margin,
                    "share_positive": score.share_positive,
                }
            )
        return out
