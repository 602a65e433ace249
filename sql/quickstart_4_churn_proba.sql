-- PREDICT_PROBA returns every class probability as DOUBLE[] ([P(stay), P(churn)]), here inside a CTE.
WITH scored AS (
    SELECT c.id, PREDICT_PROBA('churn_logit@prod', *) AS proba
    FROM customers AS c
    JOIN plans AS p ON c.plan_id = p.plan_id
)
SELECT id, proba
FROM scored
ORDER BY id
LIMIT 5
