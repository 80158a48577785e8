-- customer_events(customer_id = 'c_...'): every touchpoint of one customer, the same rows
-- as `events WHERE customer_id = ...` (merges resolved), read through the customer_id index.
-- The events view resolves each row's customer after the read, so a filter on its
-- customer_id cannot reach the index; here the stitched ids that resolve to the customer
-- are found first (the customer's own, unless it was merged away, and every id merged
-- into it), and only their rows are read.
CREATE OR REPLACE VIEW {database}.customer_events AS
WITH current AS
(
    SELECT customer_id, argMax(current_id, version) AS current_id
    FROM {database}.customer_redirects_store
    GROUP BY customer_id
)
SELECT e.* REPLACE ({customer_id:String} AS customer_id)
FROM {database}.events_store AS e FINAL
WHERE e.customer_id IN
(
    SELECT customer_id FROM current WHERE current_id = {customer_id:String}
    UNION ALL
    SELECT {customer_id:String}
    WHERE {customer_id:String} NOT IN (SELECT customer_id FROM current WHERE current_id != '')
);
