# Databricks notebook source
# MAGIC %md
# MAGIC # ETL pipeline
# MAGIC
# MAGIC Loads the raw trips, cleans them and writes a Delta table.
# MAGIC * input: `dbfs:/FileStore/shared_uploads/trips.csv`
# MAGIC * output: `default.trips_clean`

# COMMAND ----------

# MAGIC %run ./config $env="dev"

# COMMAND ----------

# DBTITLE 1,Read the raw data
raw = (spark.read
       .option("header", "true")
       .option("inferSchema", "true")
       .csv("dbfs:/FileStore/shared_uploads/trips.csv"))
display(raw.limit(10))

# COMMAND ----------

from pyspark.sql import functions as F

clean = (raw
         .where(F.col("distance") > 0)
         .withColumn("pickup_date", F.to_date("pickup_ts")))
clean.write.format("delta").mode("overwrite").saveAsTable("default.trips_clean")

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT pickup_date, count(*) AS trips
# MAGIC FROM default.trips_clean
# MAGIC GROUP BY pickup_date
# MAGIC ORDER BY pickup_date

# COMMAND ----------

# MAGIC %sh ls -la /dbfs/FileStore/shared_uploads

# COMMAND ----------

dbutils.notebook.exit("ok")