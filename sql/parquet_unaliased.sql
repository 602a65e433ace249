-- Parquet files need no alias: PREDICT(*) binds the columns DuckDB describes for a file path or a
-- read_parquet(...) call and references them unqualified (each name is in one source only).
SELECT id, region, price, PREDICT('churn@prod', *) AS p_churn
FROM read_parquet('customers.parquet')
JOIN 'plans.parquet' USING (plan_id)
WHERE support_calls >= 3
ORDER BY p_churn DESC, id
LIMIT 10
