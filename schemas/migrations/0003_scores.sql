-- Scores: NPS, CSAT and CES in time buckets per segment, additive and exact.

-- The journey stage the customer was in when the stream stitched the event (the
-- journey_stage segment of the scores). Empty on rows written before this migration.
ALTER TABLE {database}.events_store
    ADD COLUMN IF NOT EXISTS journey_stage LowCardinality(String) DEFAULT '';

-- Why one row per stitch record, tallies in parallel arrays: the stream delivers at least
-- once, and a replayed record must replace what it wrote before, not add to it. The row's
-- key is the record (its offset on the stitch topic and its first event), the last insert
-- wins, and every insert of a record carries all of that record's tallies, so FINAL sees
-- each record's contribution exactly once. The events_store rows of the record are written
-- in the same flush, so the two agree (the truth check in the tests relies on it).
-- Score sums are integers (thousandths, and millionths for squares): exact in any order.
CREATE TABLE IF NOT EXISTS {database}.scores_store
(
    stitch_offset UInt64,
    first_event_id String,
    stitched_at DateTime64(3, 'UTC'),
    bucket_start Array(DateTime64(3, 'UTC')),
    segment_kind Array(LowCardinality(String)),
    segment_value Array(String),
    metric Array(LowCardinality(String)),
    responses Array(UInt32),
    promoters Array(UInt32),
    passives Array(UInt32),
    detractors Array(UInt32),
    positive Array(UInt32),
    score_milli Array(Int64),
    score_sq_micro Array(Int64)
)
ENGINE = ReplacingMergeTree
ORDER BY (stitch_offset, first_event_id);

-- scores: one row per bucket x segment x metric. Sum the count and *_milli/*_micro
-- columns over buckets for any window; the score and margin columns are per bucket.
CREATE OR REPLACE VIEW {database}.scores AS
SELECT
    bucket_start,
    segment_kind,
    segment_value,
    metric,
    responses,
    promoters,
    passives,
    detractors,
    positive,
    score_sum_milli,
    score_sq_sum_micro,
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
    ) AS margin
FROM
(
    SELECT
        b AS bucket_start,
        k AS segment_kind,
        v AS segment_value,
        m AS metric,
        sum(n) AS responses,
        sum(pro) AS promoters,
        sum(pas) AS passives,
        sum(det) AS detractors,
        sum(pos) AS positive,
        sum(milli) AS score_sum_milli,
        sum(micro) AS score_sq_sum_micro
    FROM
    (
        SELECT b, k, v, m, n, pro, pas, det, pos, milli, micro
        FROM {database}.scores_store FINAL
        ARRAY JOIN bucket_start AS b, segment_kind AS k, segment_value AS v, metric AS m,
            responses AS n, promoters AS pro, passives AS pas, detractors AS det,
            positive AS pos, score_milli AS milli, score_sq_micro AS micro
    )
    GROUP BY b, k, v, m
);

-- scores_window(start, end): every segment and metric over any window [start, end).
CREATE OR REPLACE VIEW {database}.scores_window AS
SELECT
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
FROM {database}.scores
WHERE bucket_start >= {start:DateTime64(3, 'UTC')} AND bucket_start < {end:DateTime64(3, 'UTC')}
GROUP BY segment_kind, segment_value, metric;

-- NPS per day and channel with its margin.
CREATE OR REPLACE VIEW {database}.nps_daily_by_channel AS
SELECT
    toDate(bucket_start) AS day,
    segment_value AS channel,
    sum(responses) AS responses,
    sum(promoters) AS promoters,
    sum(detractors) AS detractors,
    round(100 * (promoters - detractors) / responses, 1) AS nps,
    round(1.96 * 100 * sqrt(greatest(0, (promoters + detractors) / responses
        - pow((promoters - detractors) / responses, 2)) / responses), 1) AS margin
FROM {database}.scores
WHERE metric = 'nps' AND segment_kind = 'channel'
GROUP BY day, channel;

-- 28-day rolling NPS per segment: for each day, the 28 days ending with it.
CREATE OR REPLACE VIEW {database}.nps_rolling_28d AS
SELECT
    day,
    segment_kind,
    segment_value,
    responses_28d AS responses,
    round(100 * (promoters_28d - detractors_28d) / responses_28d, 1) AS nps,
    round(1.96 * 100 * sqrt(greatest(0, (promoters_28d + detractors_28d) / responses_28d
        - pow((promoters_28d - detractors_28d) / responses_28d, 2)) / responses_28d), 1)
        AS margin
FROM
(
    SELECT
        day,
        segment_kind,
        segment_value,
        sum(responses) OVER w AS responses_28d,
        sum(promoters) OVER w AS promoters_28d,
        sum(detractors) OVER w AS detractors_28d
    FROM
    (
        SELECT
            toDate(bucket_start) AS day,
            segment_kind,
            segment_value,
            sum(responses) AS responses,
            sum(promoters) AS promoters,
            sum(detractors) AS detractors
        FROM {database}.scores
        WHERE metric = 'nps'
        GROUP BY day, segment_kind, segment_value
    )
    WINDOW w AS (
        PARTITION BY segment_kind, segment_value
        ORDER BY toUInt32(day) RANGE BETWEEN 27 PRECEDING AND CURRENT ROW
    )
);

-- CSAT (top-two-box %) and CES (mean, share >= 5) per day and channel, with margins.
CREATE OR REPLACE VIEW {database}.csat_ces_daily_by_channel AS
SELECT
    toDate(bucket_start) AS day,
    segment_value AS channel,
    metric,
    sum(responses) AS responses,
    round(100 * sum(positive) / responses, 1) AS share_positive,
    round(1.96 * 100 * sqrt(sum(positive) / responses * (1 - sum(positive) / responses)
        / responses), 1) AS share_margin,
    if(metric = 'ces', round(sum(score_sum_milli) / 1000 / responses, 2), NULL) AS mean_score,
    if(metric = 'ces' AND responses > 1,
        round(1.96 * sqrt(greatest(0, (sum(score_sq_sum_micro)
            - pow(sum(score_sum_milli), 2) / responses) / (responses - 1)) / 1e6 / responses), 2),
        NULL) AS mean_margin
FROM {database}.scores
WHERE metric IN ('csat', 'ces') AND segment_kind = 'channel'
GROUP BY day, channel, metric;

-- events: recreated so that it lists the new column.
CREATE OR REPLACE VIEW {database}.events AS
SELECT e.* REPLACE (if(r.current_id != '', r.current_id, e.customer_id) AS customer_id)
FROM {database}.events_store AS e FINAL
LEFT ANY JOIN
(
    SELECT customer_id, argMax(current_id, version) AS current_id
    FROM {database}.customer_redirects_store
    GROUP BY customer_id
) AS r ON e.customer_id = r.customer_id
SETTINGS join_use_nulls = 0;
