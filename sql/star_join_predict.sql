-- Star join: PREDICT(..., *) binds the model's inputs by name from both sides of the join
-- (customer columns from c, plan columns from p); the WHERE filter lets the optimizer specialise the model.
SELECT c.id, c.region, p.plan_id, PREDICT('churn@prod', *) AS p_churn
FROM customers AS c
JOIN plans AS p ON c.plan_id = p.plan_id
WHERE c.region = 'EU' AND p.contract_months >= 12
ORDER BY p_churn DESC, c.id
LIMIT 20
