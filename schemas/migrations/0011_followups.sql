-- Closed-loop follow-up: one row per follow-up of a detractor answer, and its views.

-- A follow-up is opened by a detractor answer (its event_id is the follow-up's id),
-- extended by newer detractor answers while open, and closed by the customer's next
-- outbound interaction or by the resolution of a case its answers were about. The
-- customer's partition writes its row whenever it changes (opened, extended, overdue,
-- closed), with a version that grows from batch to batch: the newest row stands.
CREATE TABLE IF NOT EXISTS {database}.followups_store
(
    followup_id String COMMENT 'the event_id of the detractor answer that opened it',
    customer_id String COMMENT 'the customer when written (the followups view resolves merges)',
    opened_at DateTime64(3, 'UTC'),
    due_at DateTime64(3, 'UTC') COMMENT 'the newest answer it covers plus the due time (48 h)',
    channel LowCardinality(String) COMMENT 'where the opening answer was given',
    metric LowCardinality(String),
    score Float64,
    answers UInt16 COMMENT 'detractor answers it covers (a newer one while open extends it)',
    case_ids Array(String) COMMENT 'the cases its answers were about',
    closed_how LowCardinality(String) COMMENT 'empty while open, else contact, resolution or merged',
    closed_at Nullable(DateTime64(3, 'UTC')),
    closed_event_id Nullable(String) COMMENT 'the closing event (merged: the follow-up it went into)',
    closed_channel LowCardinality(Nullable(String)),
    closed_queue Nullable(String),
    closed_agent Nullable(String),
    overdue UInt8 COMMENT 'customer.followup_overdue fired for it',
    updated_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY followup_id;

-- followups: one row per follow-up, customer_id resolved to the customer it belongs to
-- now, with how long it took and its outcome:
--   in_time  closed before any due time of it passed
--   late     closed after a due time passed (customer.followup_overdue fired)
--   overdue  past its due time and still open (never followed up, so far)
--   open     not due yet (as far as the stream's event-time progress goes)
--   merged   went into another follow-up when its customer merged (counted there)
CREATE OR REPLACE VIEW {database}.followups AS
SELECT
    f.followup_id AS followup_id,
    if(r.current_id != '', r.current_id, f.customer_id) AS customer_id,
    f.opened_at AS opened_at,
    f.due_at AS due_at,
    f.channel AS channel,
    f.metric AS metric,
    f.score AS score,
    f.answers AS answers,
    f.case_ids AS case_ids,
    f.closed_how AS closed_how,
    f.closed_at AS closed_at,
    f.closed_event_id AS closed_event_id,
    f.closed_channel AS closed_channel,
    f.closed_queue AS closed_queue,
    f.closed_agent AS closed_agent,
    f.overdue AS overdue,
    if(f.closed_at IS NULL OR f.closed_how = 'merged', NULL,
       dateDiff('millisecond', f.opened_at, f.closed_at) / 3600000) AS hours_to_follow_up,
    multiIf(
        f.closed_how = 'merged', 'merged',
        f.closed_at IS NOT NULL AND f.overdue = 0, 'in_time',
        f.closed_at IS NOT NULL, 'late',
        f.overdue = 1, 'overdue',
        'open') AS outcome,
    f.updated_at AS updated_at
FROM {database}.followups_store AS f FINAL
LEFT ANY JOIN
(
    SELECT customer_id, argMax(current_id, version) AS current_id
    FROM {database}.customer_redirects_store
    GROUP BY customer_id
) AS r ON f.customer_id = r.customer_id
SETTINGS join_use_nulls = 0;

-- followup_weekly: per week the follow-ups were opened in, overall ('all'), per channel
-- of the detractor answer ('channel'), and per channel and queue that closed them
-- ('closed_channel', 'closed_queue': closed follow-ups only).
--   due               follow-ups whose due time has passed (in_time + late + never)
--   closed_loop_rate  (in_time + late) / due: detractors who heard back at all
--   in_time_rate      in_time / due: detractors who heard back within the due time
--   median_hours      median time from the answer to the closing contact or resolution
CREATE OR REPLACE VIEW {database}.followup_weekly AS
SELECT
    toMonday(opened_at) AS week,
    dim.1 AS dimension,
    dim.2 AS value,
    countIf(outcome != 'open') AS due,
    countIf(outcome = 'in_time') AS in_time,
    countIf(outcome = 'late') AS late,
    countIf(outcome = 'overdue') AS never,
    countIf(outcome = 'open') AS pending,
    round((in_time + late) / nullIf(due, 0), 3) AS closed_loop_rate,
    round(in_time / nullIf(due, 0), 3) AS in_time_rate,
    round(quantileExact(0.5)(hours_to_follow_up), 1) AS median_hours,
    round(quantileExact(0.9)(hours_to_follow_up), 1) AS p90_hours
FROM {database}.followups
ARRAY JOIN
    [('all', ''), ('channel', channel), ('closed_channel', ifNull(closed_channel, '')),
     ('closed_queue', ifNull(closed_queue, ''))] AS dim
WHERE outcome != 'merged'
  AND (dim.1 IN ('all', 'channel') OR (closed_at IS NOT NULL AND dim.2 != ''))
GROUP BY week, dimension, value;

-- followup_effect: does following up pay? For every follow-up that is due, the
-- customer's next answer after it was closed (in_time, late) or after its due time
-- passed with no follow-up (never): per outcome, how many next answers, the share
-- that are detractors (NPS 0..6, CSAT or CES of 1) with its 95 % margin of error, and
-- the NPS of the next NPS answers with its 95 % margin (CONTRACT section 2).
CREATE OR REPLACE VIEW {database}.followup_effect AS
SELECT
    if(outcome = 'overdue', 'never', outcome) AS followed_up,
    count() AS answers,
    round(countIf(next_detractor) / answers, 3) AS detractor_share,
    round(1.96 * sqrt(detractor_share * (1 - detractor_share) / answers), 3)
        AS detractor_share_margin,
    countIf(next_metric = 'nps') AS nps_answers,
    countIf(next_metric = 'nps' AND next_score >= 9) AS promoters,
    countIf(next_metric = 'nps' AND next_score <= 6) AS detractors,
    if(nps_answers = 0, NULL, round(100 * (promoters - detractors) / nps_answers, 1)) AS nps,
    if(nps_answers = 0, NULL, round(1.96 * 100 * sqrt(greatest(0,
        (promoters + detractors) / nps_answers
        - pow((promoters - detractors) / nps_answers, 2)) / nps_answers), 1)) AS nps_margin
FROM
(
    SELECT
        f.followup_id AS followup_id,
        any(f.outcome) AS outcome,
        argMin(e.answer_metric, (e.occurred_at, e.event_id)) AS next_metric,
        argMin(e.answer_score, (e.occurred_at, e.event_id)) AS next_score,
        multiIf(next_metric = 'nps', next_score <= 6, next_score <= 1) AS next_detractor
    FROM {database}.followups AS f
    INNER JOIN
    (
        SELECT customer_id, event_id, occurred_at,
               assumeNotNull(survey_metric) AS answer_metric,
               assumeNotNull(survey_score) AS answer_score
        FROM {database}.events
        WHERE survey_metric IS NOT NULL AND survey_score IS NOT NULL
    ) AS e ON e.customer_id = f.customer_id
    WHERE f.outcome IN ('in_time', 'late', 'overdue')
      AND e.occurred_at > coalesce(f.closed_at, f.due_at)
    GROUP BY f.followup_id
)
GROUP BY followed_up;
