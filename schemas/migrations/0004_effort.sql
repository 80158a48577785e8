-- Behavioural effort: one row per assisted contact with its signals and effort points.

-- Why one row per contact, ReplacingMergeTree(version): a contact's repeat and channel
-- switch signals depend on the contact before it in its case (event time), so a contact
-- that arrives late changes its successor's row. The stream writes the row of every
-- contact it applies and of that contact's successor, with a version that grows from
-- batch to batch; the newest row of each contact is the one that saw every contact
-- before it. A replayed batch writes them again, newer.
CREATE TABLE IF NOT EXISTS {database}.effort_store
(
    event_id String,
    occurred_at DateTime64(3, 'UTC'),
    customer_id String COMMENT 'the customer when stitched (the effort view resolves merges)',
    case_id Nullable(String),
    channel LowCardinality(String),
    journey_stage LowCardinality(String),
    context Map(LowCardinality(String), String) COMMENT 'the segment dimensions only',
    repeat_contact UInt8 COMMENT 'an earlier contact on the case within 7 days',
    channel_switch UInt8 COMMENT 'the previous contact on the case was on another channel',
    transferred UInt8,
    escalated UInt8,
    unresolved UInt8,
    wait_seconds Float64,
    points UInt8 COMMENT 'effort points of the contact, 0..100 (README)',
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY event_id;

-- effort: one row per contact, customer_id resolved to the customer it belongs to now.
CREATE OR REPLACE VIEW {database}.effort AS
SELECT f.* EXCEPT (version) REPLACE (if(r.current_id != '', r.current_id, f.customer_id) AS customer_id)
FROM {database}.effort_store AS f FINAL
LEFT ANY JOIN
(
    SELECT customer_id, argMax(current_id, version) AS current_id
    FROM {database}.customer_redirects_store
    GROUP BY customer_id
) AS r ON f.customer_id = r.customer_id
SETTINGS join_use_nulls = 0;

-- effort_daily: per day and segment (all, channel, journey_stage, context dimensions).
CREATE OR REPLACE VIEW {database}.effort_daily AS
SELECT
    toDate(occurred_at) AS day,
    seg.1 AS segment_kind,
    seg.2 AS segment_value,
    count() AS contacts,
    sum(repeat_contact) AS repeat_contacts,
    sum(channel_switch) AS channel_switches,
    sum(transferred) AS transfers,
    sum(escalated) AS escalations,
    sum(unresolved) AS unresolved_contacts,
    sum(wait_seconds) AS total_wait_seconds,
    sum(points) AS effort_points,
    round(effort_points / contacts, 1) AS effort_index
FROM {database}.effort
ARRAY JOIN arrayConcat(
    [('all', 'all'), ('channel', channel),
     ('journey_stage', if(journey_stage = '', 'unknown', journey_stage))],
    arrayZip(mapKeys(context), mapValues(context))
) AS seg
GROUP BY day, segment_kind, segment_value;

-- effort_rolling: per day and segment, the 7 and 28 days ending with that day.
CREATE OR REPLACE VIEW {database}.effort_rolling AS
SELECT
    day,
    segment_kind,
    segment_value,
    sum(contacts) OVER w7 AS contacts_7d,
    round(sum(effort_points) OVER w7 / contacts_7d, 1) AS effort_index_7d,
    sum(repeat_contacts) OVER w7 AS repeat_contacts_7d,
    sum(channel_switches) OVER w7 AS channel_switches_7d,
    sum(contacts) OVER w28 AS contacts_28d,
    round(sum(effort_points) OVER w28 / contacts_28d, 1) AS effort_index_28d,
    sum(repeat_contacts) OVER w28 AS repeat_contacts_28d,
    sum(channel_switches) OVER w28 AS channel_switches_28d
FROM {database}.effort_daily
WINDOW
    w7 AS (PARTITION BY segment_kind, segment_value ORDER BY toUInt32(day)
           RANGE BETWEEN 6 PRECEDING AND CURRENT ROW),
    w28 AS (PARTITION BY segment_kind, segment_value ORDER BY toUInt32(day)
            RANGE BETWEEN 27 PRECEDING AND CURRENT ROW);

-- customer_effort: per current customer, the last 7 and 28 days before now.
CREATE OR REPLACE VIEW {database}.customer_effort AS
SELECT
    customer_id,
    countIf(occurred_at >= now64() - INTERVAL 7 DAY) AS contacts_7d,
    sumIf(points, occurred_at >= now64() - INTERVAL 7 DAY) AS points_7d,
    countIf(occurred_at >= now64() - INTERVAL 28 DAY) AS contacts_28d,
    sumIf(points, occurred_at >= now64() - INTERVAL 28 DAY) AS points_28d,
    sumIf(repeat_contact, occurred_at >= now64() - INTERVAL 28 DAY) AS repeat_contacts_28d,
    sumIf(channel_switch, occurred_at >= now64() - INTERVAL 28 DAY) AS channel_switches_28d,
    sumIf(transferred, occurred_at >= now64() - INTERVAL 28 DAY) AS transfers_28d,
    sumIf(escalated, occurred_at >= now64() - INTERVAL 28 DAY) AS escalations_28d,
    sumIf(unresolved, occurred_at >= now64() - INTERVAL 28 DAY) AS unresolved_28d,
    sumIf(wait_seconds, occurred_at >= now64() - INTERVAL 28 DAY) AS wait_seconds_28d,
    least(100, points_7d) AS effort_index_7d,
    least(100, points_28d) AS effort_index_28d
FROM {database}.effort
GROUP BY customer_id;

-- The customers with the highest effort in the last 7 days.
CREATE OR REPLACE VIEW {database}.top_effort_customers_7d AS
SELECT customer_id, contacts_7d, points_7d, effort_index_7d
FROM {database}.customer_effort
WHERE contacts_7d > 0
ORDER BY points_7d DESC, customer_id
LIMIT 100;

-- customer_360: effort_index is the customer's 28-day effort index.
CREATE OR REPLACE VIEW {database}.customer_360 AS
SELECT c.* EXCEPT (version, deleted) REPLACE (
    if(e.customer_id = '', NULL, toFloat64(e.effort_index_28d)) AS effort_index
)
FROM {database}.customer_360_store AS c FINAL
LEFT ANY JOIN {database}.customer_effort AS e ON c.customer_id = e.customer_id
WHERE c.deleted = 0
SETTINGS join_use_nulls = 0;
