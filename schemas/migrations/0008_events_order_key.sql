-- The analysts' common lookups: a day's touchpoints of a channel, every touchpoint of a
-- customer. events_store was ordered by event_id alone, and the views read it FINAL, which
-- applies a filter before merging only where the filter is on the sorting key: every
-- other filter read every row.

-- Why ORDER BY (toDate(occurred_at), channel, event_id): "today on mobile_app" reads the
-- granules of that day and channel, through the events view. Why it still collapses
-- copies: the key ends with event_id, and the copies of an event (a replay of its record,
-- a second delivery) carry the same occurred_at and channel, as the month partition
-- already assumes. Why a bloom filter on customer_id: a customer's touchpoints spread over
-- days and channels; FINAL uses skip indexes in exact mode (the granules it selects are
-- widened to every granule sharing their key range), so only those are read.
-- The sorting key of a table cannot change in place: this creates the new layout under
-- another name with the same columns, and the migration runner renames it into place and
-- moves the rows (schemas.clickhouse.TABLE_REPLACEMENTS).
CREATE TABLE IF NOT EXISTS {database}.events_store_0008 AS {database}.events_store
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (toDate(occurred_at), channel, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

ALTER TABLE {database}.events_store_0008
    ADD INDEX IF NOT EXISTS customer_id_bloom customer_id TYPE bloom_filter(0.01) GRANULARITY 1;
