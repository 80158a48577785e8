"""What ``touchpoint report`` reads from ClickHouse: one query per dataset, and the loader.

Every dataset comes from the analysts' views (``events``, ``scores``, ``effort``,
``customer_360``, ``alerts``, ``dead_letters``, ``identity_merges``,
``identity_refusals``) and is returned as plain rows (lists of dicts with JSON-able
values), exactly as ClickHouse computed them: the page draws these rows and embeds them,
so every figure in it can be checked against the SQL here.

Time: ``start`` and ``end`` bound event time (``occurred_at``; merges by the event that
showed the shared identifier; refusals by the event refused). Dead letters have no event
time that can be trusted (they are broken), so they are bounded by when the worker
received them. Score alerts are placed at the end of the window they judged (event
time), not at the wall-clock moment they fired.

Scores and margins follow CONTRACT section 2 as the ``scores`` views state them:
NPS = 100 x (promoters - detractors) / responses with margin
1.96 x 100 x sqrt((p + d - (p - d)^2) / n); CSAT the top-two-box share with the margin
of a share; CES the mean with 1.96 x s / sqrt(n).

Each query names the database as ``{db}`` (replace it with the quoted name) and takes
ClickHouse query parameters (``{start:DateTime64(3, 'UTC')}``, ...), so it runs as it is
in ``clickhouse-client`` or any HTTP client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson

from schemas.clickhouse import quote_identifier

__all__ = [
    "CASE_SWITCHES",
    "COVERAGE",
    "DEAD_LETTERS",
    "DEAD_LETTER_SPAN",
    "DRIVERS",
    "DRIVER_LEVELS",
    "EFFORT_SERIES",
    "MERGES",
    "REFUSALS",
    "SCORE_ALERTS",
    "SCORE_SERIES",
    "STAGES",
    "STAGE_FLOW",
    "STEPS_S",
    "ReportQuery",
    "load_report_data",
    "score_alert_rows",
    "time_step",
]

#: Bounds used when ``--from`` or ``--to`` is not given: no bound at all in practice
#: (DateTime64(3) holds 1900-01-01 .. 2299-12-31).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2299, 12, 31, tzinfo=UTC)

_START = "{start:DateTime64(3, 'UTC')}"
_END = "{end:DateTime64(3, 'UTC')}"


def _within(column: str) -> str:
    return f"{column} >= {_START} AND {column} < {_END}"


#: Score and margin of a row of summed tallies (the ``scores`` view's expressions).
_SCORE = """
    multiIf(
        metric = 'nps', 100 * (promoters - detractors) / responses,
        metric = 'csat', 100 * positive / responses,
        score_sum_milli / 1000 / responses
    ) AS score,
    multiIf(
        metric = 'nps',
        1.96 * 100 * sqrt(greatest(0, (promoters + detractors) / responses
            - pow((promoters - detractors) / responses, 2)) / responses),
        metric = 'csat',
        1.96 * 100 * sqrt(positive / responses * (1 - positive / responses) / responses),
        responses > 1,
        1.96 * sqrt(greatest(0, (score_sq_sum_micro - pow(score_sum_milli, 2) / responses)
            / (responses - 1)) / 1e6 / responses),
        NULL
    ) AS margin,
    100 * positive / responses AS share_positive
"""

#: What the report covers: event-time span, events, customers, answers, contacts.
COVERAGE = f"""
SELECT
    min(occurred_at) AS first_event,
    max(occurred_at) AS last_event,
    count() AS events,
    uniqExact(customer_id) AS customers,
    countIf(survey_metric IS NOT NULL) AS answers,
    countIf(survey_metric = 'nps') AS nps_answers,
    countIf(survey_metric = 'csat') AS csat_answers,
    countIf(survey_metric = 'ces') AS ces_answers,
    countIf(survey_metric IS NOT NULL AND case_id IS NOT NULL) AS answers_about_a_case
FROM {{db}}.events
WHERE {_within("occurred_at")}
"""

#: Scores per time step and selected segment, every metric (``scores`` view). The
#: segments are ``kind:value`` strings or whole kinds.
SCORE_SERIES = f"""
SELECT
    toStartOfInterval(bucket_start, toIntervalSecond({{step:UInt32}})) AS period,
    segment_kind,
    segment_value,
    metric,
    sum(responses) AS responses,
    sum(promoters) AS promoters,
    sum(passives) AS passives,
    sum(detractors) AS detractors,
    sum(positive) AS positive,
    sum(score_sum_milli) AS score_sum_milli,
    sum(score_sq_sum_micro) AS score_sq_sum_micro,
    {_SCORE}
FROM {{db}}.scores
WHERE {_within("bucket_start")}
  AND (has({{kinds:Array(String)}}, segment_kind)
       OR has({{pairs:Array(String)}}, concat(segment_kind, ':', segment_value)))
GROUP BY period, segment_kind, segment_value, metric
ORDER BY segment_kind, segment_value, metric, period
"""

#: Effort index (mean points per contact) per time step, by channel and journey stage.
EFFORT_SERIES = f"""
SELECT
    toStartOfInterval(occurred_at, toIntervalSecond({{step:UInt32}})) AS period,
    seg.1 AS segment_kind,
    seg.2 AS segment_value,
    count() AS contacts,
    sum(points) AS effort_points,
    effort_points / contacts AS effort_index,
    sum(transferred) AS transfers,
    sum(escalated) AS escalations,
    sum(repeat_contact) AS repeat_contacts,
    sum(channel_switch) AS channel_switches
FROM {{db}}.effort
ARRAY JOIN [('channel', channel),
            ('journey_stage', if(journey_stage = '', 'unknown', journey_stage))] AS seg
WHERE {_within("occurred_at")}
GROUP BY period, segment_kind, segment_value
ORDER BY segment_kind, segment_value, period
"""

#: Score-drop alerts and recoveries (the payload carries both windows, event time).
SCORE_ALERTS = """
SELECT alert_id, type, subject, fired_at, payload
FROM {db}.alerts
WHERE type IN ('score.dropped', 'score.recovered')
ORDER BY fired_at, type, alert_id
"""

#: Customers seen in the range, by their current journey stage (``customer_360``).
STAGES = f"""
SELECT if(journey_stage = '', 'unknown', journey_stage) AS stage, count() AS customers
FROM {{db}}.customer_360
WHERE last_seen >= {_START} AND first_seen < {_END}
GROUP BY stage
ORDER BY customers DESC, stage
"""

#: Moves between journey stages: consecutive events of a customer (event time) whose
#: stage at stitch time differs. The previous event may lie before the range.
STAGE_FLOW = f"""
SELECT previous AS from_stage, journey_stage AS to_stage, count() AS transitions,
       uniqExact(customer_id) AS customers
FROM
(
    SELECT customer_id, occurred_at, journey_stage,
           lagInFrame(journey_stage) OVER (
               PARTITION BY customer_id ORDER BY occurred_at, event_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS previous
    FROM {{db}}.events
    WHERE journey_stage != '' AND occurred_at < {_END}
)
WHERE previous != '' AND previous != journey_stage AND occurred_at >= {_START}
GROUP BY from_stage, to_stage
ORDER BY transitions DESC, from_stage, to_stage
"""

#: Channel switches within a case: the channel of the case's previous contact and the
#: channel of the contact that switched (``effort``).
CASE_SWITCHES = f"""
SELECT previous AS from_channel, channel AS to_channel, count() AS switches
FROM
(
    SELECT occurred_at, channel, channel_switch,
           lagInFrame(channel) OVER (
               PARTITION BY customer_id, case_id ORDER BY occurred_at, event_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS previous
    FROM {{db}}.effort
    WHERE case_id IS NOT NULL AND occurred_at < {_END}
)
WHERE channel_switch = 1 AND previous != '' AND occurred_at >= {_START}
GROUP BY from_channel, to_channel
ORDER BY switches DESC, from_channel, to_channel
"""

#: Driver levels: 0, 1, 2, and 3 or more.
DRIVER_LEVELS = ("0", "1", "2", "3+")

#: NPS and CES answers about a case (``case_id``), by how many transfers, escalations,
#: repeat contacts and channel switches the case's contacts had up to the answer (an
#: answer given on an assisted channel is a contact of its case too; it is left out).
#: (Aliases never reuse a column's name: ClickHouse would read the alias in WHERE.)
DRIVERS = f"""
SELECT
    d.1 AS driver,
    if(d.2 >= 3, '3+', toString(d.2)) AS level,
    metric,
    count() AS responses,
    countIf(metric = 'nps' AND given >= 9) AS promoters,
    countIf(metric = 'nps' AND given >= 7 AND given < 9) AS passives,
    countIf(metric = 'nps' AND given < 7) AS detractors,
    countIf(if(metric = 'nps', given >= 9, given >= 5)) AS positive,
    sum(toInt64(round(given * 1000))) AS score_sum_milli,
    sum(toInt64(round(given * 1000)) * toInt64(round(given * 1000))) AS score_sq_sum_micro,
    {_SCORE}
FROM
(
    SELECT a.event_id AS answer, any(a.metric) AS metric, any(a.given) AS given,
           sumIf(f.transferred, f.occurred_at <= a.occurred_at AND f.contact != a.event_id)
               AS transfers,
           sumIf(f.escalated, f.occurred_at <= a.occurred_at AND f.contact != a.event_id)
               AS escalations,
           sumIf(f.repeat_contact, f.occurred_at <= a.occurred_at AND f.contact != a.event_id)
               AS repeats,
           sumIf(f.channel_switch, f.occurred_at <= a.occurred_at AND f.contact != a.event_id)
               AS switches
    FROM
    (
        SELECT event_id, occurred_at, assumeNotNull(case_id) AS answer_case,
               assumeNotNull(survey_metric) AS metric, assumeNotNull(survey_score) AS given
        FROM {{db}}.events
        WHERE survey_metric IN ('nps', 'ces') AND case_id IS NOT NULL
          AND {_within("occurred_at")}
    ) AS a
    LEFT JOIN
    (
        SELECT event_id AS contact, assumeNotNull(case_id) AS contact_case, occurred_at,
               transferred, escalated, repeat_contact, channel_switch
        FROM {{db}}.effort
        WHERE case_id IS NOT NULL
    ) AS f ON f.contact_case = a.answer_case
    GROUP BY a.event_id
)
ARRAY JOIN [('transfers', transfers), ('escalations', escalations),
            ('repeat_contacts', repeats), ('channel_switches', switches)] AS d
GROUP BY driver, level, metric
ORDER BY driver, metric, level
SETTINGS join_use_nulls = 0
"""

#: When the dead letters in the range were received (to choose the step of their chart).
DEAD_LETTER_SPAN = f"""
SELECT min(received_at), max(received_at), count()
FROM {{db}}.dead_letters
WHERE {_within("received_at")}
"""

#: Dead letters per step of receipt time and reason.
DEAD_LETTERS = f"""
SELECT toStartOfInterval(received_at, toIntervalSecond({{step:UInt32}})) AS period, reason,
       count() AS messages
FROM {{db}}.dead_letters
WHERE {_within("received_at")}
GROUP BY period, reason
ORDER BY period, reason
"""

#: Identity merges by reason, by the event time of the event that showed the link.
MERGES = f"""
SELECT reason, count() AS merges
FROM {{db}}.identity_merges
WHERE {_within("event_at")}
GROUP BY reason
ORDER BY merges DESC, reason
"""

#: Links refused by a guard, by reason, for events in the range.
REFUSALS = f"""
SELECT reason, count() AS refusals
FROM {{db}}.identity_refusals
WHERE event_id IN (SELECT event_id FROM {{db}}.events WHERE {_within("occurred_at")})
GROUP BY reason
ORDER BY refusals DESC, reason
"""


#: The steps a time axis may use, in seconds: a minute up to a week.
STEPS_S = (60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400)


def time_step(span_s: float, most: int = 48) -> int:
    """The smallest step of :data:`STEPS_S` that cuts ``span_s`` seconds into at most
    ``most`` steps (a week when even that gives more): 14 days give days, 7 hours a
    quarter of an hour."""
    for step in STEPS_S:
        if span_s / step <= most:
            return step
    return STEPS_S[-1]


@dataclass(frozen=True)
class ReportQuery:
    """What to report on: an event-time range (either end open), the segments whose
    scores to draw over time (``kind`` for every value of a kind, or ``kind:value``),
    and the width of a time step in seconds (None: chosen by :func:`time_step` from the
    span of the data, for events and for dead letters apart)."""

    start: datetime | None = None
    end: datetime | None = None
    segments: Sequence[str] = ("channel",)
    step_s: int | None = None

    def parameters(self, **extra: Any) -> dict[str, Any]:
        return {
            "start": (self.start or EARLIEST).astimezone(UTC).replace(tzinfo=None),
            "end": (self.end or LATEST).astimezone(UTC).replace(tzinfo=None),
            **extra,
        }


def _plain(value: Any) -> Any:
    """A ClickHouse value as JSON: times as ISO 8601 UTC, NaN as null."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value


def _span_s(first: datetime, last: datetime) -> float:
    return max(0.0, (last - first).total_seconds())


async def _rows(client: Any, sql: str, db: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    result = await client.query(sql.replace("{db}", db), parameters=parameters)
    names = list(result.column_names)
    return [{n: _plain(v) for n, v in zip(names, row, strict=True)} for row in result.result_rows]


def score_alert_rows(
    rows: Sequence[dict[str, Any]], start: datetime | None, end: datetime | None
) -> list[dict[str, Any]]:
    """Score alerts as the charts place them: at the end of the window they judged
    (event time), with both windows; only those whose window ends in [start, end], in
    event-time order."""
    out = []
    low = _plain(start) if start else None
    high = _plain(end) if end else None
    for row in rows:
        data = orjson.loads(row["payload"])["data"]
        kind, value, metric = data["segment"]["kind"], data["segment"]["value"], data["metric"]
        at = data["after"]["to"]
        if (low and at < low) or (high and at > high):
            continue
        out.append(
            {
                "alert_id": row["alert_id"],
                "type": row["type"],
                "segment_kind": kind,
                "segment_value": value,
                "metric": metric,
                "at": at,
                "fired_at": row["fired_at"],
                "value": data["after"]["value"],
                "before": data["before"],
                "after": data["after"],
                "difference": data.get("difference"),
                "margin_of_error": data.get("margin_of_error"),
                "z": data.get("z"),
                "dropped_alert_id": data.get("dropped_alert_id"),
            }
        )
    return sorted(out, key=lambda a: (a["at"], a["type"], a["alert_id"]))


async def load_report_data(client: Any, database: str, query: ReportQuery) -> dict[str, Any]:
    """Run every report query against ``database`` with clickhouse-connect's async
    ``client``; returns ``{"coverage": {...}, <dataset>: [rows]}``.

    Read-only; each query is one SELECT, so the datasets can disagree by what arrived
    between them while the worker runs (a report of a quiet database is consistent).
    """
    db = quote_identifier(database)
    params = query.parameters()
    kinds = [s for s in query.segments if ":" not in s]
    pairs = [s for s in query.segments if ":" in s]
    result = await client.query(COVERAGE.replace("{db}", db), parameters=params)
    first = result.result_rows[0]
    coverage = {n: _plain(v) for n, v in zip(result.column_names, first, strict=True)}
    step = query.step_s or time_step(_span_s(first[0], first[1]) if first[2] else 0)
    dead = (
        await client.query(DEAD_LETTER_SPAN.replace("{db}", db), parameters=params)
    ).result_rows[0]
    dead_step = query.step_s or time_step(_span_s(dead[0], dead[1]) if dead[2] else 0)
    if not coverage["events"]:
        coverage["first_event"] = coverage["last_event"] = None
    coverage["dead_letters"] = int(dead[2])
    coverage["step_s"] = step
    coverage["dead_letter_step_s"] = dead_step
    out: dict[str, Any] = {"coverage": coverage}
    out["scores"] = await _rows(
        client, SCORE_SERIES, db, {**params, "step": step, "kinds": kinds, "pairs": pairs}
    )
    out["effort"] = await _rows(client, EFFORT_SERIES, db, {**params, "step": step})
    alerts = await _rows(client, SCORE_ALERTS, db, {})
    out["score_alerts"] = score_alert_rows(alerts, query.start, query.end)
    out["stages"] = await _rows(client, STAGES, db, params)
    out["stage_flow"] = await _rows(client, STAGE_FLOW, db, params)
    out["case_switches"] = await _rows(client, CASE_SWITCHES, db, params)
    out["drivers"] = await _rows(client, DRIVERS, db, params)
    out["dead_letters"] = await _rows(client, DEAD_LETTERS, db, {**params, "step": dead_step})
    out["merges"] = await _rows(client, MERGES, db, params)
    out["refusals"] = await _rows(client, REFUSALS, db, params)
    return out
