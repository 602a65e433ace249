-- Positional arguments bind in signature order; the latest version of 'spend' is used.
SELECT c.id, c.monthly_spend,
       PREDICT('spend', c.age, c.tenure_months, c.support_calls, p.price, p.data_gb) AS expected_spend
FROM customers AS c
JOIN plans AS p ON c.plan_id = p.plan_id
WHERE c.region = 'EU'
ORDER BY c.id
LIMIT 10
