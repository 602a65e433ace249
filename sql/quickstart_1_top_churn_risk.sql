-- Customers most likely to churn, scored by the production LightGBM churn model.
-- PREDICT(..., *) binds the model's inputs by column name from both sides of the join.
SELECT c.id, c.region, p.price, PREDICT('churn@prod', *) AS p_churn
FROM customers AS c
JOIN plans AS p ON c.plan_id = p.plan_id
ORDER BY p_churn DESC, c.id
LIMIT 10
