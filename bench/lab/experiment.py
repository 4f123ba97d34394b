# Databricks notebook source
# The compute of the wine lab (examples/wine-lab/FullExperiment without mounts, plots and
# serving), written once to run both as a workspace notebook and as a plain PySpark script;
# bench/lab.py times it both ways. Prints (or exits with) the seconds each part took.
import json
import os
import sys
import time

try:
    dbutils  # noqa: B018 - defined in a workspace notebook
    IN_WORKSPACE = True
except NameError:
    IN_WORKSPACE = False

if IN_WORKSPACE:
    for name, default in (("spark_data", ""), ("local_data", ""), ("work_dir", ""), ("max_evals", "8")):
        dbutils.widgets.text(name, default)
    params = {k: dbutils.widgets.get(k) for k in ("spark_data", "local_data", "work_dir", "max_evals")}
else:  # python experiment.py DATA_DIR WORK_DIR MAX_EVALS
    data_dir, work_dir, evals = sys.argv[1:4]
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work_dir}/mlflow.db"  # before Spark: workers inherit it
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from brickyard.compute.runtime import delta_jars

    spark = (SparkSession.builder.master("local[2]").appName("wine-lab-plain")
             .config("spark.jars", ",".join(str(j) for j in delta_jars()))
             .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
             .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
             .config("spark.sql.warehouse.dir", f"{work_dir}/warehouse").getOrCreate())
    spark.range(1).count()
    params = {"spark_data": data_dir, "local_data": data_dir, "work_dir": work_dir, "max_evals": evals}

timings = {}
clock = time.perf_counter()


def lap(name):
    global clock
    now = time.perf_counter()
    timings[name] = round(now - clock, 2)
    clock = now

# COMMAND ----------

import pandas as pd
from pyspark.sql.functions import col, lit, monotonically_increasing_id, struct, udf
from pyspark.sql.types import StringType

red_wine = pd.read_csv(f"{params['local_data']}/winequality_red.csv", sep=";")
white_wine = pd.read_csv(f"{params['local_data']}/winequality_white.csv", sep=";")
red_wine["is_red"], white_wine["is_red"] = 1, 0


def read_wine(name):
    return (spark.read.format("csv").option("header", "true").option("sep", ";")
            .option("inferSchema", "true").load(f"{params['spark_data']}/{name}"))


@udf(StringType())
def quality_band(quality):
    return "high" if quality >= 7 else ("low" if quality <= 4 else "medium")


wine_df = (read_wine("winequality_red.csv").withColumn("is_red", lit(1))
           .union(read_wine("winequality_white.csv").withColumn("is_red", lit(0)))
           .withColumn("wine_id", monotonically_increasing_id())
           .withColumn("quality_band", quality_band(col("quality"))))
wine_df.describe().collect()
wine_df.groupBy("quality_band").count().collect()
lap("read")

spark.sql("CREATE DATABASE IF NOT EXISTS wine_bench")
wine_df.toDF(*[c.replace(" ", "_") for c in wine_df.columns]).write.mode("overwrite") \
    .saveAsTable("wine_bench.wine_quality")
spark.sql("SELECT quality_band, count(*) FROM wine_bench.wine_quality GROUP BY quality_band").collect()
lap("tables")

# COMMAND ----------

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.models.signature import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

data = pd.concat([red_wine, white_wine], axis=0)
data.rename(columns=lambda c: c.replace(" ", "_"), inplace=True)
data.quality = (data.quality >= 7).astype(int)
X_train, X_test, y_train, y_test = train_test_split(data.drop(["quality"], axis=1), data.quality, random_state=123)
experiment_id = mlflow.set_experiment(f"/Shared/wine-bench-{int(time.time())}").experiment_id
client = MlflowClient()
model_name = f"wine_bench_{int(time.time())}"


class SklearnModelWrapper(mlflow.pyfunc.PythonModel):
    def __init__(self, model):
        self.model = model

    def predict(self, context, model_input):
        return self.model.predict_proba(model_input)[:, 1]


with mlflow.start_run(run_name="untuned_random_forest") as run:
    model = RandomForestClassifier(n_estimators=10, random_state=np.random.RandomState(123)).fit(X_train, y_train)
    baseline_auc = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
    mlflow.log_metric("auc", baseline_auc)
    wrapped = SklearnModelWrapper(model)
    mlflow.pyfunc.log_model(name="random_forest_model", python_model=wrapped,
                            signature=infer_signature(X_train, wrapped.predict(None, X_train)))
version = mlflow.register_model(f"runs:/{run.info.run_id}/random_forest_model", model_name)
client.transition_model_version_stage(model_name, version.version, "Production")
mlflow.pyfunc.load_model(f"models:/{model_name}/production").predict(X_test)
lap("baseline")

# COMMAND ----------

import mlflow.xgboost
import xgboost as xgb
from hyperopt import STATUS_OK, SparkTrials, fmin, hp, tpe
from hyperopt.pyll import scope

search_space = {
    "max_depth": scope.int(hp.quniform("max_depth", 4, 100, 1)),
    "learning_rate": hp.loguniform("learning_rate", -3, 0),
    "reg_alpha": hp.loguniform("reg_alpha", -5, -1),
    "reg_lambda": hp.loguniform("reg_lambda", -6, -1),
    "min_child_weight": hp.loguniform("min_child_weight", -1, 3),
    "objective": "binary:logistic", "seed": 123, "nthread": 1,
}


def train_model(params):
    mlflow.xgboost.autolog(log_models=False)
    with mlflow.start_run(nested=True, experiment_id=experiment_id) as trial:
        train, test = xgb.DMatrix(data=X_train, label=y_train), xgb.DMatrix(data=X_test, label=y_test)
        booster = xgb.train(params=params, dtrain=train, num_boost_round=1000, evals=[(test, "test")],
                            early_stopping_rounds=50, verbose_eval=False)
        auc_score = roc_auc_score(y_test, booster.predict(test))
        mlflow.log_metric("auc", auc_score)
        mlflow.xgboost.log_model(booster, name="model", signature=infer_signature(X_train, booster.predict(train)))
        return {"status": STATUS_OK, "loss": -auc_score, "run_id": trial.info.run_id}


trials = SparkTrials(parallelism=2)
with mlflow.start_run(run_name="xgboost_models"):
    fmin(fn=train_model, space=search_space, algo=tpe.suggest, max_evals=int(params["max_evals"]), trials=trials,
         rstate=np.random.default_rng(123))
best = trials.best_trial["result"]
new_version = mlflow.register_model(f"runs:/{best['run_id']}/model", model_name)
client.transition_model_version_stage(model_name, version.version, "Archived")
client.transition_model_version_stage(model_name, new_version.version, "Production")
lap("sweep")

# COMMAND ----------

table_path = f"{params['work_dir']}/delta/wine_data"
spark.createDataFrame(X_train).write.format("delta").mode("overwrite").save(table_path)
spark.sql("DROP TABLE IF EXISTS wine_bench.wine_inference")
spark.sql(f"CREATE TABLE wine_bench.wine_inference USING DELTA LOCATION '{table_path}'")
spark.createDataFrame(X_test).write.format("delta").mode("append").save(table_path)
spark.sql("REFRESH TABLE wine_bench.wine_inference")
apply_model_udf = mlflow.pyfunc.spark_udf(spark, f"models:/{model_name}/production", result_type="double")
scored = spark.table("wine_bench.wine_inference").withColumn("prediction", apply_model_udf(struct(*X_train.columns)))
scored.write.format("delta").mode("overwrite").saveAsTable("wine_bench.wine_predictions")
rows = spark.table("wine_bench.wine_predictions").count()
lap("inference")

result = json.dumps({"timings": timings, "total": round(sum(timings.values()), 2), "rows": rows,
                     "baseline_auc": baseline_auc, "best_loss": best["loss"]})
if IN_WORKSPACE:
    dbutils.notebook.exit(result)
else:
    print("RESULT " + result)
    spark.stop()
