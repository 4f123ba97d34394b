-- Databricks notebook source
-- MAGIC %md
-- MAGIC ## Daily report
-- MAGIC Revenue per region for the last 7 days.

-- COMMAND ----------

CREATE OR REPLACE TEMP VIEW recent AS
SELECT * FROM sales.orders
WHERE order_date >= date_sub(current_date(), 7)

-- COMMAND ----------

SELECT region, sum(amount) AS revenue
FROM recent
GROUP BY region
ORDER BY revenue DESC

-- COMMAND ----------

-- MAGIC %python
-- MAGIC df = spark.table("recent")
-- MAGIC print(df.count())