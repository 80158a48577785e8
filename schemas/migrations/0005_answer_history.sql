-- Each customer's recent survey answers (every metric, newest first, event time).
ALTER TABLE {database}.customer_360_store
    ADD COLUMN IF NOT EXISTS answer_history
        Array(Tuple(metric String, score Float64, at DateTime64(3, 'UTC'), event_id String));

-- customer_360: recreated so that it lists the new column (effort_index as in 0004).
CREATE OR REPLACE VIEW {database}.customer_360 AS
SELECT c.* EXCEPT (version, deleted) REPLACE (
    if(e.customer_id = '', NULL, toFloat64(e.effort_index_28d)) AS effort_index
)
FROM {database}.customer_360_store AS c FINAL
LEFT ANY JOIN {database}.customer_effort AS e ON c.customer_id = e.customer_id
WHERE c.deleted = 0
SETTINGS join_use_nulls = 0;
