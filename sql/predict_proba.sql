-- PREDICT_PROBA returns every class probability as DOUBLE[] in class order ([P(stay), P(churn)]);
-- DuckDB lists are 1-based, so [2] is the churn probability.
SELECT c.id,
       PREDICT_PROBA('churn@prod', *) AS proba,
       PREDICT_PROBA('churn@prod', *)[2] AS p_churn
FROM customers AS c
JOIN plans AS p ON c.plan_id = p.plan_id
ORDER BY c.id
LIMIT 10
