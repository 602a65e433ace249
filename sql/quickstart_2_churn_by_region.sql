-- Two churn models side by side, aggregated per region: the tree ensemble and the logistic
-- regression (a GLM the optimizer may factorize over the join or inline as SQL arithmetic).
SELECT c.region,
       COUNT(*) AS customers,
       AVG(PREDICT('churn@prod', *)) AS avg_p_churn_lightgbm,
       AVG(PREDICT('churn_logit@prod', *)) AS avg_p_churn_logit
FROM customers AS c
JOIN plans AS p ON c.plan_id = p.plan_id
GROUP BY c.region
ORDER BY c.region
