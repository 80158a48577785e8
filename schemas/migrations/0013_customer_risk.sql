-- Each customer's detractor risk as the stream last scored it (streams.domain.risk):
-- the probability that their next survey answer is a detractor answer, and its band.
-- Empty for rows written before the model existed.
ALTER TABLE {database}.customer_360_store
    ADD COLUMN IF NOT EXISTS p_detractor Nullable(Float64);
ALTER TABLE {database}.customer_360_store
    ADD COLUMN IF NOT EXISTS predicted_nps_band LowCardinality(String);

-- customer_360: recreated so that it lists the new columns (as in 0005).
CREATE OR REPLACE VIEW {database}.customer_360 AS
SELECT c.* EXCEPT (version, deleted) REPLACE (
    if(e.customer_id = '', NULL, toFloat64(e.effort_index_28d)) AS effort_index
)
FROM {database}.customer_360_store AS c FINAL
LEFT ANY JOIN {database}.customer_effort AS e ON c.customer_id = e.customer_id
WHERE c.deleted = 0
SETTINGS join_use_nulls = 0;
