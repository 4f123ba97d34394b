# Databricks notebook source
# MAGIC %md
# MAGIC # The wine-quality lab: from uploaded CSVs to a served model
# MAGIC
# MAGIC Predict whether a Portuguese "Vinho Verde" wine is of high quality (a score of 7 or more)
# MAGIC from its physico-chemical measurements, and take the model through its whole life:
# MAGIC
# MAGIC 1. review the environment (DBFS, mounts) and mount storage with a helper notebook (`%run`)
# MAGIC    whose credentials come from a secret scope;
# MAGIC 2. read the uploaded CSVs into pandas and Spark, add columns, union, describe, UDFs;
# MAGIC 3. create databases and tables (`%sql`, `saveAsTable`);
# MAGIC 4. plot the data;
# MAGIC 5. train a random forest, log it to MLflow as a pyfunc with a signature, register it and
# MAGIC    promote it to Production;
# MAGIC 6. improve it with an xgboost + hyperopt sweep on Spark (`SparkTrials`) with autologging,
# MAGIC    register the best run, archive the old version and promote the new one;
# MAGIC 7. batch inference over a Delta table with `mlflow.pyfunc.spark_udf`;
# MAGIC 8. deploy the Production version to a serving endpoint and query it with a token.
# MAGIC
# MAGIC Data: UCI Machine Learning Repository, "Wine Quality" (P. Cortez et al., 2009), CC BY 4.0.
# MAGIC Upload `winequality-red.csv` and `winequality-white.csv` first (Data > Upload, or the DBFS
# MAGIC API): they land in `dbfs:/FileStore/shared_uploads/<you>/` as `winequality_red.csv` and
# MAGIC `winequality_white.csv`.

# COMMAND ----------

# MAGIC %md
# MAGIC ## Parameters
# MAGIC
# MAGIC Widgets (a job passes them as `base_parameters`). `max_evals` is the size of the hyperopt
# MAGIC sweep: the original lab ran 96 evaluations; the default is small so the lab runs in a few
# MAGIC minutes on a laptop.

# COMMAND ----------

dbutils.widgets.text("secret_scope", "wine-lab", "Secret scope")
dbutils.widgets.text("storage_container", "winelab", "Storage container")
dbutils.widgets.text("user_name", "", "User (empty: you)")
dbutils.widgets.text("database", "", "Database (empty: wine_<user>)")
dbutils.widgets.text("model_name", "", "Registered model (empty: <user>_wine_quality)")
dbutils.widgets.text("max_evals", "8", "Hyperopt evaluations")
dbutils.widgets.text("parallelism", "2", "SparkTrials parallelism")
dbutils.widgets.text("endpoint_name", "", "Serving endpoint (empty: <user>-wine-quality)")

# COMMAND ----------

import json
import re
import time

ctx = dbutils.notebook.entry_point.getDbutils().notebook().getContext()
user_name = dbutils.widgets.get("user_name") or ctx.userName().get()
user_key = re.sub(r"[^a-z0-9]+", "_", user_name.split("@")[0].lower()).strip("_") or "user"
database = dbutils.widgets.get("database") or f"wine_{user_key}"
secret_scope = dbutils.widgets.get("secret_scope")
container = dbutils.widgets.get("storage_container")
# Per-user names, as in the original lab (where each attendee registered "<user>wine_quality"):
# on a shared workspace, attendees must not archive each other's versions or share an endpoint.
model_name = dbutils.widgets.get("model_name") or f"{user_key}_wine_quality"
max_evals = int(dbutils.widgets.get("max_evals"))
parallelism = int(dbutils.widgets.get("parallelism"))
# Endpoint names: 1 to 63 letters, digits, '-' and '_'.
endpoint_name = dbutils.widgets.get("endpoint_name") or f"{user_key[:50]}-wine-quality"
experiment_path = ctx.notebookPath().get()

upload_dir = f"dbfs:/FileStore/shared_uploads/{user_name}"
local_upload_dir = f"/dbfs/FileStore/shared_uploads/{user_name}"
print(f"user {user_name}, database {database}, model {model_name}, endpoint {endpoint_name}, "
      f"sweep of {max_evals} evaluations")

# COMMAND ----------

# MAGIC %md
# MAGIC ## 1. The environment: DBFS, the uploaded files, mounts

# COMMAND ----------

display(dbutils.fs.ls("/"))

# COMMAND ----------

display(dbutils.fs.ls(upload_dir))

# COMMAND ----------

display(dbutils.fs.mounts())

# COMMAND ----------

# MAGIC %md
# MAGIC ### One notebook inside another: `%run` the helper
# MAGIC
# MAGIC `/Shared/HelperFunctions` defines a `Helper` class; `%run` executes it here, so the class is
# MAGIC defined in this notebook. The helper reads the storage settings from the secret scope:
# MAGIC printed, a secret shows as `[REDACTED]`.

# COMMAND ----------

# MAGIC %run /Shared/HelperFunctions

# COMMAND ----------

mounted = []
try:
    helper = Helper(secret_scope)
    print("storage account:", helper.storage_account)
    mounted.append(helper.mount_container(container))
    mounted.append(helper.mount_folder(container, "raw"))
    for name in ("winequality_red.csv", "winequality_white.csv"):
        dbutils.fs.cp(f"{upload_dir}/{name}", f"{mounted[1]}/{name}")
    display(dbutils.fs.ls(mounted[1]))
except Exception as exc:  # the rest of the lab does not need the mounts
    print(f"MOUNTS UNAVAILABLE: the storage could not be mounted ({type(exc).__name__}: {exc}). "
          "The lab goes on with the uploaded files.")

# COMMAND ----------

display(dbutils.fs.mounts())

# COMMAND ----------

# MAGIC %md
# MAGIC ## 2. Reading the CSVs
# MAGIC
# MAGIC ### pandas (through the `/dbfs` path) — and adding a column

# COMMAND ----------

import pandas as pd

red_wine = pd.read_csv(f"{local_upload_dir}/winequality_red.csv", sep=";")
white_wine = pd.read_csv(f"{local_upload_dir}/winequality_white.csv", sep=";")
red_wine["is_red"] = 1
white_wine["is_red"] = 0
print(f"red {red_wine.shape}, white {white_wine.shape}")
red_wine.head()

# COMMAND ----------

# MAGIC %md
# MAGIC ### Spark (through the `dbfs:` path): the separator matters
# MAGIC
# MAGIC Read with the defaults (comma-separated), each line of these semicolon-separated files is
# MAGIC one value: Spark sees a single column whose name is the whole header line.

# COMMAND ----------

wrong = spark.read.format("csv").option("header", "true").load(f"{upload_dir}/winequality_red.csv")
print(f"{len(wrong.columns)} column: {wrong.columns[0][:70]}...")
display(wrong.limit(3))

# COMMAND ----------

from pyspark.sql.functions import col, lit, monotonically_increasing_id


def read_wine(name):
    return (spark.read.format("csv").option("header", "true").option("sep", ";")
            .option("inferSchema", "true").load(f"{upload_dir}/{name}"))


red_df = read_wine("winequality_red.csv").withColumn("is_red", lit(1))
white_df = read_wine("winequality_white.csv").withColumn("is_red", lit(0))
wine_df = red_df.union(white_df)
print(f"{len(wine_df.columns)} columns; red {red_df.count()}, white {white_df.count()}, "
      f"together {wine_df.count()} rows")

# COMMAND ----------

display(wine_df.describe())

# COMMAND ----------

# MAGIC %md
# MAGIC ### An id per row and Python UDFs

# COMMAND ----------

from pyspark.sql.functions import udf
from pyspark.sql.types import StringType


@udf(StringType())
def quality_band(quality):
    return "high" if quality >= 7 else ("low" if quality <= 4 else "medium")


# Registered under a name, a Python UDF can be used from SQL too.
spark.udf.register("wine_color", lambda is_red: "red" if is_red == 1 else "white", StringType())

wine_df = (wine_df.withColumn("wine_id", monotonically_increasing_id())
           .withColumn("quality_band", quality_band(col("quality"))))
display(wine_df.select("wine_id", "quality", "quality_band", "is_red").limit(5))

# COMMAND ----------

display(wine_df.groupBy("quality_band").count().orderBy("quality_band"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 3. Databases and tables

# COMMAND ----------

# MAGIC %sql
# MAGIC CREATE DATABASE IF NOT EXISTS wine_lab COMMENT 'The wine-quality lab: shared by everyone';
# MAGIC SHOW DATABASES

# COMMAND ----------

# MAGIC %md
# MAGIC Each person of a shared workspace gets their own database, named after them.

# COMMAND ----------

spark.sql(f"CREATE DATABASE IF NOT EXISTS {database} COMMENT 'The wine-quality lab of {user_name}'")
spark.sql(f"USE {database}")
print(f"using database {database}")

# COMMAND ----------

# MAGIC %md
# MAGIC Table formats refuse spaces in column names (`fixed acidity`): rename the columns first.

# COMMAND ----------

try:
    wine_df.write.mode("overwrite").saveAsTable("wine_with_spaces")
    print("saved with spaces in the column names")
    spark.sql("DROP TABLE wine_with_spaces")
except Exception as exc:
    print(f"refused: {str(exc).splitlines()[0][:200]}")

# COMMAND ----------

wine_table = wine_df.toDF(*[c.replace(" ", "_") for c in wine_df.columns])
wine_table.write.mode("overwrite").saveAsTable(f"{database}.wine_quality")
print(wine_table.columns)

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT wine_color(is_red) AS color, quality_band, count(*) AS wines, round(avg(alcohol), 2) AS avg_alcohol
# MAGIC FROM wine_quality
# MAGIC GROUP BY is_red, quality_band
# MAGIC ORDER BY color, quality_band

# COMMAND ----------

# MAGIC %md
# MAGIC ## 4. Looking at the data
# MAGIC
# MAGIC The model works on the pandas frame: both colors together, spaces out of the column names.

# COMMAND ----------

data = pd.concat([red_wine, white_wine], axis=0)
data.rename(columns=lambda c: c.replace(" ", "_"), inplace=True)
data.head()

# COMMAND ----------

import matplotlib.pyplot as plt
import seaborn as sns

sns.histplot(data.quality, discrete=True)
plt.title("Quality scores")
plt.show()

# COMMAND ----------

# MAGIC %md
# MAGIC Scores of 7 or more are "high quality": that is what the model predicts.

# COMMAND ----------

high_quality = (data.quality >= 7).astype(int)
data.quality = high_quality
print(f"{int(high_quality.sum())} high-quality wines of {len(data)}")

# COMMAND ----------

dims = (3, 4)
f, axes = plt.subplots(dims[0], dims[1], figsize=(25, 15))
axis_i, axis_j = 0, 0
for column in data.columns:
    if column in ("is_red", "quality"):
        continue
    sns.boxplot(x=high_quality, y=data[column], ax=axes[axis_i, axis_j])
    axis_j += 1
    if axis_j == dims[1]:
        axis_i += 1
        axis_j = 0
plt.show()

# COMMAND ----------

data.isna().any()

# COMMAND ----------

from sklearn.model_selection import train_test_split

X = data.drop(["quality"], axis=1)
y = data.quality
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=123)
print(f"train {len(X_train)}, test {len(X_test)}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## 5. A baseline model, tracked with MLflow
# MAGIC
# MAGIC The random forest's `predict_proba` is what we want to serve, so it is wrapped as a pyfunc
# MAGIC model; the signature records the input columns and the output.

# COMMAND ----------

import cloudpickle
import mlflow
import mlflow.pyfunc
import numpy as np
import sklearn
from mlflow.models.signature import infer_signature
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score

mlflow.set_experiment(experiment_path)


class SklearnModelWrapper(mlflow.pyfunc.PythonModel):
    def __init__(self, model):
        self.model = model

    def predict(self, context, model_input):
        return self.model.predict_proba(model_input)[:, 1]


with mlflow.start_run(run_name="untuned_random_forest"):
    n_estimators = 10
    model = RandomForestClassifier(n_estimators=n_estimators, random_state=np.random.RandomState(123))
    model.fit(X_train, y_train)
    predictions_test = model.predict_proba(X_test)[:, 1]
    auc_score = roc_auc_score(y_test, predictions_test)
    mlflow.log_param("n_estimators", n_estimators)
    mlflow.log_metric("auc", auc_score)
    wrapped_model = SklearnModelWrapper(model)
    signature = infer_signature(X_train, wrapped_model.predict(None, X_train))
    mlflow.pyfunc.log_model(
        name="random_forest_model", python_model=wrapped_model, signature=signature,
        pip_requirements=[f"cloudpickle=={cloudpickle.__version__}", f"scikit-learn=={sklearn.__version__}"])
print(f"AUC of the random forest: {auc_score:.4f}")

# COMMAND ----------

feature_importances = pd.DataFrame(model.feature_importances_, index=X_train.columns.tolist(),
                                   columns=["importance"])
feature_importances.sort_values("importance", ascending=False)

# COMMAND ----------

# MAGIC %md
# MAGIC ### Register the model and promote it to Production

# COMMAND ----------

from mlflow.tracking import MlflowClient

client = MlflowClient()
run_id = mlflow.search_runs(filter_string='tags.mlflow.runName = "untuned_random_forest"').iloc[0].run_id


def wait_until_ready(name, version, timeout=120):
    deadline = time.time() + timeout
    while client.get_model_version(name, version).status != "READY":
        if time.time() > deadline:
            raise TimeoutError(f"{name} version {version} is not READY after {timeout} s")
        time.sleep(1)


model_version = mlflow.register_model(f"runs:/{run_id}/random_forest_model", model_name)
wait_until_ready(model_name, model_version.version)
client.transition_model_version_stage(name=model_name, version=model_version.version, stage="Production")
print(f"{model_name} version {model_version.version} is in Production")

# COMMAND ----------

model = mlflow.pyfunc.load_model(f"models:/{model_name}/production")
baseline_auc = roc_auc_score(y_test, model.predict(X_test))
print(f"AUC of models:/{model_name}/production: {baseline_auc:.4f}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## 6. A better model: xgboost, tuned by hyperopt on Spark
# MAGIC
# MAGIC `SparkTrials` runs each evaluation as a Spark task; autologging records each one as a
# MAGIC child run of the sweep's run.

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
    "objective": "binary:logistic",
    "seed": 123,
    "nthread": 1,  # one core per trial: trials run side by side
}


def train_model(params):
    # Models are logged once, below, with their signature.
    mlflow.xgboost.autolog(log_models=False)
    with mlflow.start_run(nested=True):
        train = xgb.DMatrix(data=X_train, label=y_train)
        test = xgb.DMatrix(data=X_test, label=y_test)
        booster = xgb.train(params=params, dtrain=train, num_boost_round=1000,
                            evals=[(test, "test")], early_stopping_rounds=50, verbose_eval=False)
        predictions_test = booster.predict(test)
        auc_score = roc_auc_score(y_test, predictions_test)
        mlflow.log_metric("auc", auc_score)
        signature = infer_signature(X_train, booster.predict(train))
        mlflow.xgboost.log_model(booster, name="model", signature=signature)
        return {"status": STATUS_OK, "loss": -1 * auc_score, "booster": booster.attributes()}


spark_trials = SparkTrials(parallelism=parallelism)
with mlflow.start_run(run_name="xgboost_models") as sweep_run:
    best_params = fmin(fn=train_model, space=search_space, algo=tpe.suggest, max_evals=max_evals,
                       trials=spark_trials, rstate=np.random.default_rng(123))
best_params

# COMMAND ----------

experiment_id = mlflow.get_experiment_by_name(experiment_path).experiment_id
sweep_runs = mlflow.search_runs(experiment_ids=[experiment_id],
                                filter_string=f"tags.mlflow.parentRunId = '{sweep_run.info.run_id}'",
                                order_by=["metrics.auc DESC"])
best_run = sweep_runs.iloc[0]
print(f"{len(sweep_runs)} runs in the sweep; AUC of the best run: {best_run['metrics.auc']:.4f}")

# COMMAND ----------

# MAGIC %md
# MAGIC ### Register the best run; archive the old version, promote the new one

# COMMAND ----------

new_model_version = mlflow.register_model(f"runs:/{best_run.run_id}/model", model_name)
wait_until_ready(model_name, new_model_version.version)
client.transition_model_version_stage(name=model_name, version=model_version.version, stage="Archived")
client.transition_model_version_stage(name=model_name, version=new_model_version.version, stage="Production")
print(f"version {model_version.version} archived, version {new_model_version.version} in Production")

# COMMAND ----------

model = mlflow.pyfunc.load_model(f"models:/{model_name}/production")
tuned_auc = roc_auc_score(y_test, model.predict(X_test))
print(f"AUC of models:/{model_name}/production: {tuned_auc:.4f} (the random forest had {baseline_auc:.4f})")

# COMMAND ----------

# MAGIC %md
# MAGIC ## 7. Batch inference over a Delta table
# MAGIC
# MAGIC New data arrives as Delta files; a table is declared on their location, refreshed when more
# MAGIC arrives, and scored by the Production model as a Spark UDF.

# COMMAND ----------

table_path = f"dbfs:/tmp/{user_key}/delta/wine_data"
dbutils.fs.rm(table_path, True)
spark.createDataFrame(X_train).write.format("delta").save(table_path)
spark.sql(f"DROP TABLE IF EXISTS {database}.wine_inference")
spark.sql(f"CREATE TABLE {database}.wine_inference USING DELTA LOCATION '{table_path}'")
spark.table("wine_inference").count()

# COMMAND ----------

spark.createDataFrame(X_test).write.format("delta").mode("append").save(table_path)
spark.sql(f"REFRESH TABLE {database}.wine_inference")

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT wine_color(is_red) AS color, count(*) AS wines FROM wine_inference GROUP BY is_red ORDER BY color

# COMMAND ----------

from pyspark.sql.functions import struct

apply_model_udf = mlflow.pyfunc.spark_udf(spark, f"models:/{model_name}/production", result_type="double")
new_data = spark.table("wine_inference")
udf_inputs = struct(*(X_train.columns.tolist()))
predictions = new_data.withColumn("prediction", apply_model_udf(udf_inputs))
predictions.write.format("delta").mode("overwrite").saveAsTable(f"{database}.wine_predictions")
display(spark.table("wine_predictions").limit(10))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 8. Serving the Production version
# MAGIC
# MAGIC A serving endpoint runs the model behind the workspace's REST API; any client with a token
# MAGIC can score rows. (Where the lab built an Azure ML image and an AKS service, the workspace
# MAGIC serves the registered version itself.)

# COMMAND ----------

import requests

api_url = ctx.apiUrl().get()
headers = {"Authorization": f"Bearer {ctx.apiToken().get()}"}
production = client.get_latest_versions(model_name, stages=["Production"])[0]
config = {"served_entities": [{"entity_name": model_name, "entity_version": production.version,
                               "workload_size": "Small", "scale_to_zero_enabled": False}]}
endpoint_url = f"{api_url}/api/2.0/serving-endpoints/{endpoint_name}"
if requests.get(endpoint_url, headers=headers, timeout=30).status_code == 404:
    r = requests.post(f"{api_url}/api/2.0/serving-endpoints", headers=headers, timeout=30,
                      json={"name": endpoint_name, "config": config})
else:
    r = requests.put(f"{endpoint_url}/config", headers=headers, json=config, timeout=30)
r.raise_for_status()
deadline = time.time() + 600
while True:
    state = requests.get(endpoint_url, headers=headers, timeout=30).json().get("state", {})
    if state.get("ready") == "READY" and state.get("config_update") == "NOT_UPDATING":
        break
    if state.get("config_update") == "UPDATE_FAILED" or time.time() > deadline:
        raise RuntimeError(f"The endpoint {endpoint_name} did not become ready: {state}")
    time.sleep(2)
print(f"{endpoint_name} serves {model_name} version {production.version}")

# COMMAND ----------


def score_model(dataset):
    url = f"{api_url}/serving-endpoints/{endpoint_name}/invocations"
    response = requests.post(url, headers=headers, json={"dataframe_split": dataset.to_dict(orient="split")},
                             timeout=60)
    if response.status_code != 200:
        raise Exception(f"Request failed with status {response.status_code}, {response.text}")
    return response.json()


num_predictions = 5
served_predictions = score_model(X_test[:num_predictions])
model_evaluations = model.predict(X_test[:num_predictions])
pd.DataFrame({"Model Prediction": model_evaluations, "Served Model Prediction": served_predictions["predictions"]})

# COMMAND ----------

dbutils.notebook.exit(json.dumps({
    "baseline_auc": baseline_auc, "tuned_auc": tuned_auc, "model_name": model_name,
    "baseline_version": model_version.version, "tuned_version": new_model_version.version,
    "sweep_runs": len(sweep_runs), "experiment_id": experiment_id, "database": database,
    "inference_rows": spark.table("wine_predictions").count(), "endpoint_name": endpoint_name,
    "mounts": mounted,
}))
