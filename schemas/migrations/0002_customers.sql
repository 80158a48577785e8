-- Identity and journey: stitched customers, who owns which identifier, merge decisions.
-- Every *_store table is written at least once per change by the stitch agent; a replay
-- writes the same row with the same version, so ReplacingMergeTree collapses it and the
-- views (reading FINAL) never show a pending duplicate.

-- Why ReplacingMergeTree(version) ORDER BY customer_id: one row per customer, the latest
-- state wins; version is the stitch position, which only grows. A customer merged into
-- another or erased gets a row with deleted = 1 and leaves the view.
CREATE TABLE IF NOT EXISTS {database}.customer_360_store
(
    customer_id String,
    identifiers Map(LowCardinality(String), Array(String)) COMMENT 'kind -> values owned',
    first_seen DateTime64(3, 'UTC'),
    last_seen DateTime64(3, 'UTC'),
    touchpoints UInt64,
    touchpoints_by_channel Map(LowCardinality(String), UInt64),
    channels Array(LowCardinality(String)),
    journey_stage LowCardinality(String),
    journey_stage_at DateTime64(3, 'UTC'),
    last_nps Nullable(Float64),
    last_nps_at Nullable(DateTime64(3, 'UTC')),
    last_csat Nullable(Float64),
    last_csat_at Nullable(DateTime64(3, 'UTC')),
    last_ces Nullable(Float64),
    last_ces_at Nullable(DateTime64(3, 'UTC')),
    effort_index Nullable(Float64) COMMENT 'filled by the effort computation',
    open_cases Array(String),
    recent Array(Tuple(event_id String, at DateTime64(3, 'UTC'), channel String, type String)),
    merged_ids Array(String) COMMENT 'customer ids that were merged into this one',
    updated_at DateTime64(3, 'UTC'),
    version UInt64,
    deleted UInt8
)
ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id;

-- Why ORDER BY (kind, value): "everything we know about this e-mail" starts here.
CREATE TABLE IF NOT EXISTS {database}.customer_aliases_store
(
    identifier_kind LowCardinality(String),
    identifier_value String,
    customer_id String,
    updated_at DateTime64(3, 'UTC'),
    version UInt64,
    deleted UInt8
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (identifier_kind, identifier_value);

-- Why ORDER BY merged_from: a customer id is absorbed at most once.
CREATE TABLE IF NOT EXISTS {database}.identity_merges_store
(
    merged_from String,
    merged_into String,
    reason LowCardinality(String) COMMENT 'shared_identifier:<kind> that linked them',
    event_id String COMMENT 'the event that showed the shared identifier',
    event_at DateTime64(3, 'UTC'),
    at DateTime64(3, 'UTC') COMMENT 'when the stream decided',
    redirected Array(String) COMMENT 'every id that now points to merged_into',
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY merged_from;

-- Why a redirect table: events keep the customer_id they were stitched to; after later
-- merges this maps every absorbed id to the customer it belongs to now, so the events
-- view resolves rows without rewriting them.
CREATE TABLE IF NOT EXISTS {database}.customer_redirects_store
(
    customer_id String,
    current_id String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id;

-- Why ORDER BY (event_id, identifier_kind): one refusal per identifier of an event.
CREATE TABLE IF NOT EXISTS {database}.identity_refusals_store
(
    event_id String,
    identifier_kind LowCardinality(String),
    customer_id String COMMENT 'the customer of the event',
    other_customer_id String COMMENT 'where the identifier stays',
    reason LowCardinality(String) COMMENT 'limit:<kind> or unique:<kind>',
    at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (event_id, identifier_kind);

-- Why ReplacingMergeTree(identifiers_removed) ORDER BY request_id: one record per request
-- that an erasure happened (no identifier values); a replayed request finds nothing left
-- to remove, and the first, complete record wins.
CREATE TABLE IF NOT EXISTS {database}.erasures_store
(
    request_id String,
    identifier_kind LowCardinality(String),
    customer_ids Array(String),
    identifiers_removed UInt32,
    requested_at DateTime64(3, 'UTC'),
    completed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(identifiers_removed)
ORDER BY request_id;

CREATE OR REPLACE VIEW {database}.customer_360 AS
SELECT * EXCEPT (version, deleted)
FROM {database}.customer_360_store FINAL
WHERE deleted = 0;

CREATE OR REPLACE VIEW {database}.customer_aliases AS
SELECT identifier_kind, identifier_value, customer_id, updated_at
FROM {database}.customer_aliases_store FINAL
WHERE deleted = 0;

CREATE OR REPLACE VIEW {database}.identity_merges AS
SELECT * EXCEPT (version)
FROM {database}.identity_merges_store FINAL;

CREATE OR REPLACE VIEW {database}.identity_refusals AS
SELECT * FROM {database}.identity_refusals_store FINAL;

CREATE OR REPLACE VIEW {database}.erasures AS
SELECT * FROM {database}.erasures_store FINAL;

-- events: customer_id is the customer the event belongs to now, after any later merge.
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
