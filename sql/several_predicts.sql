-- Several models in one SELECT: two churn models (tree ensemble and GLM, each resolved once and
-- pinned for the whole query) and the spend regression, compared with the actual spend.
SELECT c.id,
       PREDICT('churn@prod', *) AS p_churn_lightgbm,
       PREDICT('churn_logit@prod', *) AS p_churn_logit,
       PREDICT('spend', *) AS expected_spend,
       c.monthly_spend - PREDICT('spend', *) AS spend_residual
FROM customers AS c
JOIN plans AS p ON c.plan_id = p.plan_id
ORDER BY c.id
LIMIT 20
