-- Ingest: accepted touchpoints and dead letters.
-- Tables named *_store are the project's; analysts read the views (CONTRACT section 3).

-- Why ReplacingMergeTree ORDER BY event_id: the stream delivers at least once, so a replay
-- may insert an event twice; rows with one event_id collapse, and the view reads FINAL so
-- analysts never see a pending duplicate. The dedup window makes retries of one insert
-- batch (same token) store nothing twice in the first place.
-- Why PARTITION BY month of occurred_at: retention and backfills work a month at a time; a
-- replayed event carries the same occurred_at, so its copies share a partition and collapse.
CREATE TABLE IF NOT EXISTS {database}.events_store
(
    event_id String,
    occurred_at DateTime64(3, 'UTC') COMMENT 'event time, corrected for device clock skew',
    client_occurred_at DateTime64(3, 'UTC') COMMENT 'occurred_at as the producer sent it',
    sent_at Nullable(DateTime64(3, 'UTC')),
    clock_skew_ms Int64 COMMENT 'producer clock minus Kafka record time, 0 when within tolerance',
    received_at DateTime64(3, 'UTC'),
    channel LowCardinality(String),
    type LowCardinality(String),
    customer_id String,
    identifiers Map(LowCardinality(String), String) COMMENT 'normalised identifiers',
    rejected_identifiers Map(LowCardinality(String), LowCardinality(String)) COMMENT 'kind -> why it was removed',
    schema_version UInt16,
    source Nullable(String),
    session_id Nullable(String),
    case_id Nullable(String),
    survey_metric LowCardinality(Nullable(String)),
    survey_score Nullable(Float64),
    survey_scale_max Nullable(UInt8),
    survey_comment Nullable(String),
    interaction_direction LowCardinality(Nullable(String)),
    interaction_queue Nullable(String),
    interaction_agent_id Nullable(String),
    wait_seconds Nullable(Float64),
    handle_seconds Nullable(Float64),
    transferred Nullable(Bool),
    escalated Nullable(Bool),
    resolved Nullable(Bool),
    order_id Nullable(String),
    amount Nullable(Float64),
    currency LowCardinality(Nullable(String)),
    context Map(LowCardinality(String), String),
    properties String COMMENT 'JSON object',
    flags Array(LowCardinality(String)) COMMENT 'e.g. event_in_future, event_too_old, clock_skew_corrected',
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    INDEX occurred_at_minmax occurred_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY event_id
SETTINGS non_replicated_deduplication_window = 10000;

-- Why ReplacingMergeTree ORDER BY the source coordinates: a message is dead-lettered once
-- per offset however often the partition is replayed. No time partition: a replay has a
-- new received_at and must still land in the same part range to collapse.
CREATE TABLE IF NOT EXISTS {database}.dead_letters_store
(
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    source_timestamp Nullable(DateTime64(3, 'UTC')),
    received_at DateTime64(3, 'UTC'),
    reason LowCardinality(String),
    detail String,
    event_id Nullable(String),
    key Nullable(String),
    raw String COMMENT 'the original bytes',
    headers Array(Tuple(name String, value String))
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE OR REPLACE VIEW {database}.events AS
SELECT * FROM {database}.events_store FINAL;

CREATE OR REPLACE VIEW {database}.dead_letters AS
SELECT * FROM {database}.dead_letters_store FINAL;
