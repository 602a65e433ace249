-- Scoring straight from parquet files; export the demo tables first, e.g.
--   COPY customers TO 'customers.parquet' (FORMAT parquet); COPY plans TO 'plans.parquet' (FORMAT parquet);
-- An alias lets you write t.* and lets factorize_linear treat the file as a dimension.
SELECT c.id, c.region, PREDICT('churn@prod', *) AS p_churn, PREDICT('spend', *) AS expected_spend
FROM 'customers.parquet' AS c
JOIN 'plans.parquet' AS p ON c.plan_id = p.plan_id
WHERE c.support_calls >= 3
ORDER BY p_churn DESC, c.id
LIMIT 10
