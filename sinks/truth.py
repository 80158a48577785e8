"""The truth check: what the stream stored equals a batch recomputation from ``events``.

The stream keeps running aggregates (score tallies per record, journeys per customer,
effort per contact) and writes them beside the raw events. Each check here recomputes
one of them from the ``events`` view alone, with SQL written from the definitions (the
README's "Scores" and "Effort" sections), and compares row for row. At rest (every
input committed, see :mod:`sinks.reconcile`) every check must find nothing: a replay
that counted an event twice, or a crash that lost one, shows up as a difference.

Used by the fault suite (``touchpoint faults``), the end to end tests and
``touchpoint verify --deep``. Every function takes an async clickhouse-connect client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.clickhouse import quote_identifier

__all__ = [
    "CUSTOMER_EFFORT_RECOMPUTED",
    "EFFORT_RECOMPUTED",
    "SCORES_RECOMPUTED",
    "SCORES_STORED",
    "Difference",
    "check_customer_effort",
    "check_customers",
    "check_effort",
    "check_journeys",
    "check_scores",
    "truth_checks",
]

#: Score tallies per bucket x segment x metric, straight from ``events`` (CONTRACT
#: semantics: promoters 9-10, detractors 0-6; CSAT positive = top two boxes; CES
#: positive = 5 or more). ``{segments}`` lists the context dimensions that are segments.
SCORES_RECOMPUTED = """
SELECT
    toUnixTimestamp(toStartOfInterval(occurred_at, INTERVAL {bucket_s} SECOND)) * 1000 AS bucket,
    seg.1 AS kind,
    seg.2 AS value,
    assumeNotNull(survey_metric) AS m,
    count() AS responses,
    countIf(m = 'nps' AND survey_score >= 9) AS promoters,
    countIf(m = 'nps' AND survey_score >= 7 AND survey_score < 9) AS passives,
    countIf(m = 'nps' AND survey_score < 7) AS detractors,
    countIf(multiIf(m = 'nps', survey_score >= 9,
                    m = 'csat', survey_score >= survey_scale_max - 1,
                    survey_score >= 5)) AS positive,
    sum(toInt64(round(survey_score * 1000))) AS milli,
    sum(toInt64(round(survey_score * 1000)) * toInt64(round(survey_score * 1000))) AS sq
FROM {db}.events
ARRAY JOIN arrayConcat(
    [('all', 'all'), ('channel', channel),
     ('journey_stage', if(journey_stage = '', 'unknown', journey_stage))],
    arrayFilter(x -> x.2 != '', arrayMap(d -> (d, context[d]), {segments}))
) AS seg
WHERE survey_metric IS NOT NULL {where}
GROUP BY bucket, kind, value, m
"""

#: What the stream stored, in the same shape.
SCORES_STORED = """
SELECT toUnixTimestamp64Milli(bucket_start), segment_kind, segment_value, metric, responses,
       promoters, passives, detractors, positive, score_sum_milli, score_sq_sum_micro
FROM {db}.scores
"""

#: Effort per contact from its definition, straight from ``events``: a contact is an
#: event on an assisted channel with an interaction or a case; repeat and switch look at
#: the previous contact of the same customer's case (by event time, then event id; a
#: case id is the customer's own: two customers who give the same one have two cases).
EFFORT_RECOMPUTED = """
SELECT
    event_id,
    toUInt8(case_id IS NOT NULL AND prev_at IS NOT NULL
            AND prev_at >= occurred_at - INTERVAL {repeat_s} SECOND) AS rep,
    toUInt8(case_id IS NOT NULL AND prev_channel IS NOT NULL AND prev_channel != channel) AS sw,
    toUInt8(ifNull(transferred, false) OR type = 'transfer') AS tr,
    toUInt8(ifNull(escalated, false)) AS esc,
    toUInt8(ifNull(resolved, true) = false) AS unres,
    10 + 20 * rep + 15 * sw + 10 * tr + 15 * esc + 15 * unres
        + least(15, toUInt32(floor(ifNull(wait_seconds, 0) / 60))) AS pts,
    customer_id AS cust,
    occurred_at AS at,
    channel,
    case_id
FROM
(
    SELECT *,
        lagInFrame(toNullable(occurred_at)) OVER w AS prev_at,
        lagInFrame(toNullable(channel)) OVER w AS prev_channel
    FROM {db}.events
    WHERE has({{assisted:Array(String)}}, channel)
      AND (case_id IS NOT NULL OR wait_seconds IS NOT NULL OR transferred IS NOT NULL
           OR escalated IS NOT NULL OR resolved IS NOT NULL OR interaction_direction IS NOT NULL
           OR interaction_queue IS NOT NULL OR interaction_agent_id IS NOT NULL
           OR handle_seconds IS NOT NULL)
    WINDOW w AS (PARTITION BY customer_id, case_id ORDER BY occurred_at, event_id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
"""

#: Each customer's effort index from its definition (README "Effort", migration 0012) over
#: the contacts above, next to what ``customer_360`` shows, in one query so that both
#: read the same ``now64()``: the time-decayed (half-life 7 days) mean of the efforts of
#: the customer's cases whose latest contact is in the last 28 days, a case's effort the
#: sum of its contacts' points capped at 100, a contact without a case a case of its own.
CUSTOMER_EFFORT_RECOMPUTED = """
SELECT ifNull(c.customer_id, r.cust) AS customer, c.effort_index, r.idx
FROM (SELECT customer_id, effort_index FROM {db}.customer_360) AS c
FULL OUTER JOIN
(
    SELECT cust,
           countIf(latest >= now64() - INTERVAL 28 DAY) AS cases,
           if(cases = 0, NULL,
              round(sumIf(weight * effort, latest >= now64() - INTERVAL 28 DAY)
                    / sumIf(weight, latest >= now64() - INTERVAL 28 DAY), 1)) AS idx
    FROM
    (
        SELECT cust, case_id, if(case_id IS NULL, event_id, '') AS lone,
               least(100, sum(pts)) AS effort, max(at) AS latest,
               exp2((toUnixTimestamp64Milli(latest) - toUnixTimestamp64Milli(now64(3)))
                    / (7 * 86400000)) AS weight
        FROM ({effort})
        GROUP BY cust, case_id, lone
    )
    GROUP BY cust
) AS r ON c.customer_id = r.cust
SETTINGS join_use_nulls = 1
"""

_JOURNEYS_RECOMPUTED = """
SELECT customer_id, sum(n), toUnixTimestamp64Milli(min(first)),
       toUnixTimestamp64Milli(max(last)), arraySort(groupArray((channel, n)))
FROM (
    SELECT customer_id, toString(channel) AS channel, count() AS n,
           min(occurred_at) AS first, max(occurred_at) AS last
    FROM {db}.events GROUP BY customer_id, channel
)
GROUP BY customer_id
"""

_JOURNEYS_STORED = """
SELECT customer_id, touchpoints, toUnixTimestamp64Milli(first_seen),
       toUnixTimestamp64Milli(last_seen),
       arraySort(arrayZip(arrayMap(k -> toString(k), mapKeys(touchpoints_by_channel)),
                           mapValues(touchpoints_by_channel)))
FROM {db}.customer_360
"""


@dataclass
class Difference:
    """One check's verdict: how many keys differ, and a few of them to look at."""

    check: str
    compared: int
    differing: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.differing == 0

    def __str__(self) -> str:
        head = f"{self.check}: {self.differing} of {self.compared} differ"
        return head if self.ok else head + "; e.g. " + "; ".join(self.examples[:3])


def _compare(check: str, stored: dict[Any, Any], expected: dict[Any, Any]) -> Difference:
    keys = set(stored) | set(expected)
    differing = sorted((k for k in keys if stored.get(k) != expected.get(k)), key=lambda k: repr(k))
    examples = [
        f"{k!r}: stored {stored.get(k)!r}, recomputed {expected.get(k)!r}" for k in differing[:5]
    ]
    return Difference(check, len(keys), len(differing), examples)


async def _rows(client: Any, sql: str, parameters: dict[str, Any] | None = None) -> list[Any]:
    return list((await client.query(sql, parameters=parameters)).result_rows)


async def check_scores(
    client: Any, database: str, dimensions: Sequence[str], bucket_s: int = 60
) -> Difference:
    """Every stored score bucket equals the recomputation from ``events``, and no
    bucket is missing on either side."""
    db = quote_identifier(database)
    stored = {tuple(r[:4]): tuple(r[4:]) for r in await _rows(client, SCORES_STORED.format(db=db))}
    segments = "[" + ", ".join(f"'{d}'" for d in dimensions if d.isidentifier()) + "]"
    sql = SCORES_RECOMPUTED.format(db=db, where="", segments=segments, bucket_s=int(bucket_s))
    expected = {tuple(r[:4]): tuple(r[4:]) for r in await _rows(client, sql)}
    return _compare("scores", stored, expected)


async def check_effort(
    client: Any, database: str, assisted: Sequence[str], repeat_window_s: float = 7 * 86400
) -> Difference:
    """Every contact's effort row (signals, points, customer) equals its definition
    recomputed over ``events``."""
    db = quote_identifier(database)
    stored = {
        r[0]: tuple(r[1:])
        for r in await _rows(
            client,
            f"SELECT event_id, repeat_contact, channel_switch, transferred, escalated, "
            f"unresolved, points, customer_id FROM {db}.effort",
        )
    }
    sql = EFFORT_RECOMPUTED.format(db=db, repeat_s=int(repeat_window_s))
    expected = {r[0]: tuple(r[1:8]) for r in await _rows(client, sql, {"assisted": list(assisted)})}
    return _compare("effort", stored, expected)


async def check_customer_effort(
    client: Any, database: str, assisted: Sequence[str], repeat_window_s: float = 7 * 86400
) -> Difference:
    """Every customer's ``customer_360.effort_index`` equals its definition recomputed
    from ``events`` (within 0.1, the index's rounding: the two sums may add in another
    order); NULL on one side only is a difference, and so is a customer on one side only
    who has an index."""
    db = quote_identifier(database)
    effort = EFFORT_RECOMPUTED.format(db=db, repeat_s=int(repeat_window_s))
    rows = await _rows(
        client,
        CUSTOMER_EFFORT_RECOMPUTED.format(db=db, effort=effort),
        {"assisted": list(assisted)},
    )

    def same(stored: float | None, recomputed: float | None) -> bool:
        if stored is None or recomputed is None:
            return stored is recomputed
        return abs(stored - recomputed) <= 0.1 + 1e-9

    differing = sorted(customer for customer, stored, again in rows if not same(stored, again))
    by_customer = {customer: (stored, again) for customer, stored, again in rows}
    examples = [
        f"{c!r}: stored {by_customer[c][0]!r}, recomputed {by_customer[c][1]!r}"
        for c in differing[:5]
    ]
    return Difference("customer effort index", len(rows), len(differing), examples)


async def check_journeys(client: Any, database: str) -> Difference:
    """Every customer's touchpoints (in all and per channel), first and last seen equal
    what ``events`` resolved to that customer says; no customer without events and no
    events without a customer."""
    db = quote_identifier(database)
    stored = {r[0]: tuple(r[1:]) for r in await _rows(client, _JOURNEYS_STORED.format(db=db))}
    expected = {r[0]: tuple(r[1:]) for r in await _rows(client, _JOURNEYS_RECOMPUTED.format(db=db))}
    return _compare("journeys", stored, expected)


async def check_customers(
    client: Any, database: str, components: Sequence[frozenset[str]]
) -> Difference:
    """The customers equal ``components`` (groups of ``kind:value`` identifiers, e.g. the
    connected components of the events' identifiers where no guard refuses a link), and
    every event belongs to the customer that owns its identifiers."""
    db = quote_identifier(database)
    groups = await _rows(
        client,
        f"SELECT customer_id, groupArray(concat(identifier_kind, ':', identifier_value)) "
        f"FROM {db}.customer_aliases GROUP BY customer_id",
    )
    stored = {frozenset(ids): customer for customer, ids in groups}
    expected = {group: "component" for group in components}
    difference = _compare(
        "customers",
        {g: "component" for g in stored},
        expected,
    )
    owner = {i: customer for customer, ids in groups for i in ids}
    misplaced = await _rows(
        client,
        f"SELECT event_id, customer_id, mapKeys(identifiers), mapValues(identifiers) "
        f"FROM {db}.events",
    )
    wrong = [
        event_id
        for event_id, customer, kinds, values in misplaced
        if any(owner.get(f"{k}:{v}") != customer for k, v in zip(kinds, values, strict=True))
    ]
    difference.compared += len(misplaced)
    difference.differing += len(wrong)
    difference.examples += [f"event {e} is not with its identifiers' customer" for e in wrong[:3]]
    return difference


async def truth_checks(
    client: Any,
    database: str,
    *,
    dimensions: Sequence[str],
    assisted: Sequence[str],
    components: Sequence[frozenset[str]] | None = None,
    bucket_s: int = 60,
    repeat_window_s: float = 7 * 86400,
) -> list[Difference]:
    """Every check above; ``components`` only when the caller knows the true grouping."""
    found = [
        await check_scores(client, database, dimensions, bucket_s),
        await check_journeys(client, database),
        await check_effort(client, database, assisted, repeat_window_s),
        await check_customer_effort(client, database, assisted, repeat_window_s),
    ]
    if components is not None:
        found.append(await check_customers(client, database, components))
    return found
