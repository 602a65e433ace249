-- PREDICT inside a CTE and a subquery: plans whose customers the model rates riskier than average.
WITH scored AS (
    SELECT c.id, c.plan_id, PREDICT('churn@prod', *) AS p_churn
    FROM customers AS c
    JOIN plans AS p ON c.plan_id = p.plan_id
)
SELECT plan_id, COUNT(*) AS customers, AVG(p_churn) AS avg_p_churn
FROM scored
WHERE plan_id IN (
    SELECT p.plan_id
    FROM plans AS p
    WHERE p.price > (SELECT AVG(price) FROM plans)
)
GROUP BY plan_id
HAVING AVG(p_churn) > (SELECT AVG(p_churn) FROM scored)
ORDER BY avg_p_churn DESC, plan_id
LIMIT 10
