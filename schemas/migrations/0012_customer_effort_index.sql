-- The customer effort index, redefined: how hard the customer's recent cases were, not
-- how many contacts they made (README "Effort").

-- customer_effort: per current customer. The contact and point counts of the last 7 and
-- 28 days are as in 0004. The index over N days (7, 28) is the time-decayed mean of the
-- efforts of the customer's cases active in those days:
--   a case is the contacts of one case_id of the customer (a contact without a case is
--   a case of its own), active when its latest contact is in the last N days, and its
--   effort is the sum of its contacts' points, at most 100,
--   each case weighs 2^(-age / 7 days), age the time from its latest contact to now,
--   index = sum(weight x effort) / sum(weight), rounded to 0.1, NULL without such a case.
-- A mean, so a customer with one case and one with twenty cases as hard have the same
-- index, and the decay lets the newest cases count most. Only the ratio of the weights
-- matters, so the index does not drift while no contact arrives, until a case leaves
-- the window. effort_sum_index_7d and _28d keep the old definition (the points of the
-- contacts in the window, at most 100) for comparison. customer_360 reads
-- effort_index_28d by name (0004, 0005), so it shows the new index without being
-- recreated.
CREATE OR REPLACE VIEW {database}.customer_effort AS
SELECT
    customer_id,
    sum(case_contacts_7d) AS contacts_7d,
    sum(case_points_7d) AS points_7d,
    sum(case_contacts_28d) AS contacts_28d,
    sum(case_points_28d) AS points_28d,
    sum(case_repeats_28d) AS repeat_contacts_28d,
    sum(case_switches_28d) AS channel_switches_28d,
    sum(case_transfers_28d) AS transfers_28d,
    sum(case_escalations_28d) AS escalations_28d,
    sum(case_unresolved_28d) AS unresolved_28d,
    sum(case_wait_seconds_28d) AS wait_seconds_28d,
    countIf(latest >= now64() - INTERVAL 7 DAY) AS cases_7d,
    countIf(latest >= now64() - INTERVAL 28 DAY) AS cases_28d,
    if(cases_7d = 0, NULL,
       round(sumIf(weight * case_effort, latest >= now64() - INTERVAL 7 DAY)
             / sumIf(weight, latest >= now64() - INTERVAL 7 DAY), 1)) AS effort_index_7d,
    if(cases_28d = 0, NULL,
       round(sumIf(weight * case_effort, latest >= now64() - INTERVAL 28 DAY)
             / sumIf(weight, latest >= now64() - INTERVAL 28 DAY), 1)) AS effort_index_28d,
    least(100, points_7d) AS effort_sum_index_7d,
    least(100, points_28d) AS effort_sum_index_28d
FROM
(
    SELECT
        customer_id,
        case_id,
        if(case_id IS NULL, event_id, '') AS lone_contact,
        max(occurred_at) AS latest,
        least(100, sum(points)) AS case_effort,
        exp2((toUnixTimestamp64Milli(latest) - toUnixTimestamp64Milli(now64(3))) / 604800000)
            AS weight,
        countIf(occurred_at >= now64() - INTERVAL 7 DAY) AS case_contacts_7d,
        sumIf(points, occurred_at >= now64() - INTERVAL 7 DAY) AS case_points_7d,
        countIf(occurred_at >= now64() - INTERVAL 28 DAY) AS case_contacts_28d,
        sumIf(points, occurred_at >= now64() - INTERVAL 28 DAY) AS case_points_28d,
        sumIf(repeat_contact, occurred_at >= now64() - INTERVAL 28 DAY) AS case_repeats_28d,
        sumIf(channel_switch, occurred_at >= now64() - INTERVAL 28 DAY) AS case_switches_28d,
        sumIf(transferred, occurred_at >= now64() - INTERVAL 28 DAY) AS case_transfers_28d,
        sumIf(escalated, occurred_at >= now64() - INTERVAL 28 DAY) AS case_escalations_28d,
        sumIf(unresolved, occurred_at >= now64() - INTERVAL 28 DAY) AS case_unresolved_28d,
        sumIf(wait_seconds, occurred_at >= now64() - INTERVAL 28 DAY) AS case_wait_seconds_28d
    FROM {database}.effort
    GROUP BY customer_id, case_id, lone_contact
)
GROUP BY customer_id;

-- The customers with the highest effort points in the last 7 days (as in 0004, recreated
-- so that it reads the view above, and shows how many cases the index averages).
CREATE OR REPLACE VIEW {database}.top_effort_customers_7d AS
SELECT customer_id, contacts_7d, points_7d, cases_7d, effort_index_7d
FROM {database}.customer_effort
WHERE contacts_7d > 0
ORDER BY points_7d DESC, customer_id
LIMIT 100
