-- Alerts: one row per alert fired, one row per delivery outcome, and the `alerts` view.

-- An alert's id is derived from what fired it (the answer's event id, the customer and
-- case, the segment and the moment of a drop), so a replay after a crash writes the
-- same alert again: the newest row of each id stands.
CREATE TABLE IF NOT EXISTS {database}.alerts_store
(
    alert_id String,
    type LowCardinality(String),
    subject String COMMENT 'customer id, or segment_kind:segment_value:metric',
    customer_id String COMMENT 'empty for score alerts',
    segments Array(String) COMMENT 'kind:value pairs the endpoint filters match',
    fired_at DateTime64(3, 'UTC'),
    payload String COMMENT 'the webhook body (JSON), byte for byte',
    endpoints Array(String) COMMENT 'the endpoints whose filters matched',
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id;

-- One row per alert, endpoint and outcome: `retrying` after a failed attempt, then
-- `delivered` or `dead` (the retry budget ran out, the endpoint refused the alert for
-- good, or its queue was full). The newest row of each pair stands.
CREATE TABLE IF NOT EXISTS {database}.alert_deliveries_store
(
    alert_id String,
    endpoint LowCardinality(String),
    status LowCardinality(String) COMMENT 'retrying, delivered or dead',
    attempts UInt32,
    last_status UInt16 COMMENT 'HTTP status of the last answer, 0 when none came',
    last_error String,
    updated_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (alert_id, endpoint);

-- alerts: every alert with its payload and where its deliveries stand.
-- delivery_status: `no_endpoint` (no endpoint's filters matched), `pending` (an
-- endpoint has not answered for good yet), `dead` (an endpoint gave up on it), else
-- `delivered`.
CREATE OR REPLACE VIEW {database}.alerts AS
SELECT
    a.alert_id AS alert_id,
    a.type AS type,
    a.subject AS subject,
    a.customer_id AS customer_id,
    a.segments AS segments,
    a.fired_at AS fired_at,
    a.payload AS payload,
    a.endpoints AS endpoints,
    mapFromArrays(
        a.endpoints,
        arrayMap(e -> if(has(d.names, e), d.statuses[indexOf(d.names, e)], 'pending'), a.endpoints)
    ) AS deliveries,
    arraySum(arrayMap(e -> if(has(d.names, e), d.tries[indexOf(d.names, e)], 0), a.endpoints))
        AS attempts,
    multiIf(
        empty(a.endpoints), 'no_endpoint',
        has(mapValues(deliveries), 'dead'), 'dead',
        arrayExists(s -> s != 'delivered', mapValues(deliveries)), 'pending',
        'delivered'
    ) AS delivery_status
FROM {database}.alerts_store AS a FINAL
LEFT ANY JOIN
(
    SELECT alert_id, groupArray(endpoint) AS names, groupArray(status) AS statuses,
           groupArray(attempts) AS tries
    FROM {database}.alert_deliveries_store FINAL
    GROUP BY alert_id
) AS d ON a.alert_id = d.alert_id
SETTINGS join_use_nulls = 0;
