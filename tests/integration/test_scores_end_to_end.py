"""The truth check: every score bucket and rolling window in ClickHouse equals a
recomputation from the raw ``events`` rows, and the raw events we sent.

The stream sees duplicate deliveries, answers out of order within the grace, answers
later than the grace, identity merges after a customer's answers, and a worker restart
mid-stream. The SQL below is written from CONTRACT section 2, not from the stream code.
"""

from __future__ import annotations

import math
import random
import signal
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from sinks.reports import EFFORT_AT_ANSWERS, effort_check_report
from sinks.truth import check_customer_effort
from streams.domain.effort import customer_effort_index
from tests.integration.test_worker_end_to_end import (
    Stack,
    ch,
    channel_topic,
    create_topics,
    produce,
    scalar,
    settled,
    stack,
    started,
    wait_for,
)

__all__ = ["ch", "stack"]  # fixtures used by name

pytestmark = pytest.mark.integration

MINUTE = 60_000
CHANNELS = ("web", "call_center", "email", "survey")
ASSISTED = ("call_center", "chat")
STAGE_EVENTS = (("ticket_opened", "call_center"), ("purchase", "web"), ("login", "web"))

#: The recomputation: one row per bucket x segment x metric, straight from `events`.
RECOMPUTE = """
SELECT
    toUnixTimestamp(toStartOfInterval(occurred_at, INTERVAL 60 SECOND)) * 1000 AS bucket,
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
    arrayFilter(x -> x.2 != '', [('region', context['region']), ('product', context['product']),
                                 ('segment', context['segment'])])
) AS seg
WHERE survey_metric IS NOT NULL {where}
GROUP BY bucket, kind, value, m
"""

#: Effort per contact, from the definition (README "Effort"), straight from `events`.
EFFORT = """
SELECT
    event_id,
    toUInt8(case_id IS NOT NULL AND prev_at IS NOT NULL
            AND prev_at >= occurred_at - INTERVAL 7 DAY) AS rep,
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

STORED = """
SELECT toUnixTimestamp64Milli(bucket_start), segment_kind, segment_value, metric, responses,
       promoters, passives, detractors, positive, score_sum_milli, score_sq_sum_micro
FROM {db}.scores
"""


def _answer(rng: random.Random) -> dict[str, Any]:
    metric = rng.choice(("nps", "nps", "csat", "ces"))
    if metric == "nps":
        score: float = rng.randrange(11)
    elif metric == "csat":
        score = rng.choice((1, 2, 3, 3.5, 4, 4.25, 5))
    else:
        score = rng.choice((1, 2.5, 3, 4, 5, 6, 6.75, 7))
    return {"metric": metric, "score": score}


def journeys(rng: random.Random, people: int, start_ms: int) -> list[dict[str, Any]]:
    """Per person: a stage-setting event and answers, some given anonymously and linked to
    the account only later (a merge after the answers). Times climb ~20 s per event with
    up to 4 minutes of jitter: out of order, within the 10-minute grace."""
    events: list[dict[str, Any]] = []
    clock = start_ms
    for p in range(people):
        account = {"account_id": f"acct-{p}"}
        anonymous = {"anonymous_id": f"anon-{p}"}
        context = {
            "region": rng.choice(("eu", "us", "apac")),
            "product": rng.choice(("broadband", "mobile")),
        }
        if rng.random() < 0.5:
            context["segment"] = rng.choice(("consumer", "business"))
        stage_type, stage_channel = rng.choice(STAGE_EVENTS)
        plan: list[tuple[str, str, dict[str, str], dict[str, Any] | None]] = [
            (stage_type, stage_channel, account, None)
        ]
        anonymous_first = rng.random() < 0.4
        for _ in range(rng.randrange(1, 4)):
            plan.append(
                (
                    "survey_response",
                    rng.choice(CHANNELS),
                    anonymous if anonymous_first else account,
                    _answer(rng),
                )
            )
        if anonymous_first:  # the visitor logs in: their anonymous answers merge in
            plan.append(("login", "web", {**account, **anonymous}, None))
            plan.append(("survey_response", "email", account, _answer(rng)))
        for n, (type_, channel, identifiers, survey) in enumerate(plan):
            clock += 20_000
            event: dict[str, Any] = {
                "event_id": f"sc-{p}-{n}",
                "occurred_at": clock + rng.randrange(-240_000, 240_000),
                "type": type_,
                "channel": channel,
                "identifiers": identifiers,
                "context": context,
            }
            if survey is not None:
                event["survey"] = survey
            events.append(event)
        if rng.random() < 0.5:
            events += case_contacts(rng, p, account, context, clock)
    return events


def case_contacts(
    rng: random.Random, p: int, identifiers: dict[str, str], context: dict[str, str], now: int
) -> list[dict[str, Any]]:
    """A support case: contacts over the past days on several assisted channels, some
    more than 7 days apart, sent in random order (most of them beyond the grace)."""
    contacts = []
    for n in range(rng.randrange(1, 6)):
        contacts.append(
            {
                "event_id": f"case-{p}-{n}",
                "occurred_at": now - rng.randrange(0, 12 * 86_400_000),
                "type": rng.choice(("call", "chat", "transfer", "ticket_updated")),
                "channel": rng.choice(ASSISTED),
                "identifiers": identifiers,
                "context": context,
                "case_id": f"case-{p}" if rng.random() < 0.85 else None,
                "interaction": {
                    "wait_seconds": rng.choice((0, 30, 61, 400, 2000)),
                    "transferred": rng.random() < 0.2,
                    "escalated": rng.random() < 0.1,
                    "resolved": rng.choice((True, False, None)),
                },
            }
        )
    rng.shuffle(contacts)
    contacts.append(  # the customer rates the case
        {
            "event_id": f"case-{p}-ces",
            "occurred_at": now,
            "type": "survey_response",
            "channel": "survey",
            "identifiers": identifiers,
            "context": context,
            "case_id": f"case-{p}",
            "survey": {"metric": "ces", "score": rng.randrange(1, 8)},
        }
    )
    return [{k: v for k, v in c.items() if v is not None} for c in contacts]


def _reference_by_channel(events: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, ...]]:
    """From what we sent (each event once): responses and NPS/positive counts per channel."""
    out: dict[tuple[str, str], Counter[str]] = {}
    for e in events:
        survey = e.get("survey")
        if survey is None:
            continue
        metric, score = survey["metric"], survey["score"]
        c = out.setdefault((e["channel"], metric), Counter())
        c["responses"] += 1
        c["promoters"] += metric == "nps" and score >= 9
        c["detractors"] += metric == "nps" and score <= 6
        c["milli"] += round(score * 1000)
    return {
        k: (c["responses"], c["promoters"], c["detractors"], c["milli"]) for k, c in out.items()
    }


async def test_every_bucket_and_window_equals_a_recomputation_from_the_raw_events(
    stack: Stack, ch: Any
) -> None:
    rng = random.Random(11)
    start_ms = (int(time.time() * 1000) - 6 * 3_600_000) // MINUTE * MINUTE
    on_time = journeys(rng, 150, start_ms)
    # beyond the grace: answers from before everything else, sent at the very end
    late = [
        {
            "event_id": f"late-{i}",
            "occurred_at": start_ms - 3_600_000 + i * 7_000,
            "type": "survey_response",
            "channel": CHANNELS[i % len(CHANNELS)],
            "identifiers": {"account_id": f"acct-{i}"},
            "context": {"region": "eu", "product": "mobile"},
            "survey": _answer(rng),
        }
        for i in range(24)
    ]
    unique = on_time + late
    # duplicate deliveries: the same bytes again, possibly to another partition
    repeats = rng.sample(on_time, 40)
    sent = on_time[: len(on_time) // 2] + repeats[:20] + on_time[len(on_time) // 2 :] + repeats[20:]

    topics = {c: channel_topic(stack, c) for c in (*CHANNELS, *ASSISTED)}
    await create_topics(stack, list(topics.values()))
    assisted = [topics[c].removeprefix("touchpoints.") for c in ASSISTED]
    stack.env["TOUCHPOINT_EFFORT_ASSISTED_CHANNELS"] = orjson.dumps(assisted).decode()

    def messages(events: list[dict[str, Any]]) -> list[Any]:
        # the topic names the channel (tests use their own topic names)
        return [
            (
                topics[e["channel"]],
                None,
                orjson.dumps({k: v for k, v in e.items() if k != "channel"}),
                [],
            )
            for e in events
        ]

    db = stack.database
    half = len(sent) // 2
    w1 = await started(stack.start_worker("w1", state=stack.tmp / "w1"))
    try:
        await produce(stack.bootstrap, messages(sent[:half]), "lz4")

        async def some_stored() -> bool:
            return bool(await scalar(ch, f"SELECT count() FROM {db}.events_store") > half // 3)

        await wait_for(some_stored, w1, what="the first events to be stored")
        w1.stop(signal.SIGTERM)  # restarted mid-stream, same machine
        await produce(stack.bootstrap, messages(sent[half:]), "lz4")
        w1 = stack.start_worker("w1-again", state=stack.tmp / "w1")
        await produce(stack.bootstrap, messages(late), "lz4")

        async def all_stored() -> bool:
            events = await scalar(ch, f"SELECT count() FROM {db}.events")
            touches = await scalar(ch, f"SELECT sum(touchpoints) FROM {db}.customer_360")
            return bool(events == len(unique) and touches == len(unique))

        await wait_for(all_stored, w1, timeout=90, what="every event stitched and stored")
        await settled(stack, list(topics.values()), w1)  # and the rows of every other table

        # -- every bucket: the stream's rows equal the recomputation from events ---------
        stored = {tuple(r) for r in (await ch.query(STORED.format(db=db))).result_rows}
        recomputed = {
            tuple(r) for r in (await ch.query(RECOMPUTE.format(db=db, where=""))).result_rows
        }
        assert stored == recomputed
        assert len(stored) > 500

        # -- and what we sent: duplicates count once, late answers count -----------------
        by_channel: dict[tuple[str, str], list[int]] = {}
        for _bucket, kind, value, metric, n, p, _pa, d, _pos, milli, _sq in stored:
            if kind == "channel":
                acc = by_channel.setdefault((value, metric), [0, 0, 0, 0])
                for i, x in enumerate((n, p, d, milli)):
                    acc[i] += x
        prefix = len("touchpoints.")
        expected = {
            (topics[c][prefix:], m): v for (c, m), v in _reference_by_channel(unique).items()
        }
        assert {k: tuple(v) for k, v in by_channel.items()} == expected

        # -- rolling windows: any window is the sum of its buckets ------------------------
        end = (
            await scalar(ch, f"SELECT toUnixTimestamp64Milli(max(bucket_start)) FROM {db}.scores")
            + MINUTE
        )
        for length in (3_600_000, 86_400_000, 7 * 86_400_000, 28 * 86_400_000, 97 * MINUTE):
            begin = end - length
            window = (
                await ch.query(
                    f"SELECT segment_kind, segment_value, metric, responses, promoters, passives, "
                    f"detractors, positive, score_sum_milli, score_sq_sum_micro "
                    f"FROM {db}.scores_window(start = {{s:DateTime64(3)}}, end = {{e:DateTime64(3)}})",
                    parameters={
                        "s": datetime.fromtimestamp(begin / 1000, UTC),
                        "e": datetime.fromtimestamp(end / 1000, UTC),
                    },
                )
            ).result_rows
            where = (
                f"AND occurred_at >= fromUnixTimestamp64Milli({begin}) "
                f"AND occurred_at < fromUnixTimestamp64Milli({end})"
            )
            again = (
                await ch.query(
                    f"SELECT kind, value, m, sum(responses), sum(promoters), sum(passives), "
                    f"sum(detractors), sum(positive), sum(milli), sum(sq) "
                    f"FROM ({RECOMPUTE.format(db=db, where=where)}) GROUP BY kind, value, m"
                )
            ).result_rows
            assert {tuple(r) for r in window} == {tuple(r) for r in again}, length

        # -- late answers are flagged, and still in their buckets -------------------------
        flagged = {
            r[0]
            for r in (
                await ch.query(f"SELECT event_id FROM {db}.events WHERE has(flags, 'late')")
            ).result_rows
        }
        assert {e["event_id"] for e in late} <= flagged

        # -- merges after answers: each customer's latest answer is the latest of all the
        #    events that resolve to it now -------------------------------------------------
        mismatched = await scalar(
            ch,
            f"""
            SELECT count() FROM {db}.customer_360 AS c
            INNER JOIN (
                SELECT customer_id, argMax(survey_score, (occurred_at, event_id)) AS latest
                FROM {db}.events WHERE survey_metric = 'nps' GROUP BY customer_id
            ) AS e ON c.customer_id = e.customer_id
            WHERE c.last_nps IS NULL OR c.last_nps != e.latest
            """,
        )
        assert mismatched == 0
        # how many anonymous answers were stitched before their login depends on the order
        # partitions are read in (a loaded machine read them in 14 of about 60 cases)
        merged = await scalar(ch, f"SELECT count() FROM {db}.identity_merges")
        assert merged > 5
        # ... and its answer history is its latest answers, of every metric
        history = {
            r[0]: [tuple(a.values()) if isinstance(a, dict) else tuple(a) for a in r[1]]
            for r in (
                await ch.query(f"SELECT customer_id, answer_history FROM {db}.customer_360")
            ).result_rows
        }
        answered: dict[str, list[tuple[Any, ...]]] = {}
        for customer, metric, score, at, event_id in (
            await ch.query(
                f"SELECT customer_id, survey_metric, survey_score, occurred_at, event_id "
                f"FROM {db}.events WHERE survey_metric IS NOT NULL"
            )
        ).result_rows:
            answered.setdefault(customer, []).append((metric, score, at, event_id))
        for customer, answers in answered.items():
            newest = sorted(answers, key=lambda a: (a[2], a[3]), reverse=True)[:20]
            assert history[customer] == newest, customer

        # -- effort: every contact's signals and points equal the definition over events --
        effort = {
            r[0]: tuple(r[1:])
            for r in (
                await ch.query(
                    f"SELECT event_id, repeat_contact, channel_switch, transferred, escalated, "
                    f"unresolved, points, customer_id FROM {db}.effort"
                )
            ).result_rows
        }
        recomputed_effort = {
            r[0]: tuple(r[1:8])
            for r in (
                await ch.query(EFFORT.format(db=db), parameters={"assisted": assisted})
            ).result_rows
        }
        assert effort == recomputed_effort
        assert sum(1 for v in effort.values() if v[0]) > 10  # repeats happened
        assert sum(1 for v in effort.values() if v[1]) > 10  # and channel switches
        daily = {
            tuple(r[:2]): tuple(r[2:])
            for r in (
                await ch.query(
                    f"SELECT day, segment_value, contacts, repeat_contacts, channel_switches, "
                    f"effort_points FROM {db}.effort_daily WHERE segment_kind = 'channel'"
                )
            ).result_rows
        }
        again_daily = {
            tuple(r[:2]): tuple(r[2:])
            for r in (
                await ch.query(
                    f"SELECT toDate(at) AS day, channel, count(), sum(rep), sum(sw), sum(pts) "
                    f"FROM ({EFFORT.format(db=db)}) GROUP BY day, channel",
                    parameters={"assisted": assisted},
                )
            ).result_rows
        }
        assert daily == again_daily
        # each customer's effort index (README "Effort"): the time-decayed mean of its
        # recent cases' efforts, worked out in Python from the contacts recomputed above at
        # the moment the view was read, and the truth check's SQL over events agrees
        contacts_of: dict[str, list[tuple[str | None, str, int, int]]] = {}
        for r in (
            await ch.query(EFFORT.format(db=db), parameters={"assisted": assisted})
        ).result_rows:
            event_id, pts, cust, at, case_id = r[0], r[6], r[7], r[8], r[10]
            contacts_of.setdefault(cust, []).append(
                (case_id, event_id, int(at.timestamp() * 1000), pts)
            )
        shown = (
            await ch.query(f"SELECT customer_id, effort_index, now64(3) FROM {db}.customer_360")
        ).result_rows
        with_index = 0
        for customer, index, now in shown:
            want = customer_effort_index(contacts_of.get(customer, []), int(now.timestamp() * 1000))
            assert (index is None) == (want is None), customer
            if want is not None:
                with_index += 1
                assert abs(index - want) <= 0.05 + 1e-9, (customer, index, want)
        assert with_index > 20
        truth = await check_customer_effort(ch, stack.database, assisted)
        assert truth.ok, truth

        # -- the effort-vs-CES check pairs each CES answer with the effort up to it -------
        report = effort_check_report(
            (await ch.query(EFFORT_AT_ANSWERS.format(db=db))).result_rows,
            [],
            kind="channel",
            period="week",
            min_answers=5,
        )
        answers = (
            await ch.query(
                f"SELECT customer_id, occurred_at, survey_score, case_id FROM {db}.events "
                f"WHERE survey_metric = 'ces'"
            )
        ).result_rows
        contacts = (
            await ch.query(
                f"SELECT customer_id, occurred_at, points, case_id, event_id FROM {db}.effort"
            )
        ).result_rows
        old_pairs, new_pairs, case_pairs = [], [], []
        for cust, at, score, case in answers:
            seen = [(t, p, k, e) for c, t, p, k, e in contacts if c == cust and t <= at]
            old_pairs.append(
                (score, min(100, sum(p for t, p, _, _ in seen if t >= at - timedelta(days=28))))
            )
            index = customer_effort_index(
                [(k, e, int(t.timestamp() * 1000), p) for t, p, k, e in seen],
                int(at.timestamp() * 1000),
            )
            if index is not None:
                new_pairs.append((score, round(index, 1)))
            if case is not None:
                case_pairs.append((score, sum(p for _, p, k, _ in seen if k == case)))
        for name, pairs in (
            ("customer_sum_index", old_pairs),
            ("customer_index", new_pairs),
            ("case_effort", case_pairs),
        ):
            assert report[name]["n"] == len(pairs) > 20, name
            if len({e for _, e in pairs}) > 1:
                expected = statistics.correlation(
                    [s for s, _ in pairs], [float(e) for _, e in pairs]
                )
                assert math.isclose(report[name]["pearson"], expected, abs_tol=1e-4), name
    finally:
        w1.stop(signal.SIGTERM)
