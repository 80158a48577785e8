-- Dead-letter replay: which dead letters `touchpoint dlq replay --execute` re-published,
-- so each is re-published at most once across runs and concurrent runs.

-- One claim per dead letter, the first one written. Why MergeTree with insert
-- deduplication: every claim is inserted on its own with the dead letter's coordinates
-- as its insert_deduplication_token, so ClickHouse itself drops any later claim of the
-- same dead letter (from a later run, or a concurrent one that had not seen it yet) and
-- the first stands. A run publishes only the dead letters whose stored claim is its own.
-- The window covers far more claims than concurrent runs can make; runs also leave out
-- what is already claimed before they claim anything.
CREATE TABLE IF NOT EXISTS {database}.dlq_replay_claims_store
(
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    replay_id String COMMENT 'the run that claimed it',
    reason LowCardinality(String),
    claimed_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (source_topic, source_partition, source_offset)
SETTINGS non_replicated_deduplication_window = 100000;

-- What became of a claim: `published` (with where the new record is) or `failed` (the
-- broker refused it; it may still have been written, so it is never sent again by
-- itself). A claim without an outcome is one whose run stopped in between.
CREATE TABLE IF NOT EXISTS {database}.dlq_replay_outcomes_store
(
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    replay_id String,
    status LowCardinality(String) COMMENT 'published or failed',
    target_partition Int32 COMMENT '-1 when not published',
    target_offset Int64 COMMENT '-1 when not published',
    error String,
    at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
ORDER BY (source_topic, source_partition, source_offset);

-- dlq_replays: every replayed dead letter, who claimed it and what became of it.
-- status: `published`, `failed`, or `claimed` (its run stopped before it knew).
CREATE OR REPLACE VIEW {database}.dlq_replays AS
SELECT
    c.source_topic AS source_topic,
    c.source_partition AS source_partition,
    c.source_offset AS source_offset,
    c.reason AS reason,
    c.replay_id AS replay_id,
    c.claimed_at AS claimed_at,
    if(o.status = '', 'claimed', o.status) AS status,
    o.target_partition AS target_partition,
    o.target_offset AS target_offset,
    o.error AS error,
    o.at AS settled_at
FROM {database}.dlq_replay_claims_store AS c
LEFT ANY JOIN (SELECT * FROM {database}.dlq_replay_outcomes_store FINAL) AS o
    ON c.source_topic = o.source_topic
    AND c.source_partition = o.source_partition
    AND c.source_offset = o.source_offset
    AND c.replay_id = o.replay_id
SETTINGS join_use_nulls = 0;
