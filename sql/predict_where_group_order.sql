-- PREDICT in WHERE, GROUP BY and ORDER BY: at-risk customers per region and churn-risk band.
SELECT c.region,
       FLOOR(PREDICT('churn_logit@prod', *) * 10) / 10 AS risk_band,
       COUNT(*) AS customers,
       AVG(c.monthly_spend) AS avg_spend
FROM customers AS c
JOIN plans AS p ON c.plan_id = p.plan_id
WHERE PREDICT('churn@prod', *) > 0.3
GROUP BY c.region, FLOOR(PREDICT('churn_logit@prod', *) * 10) / 10
ORDER BY c.region, risk_band DESC
