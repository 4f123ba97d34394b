# Databricks notebook source
# MAGIC %md
# MAGIC # Base experiment (reference)
# MAGIC
# MAGIC The smallest form of the lab: the two uploaded CSVs into pandas, a random forest, its AUC
# MAGIC logged to MLflow. `FullExperiment` does all of this and the rest (tables, the sweep, the
# MAGIC registry, batch inference, serving).

# COMMAND ----------

dbutils.widgets.text("user_name", "", "User (empty: you)")
user_name = dbutils.widgets.get("user_name") or \
    dbutils.notebook.entry_point.getDbutils().notebook().getContext().userName().get()

# COMMAND ----------

import pandas as pd

folder = f"/dbfs/FileStore/shared_uploads/{user_name}"
red_wine = pd.read_csv(f"{folder}/winequality_red.csv", sep=";")
white_wine = pd.read_csv(f"{folder}/winequality_white.csv", sep=";")
red_wine["is_red"] = 1
white_wine["is_red"] = 0
data = pd.concat([red_wine, white_wine], axis=0)
data.rename(columns=lambda c: c.replace(" ", "_"), inplace=True)
data.quality = (data.quality >= 7).astype(int)

# COMMAND ----------

import mlflow
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

X_train, X_test, y_train, y_test = train_test_split(data.drop(["quality"], axis=1), data.quality, random_state=123)
with mlflow.start_run(run_name="base_random_forest"):
    model = RandomForestClassifier(n_estimators=10, random_state=np.random.RandomState(123))
    model.fit(X_train, y_train)
    auc_score = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
    mlflow.log_param("n_estimators", 10)
    mlflow.log_metric("auc", auc_score)
print(f"AUC: {auc_score:.4f}")
