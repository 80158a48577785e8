-- The ledger: what became of every offset of every input partition, so that the
-- accounting can see a loss (an offset the consumer group committed that nothing
-- read) and what ClickHouse holds can be reconciled with what was consumed.

-- Why one row per ingest batch, written in the same flush as the batch's dead letters
-- and before its offsets are committed: every committed offset is covered by a stored
-- row, so an uncovered one is a loss. settled_from..last_offset is what the batch's ack
-- settles (a gap before first_offset is settled only once it was proven to hold no
-- records, such as transaction markers). Why ReplacingMergeTree ORDER BY the range: a
-- batch replayed with the same range writes the same row; a replay with other
-- boundaries adds an overlapping one, and coverage is the union of the ranges.
CREATE TABLE IF NOT EXISTS {database}.ingest_ledger_store
(
    source_topic LowCardinality(String),
    source_partition UInt32,
    first_offset UInt64,
    last_offset UInt64,
    settled_from UInt64 COMMENT 'the ack settles settled_from..last_offset',
    records UInt32 COMMENT 'records read (fewer than the range when markers lie inside)',
    accepted UInt32,
    duplicates UInt32,
    dead_lettered UInt32,
    read_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, first_offset, last_offset)
SETTINGS non_replicated_deduplication_window = 10000;

-- Why a table of duplicates: every message consumed has exactly one outcome row in
-- ClickHouse (events, dead_letters, or this), so what ClickHouse holds can be checked
-- offset by offset. A duplicate is a message whose event_id was accepted before from
-- other coordinates: caught by ingest's duplicate window (stage 'ingest') or, when the
-- two copies reached different workers, by the stitch agent's (stage 'stitch').
-- Why ORDER BY the coordinates: a message is one duplicate however often replayed.
CREATE TABLE IF NOT EXISTS {database}.duplicates_store
(
    source_topic LowCardinality(String),
    source_partition UInt32,
    source_offset UInt64,
    event_id String,
    stage LowCardinality(String) COMMENT 'ingest or stitch: the window that caught it',
    received_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE OR REPLACE VIEW {database}.ingest_ledger AS
SELECT * FROM {database}.ingest_ledger_store FINAL;

CREATE OR REPLACE VIEW {database}.duplicates AS
SELECT * FROM {database}.duplicates_store FINAL;
