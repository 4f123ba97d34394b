"""MLflow on clusters: notebook experiments and tags, autolog, the registry, SparkTrials child runs
and spark_udf over Delta, from a notebook job run by a non-admin user on the shared cluster.

The providers that MLflow loads from our entry points are also checked in a plain process (no
Spark), against the real server in client mode 2.
"""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from databricks.sdk.service import jobs
from databricks.sdk.service.workspace import ImportFormat, Language

DATA = Path(__file__).parent / "data" / "winequality-red-sample.csv"
WAIT = timedelta(minutes=6)


def run_python(code: str, env: dict, tmp_path, ok: bool = True) -> dict:
    """Run `code` in a fresh Python with only our MLflow/Databricks/Brickyard variables; its last line is JSON."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_", "BRICKYARD_"))}
    full.update(env, MLFLOW_DISABLE_TELEMETRY="true", PYTHONWARNINGS="ignore", HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 0) == ok, proc.stderr[-6000:]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    return json.loads(proc.stdout.strip().splitlines()[-1]) if ok else {"stderr": proc.stderr}


def mlflow_get(server, path: str, token: str | None = None, **params) -> dict:
    r = server.api("GET", f"/api/2.0/mlflow/{path}", token=token, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def search_runs(server, exp_id: str, filter_string: str = "") -> list[dict]:
    r = server.api("POST", "/api/2.0/mlflow/runs/search",
                   json={"experiment_ids": [exp_id], "filter": filter_string, "max_results": 100})
    assert r.status_code == 200, r.text
    return r.json().get("runs", [])


def tags_of(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@pytest.fixture(scope="module")
def bob(server):
    """A non-admin user: the runs must carry the job's user, not the admin's or the OS user's."""
    name = f"mlflow-bob-{os.getpid()}@example.com"
    _, token = server.new_user(name)
    return name, token


def test_notebook_experiment_tags_and_worker_parent_outside_spark(server, bob, unique, tmp_path):
    """The process set-up without Spark: a kernel's runs go to the notebook's experiment (created
    once, then reused) with the notebook's tags; the environment it ships to workers makes a run
    started there (no active run) the child of the kernel's active run, as the kernel's user."""
    user, token = bob
    path = f"/Users/{user}/{unique('nb')}"
    env = {"DATABRICKS_HOST": server.url, "DATABRICKS_TOKEN": token,
           "BRICKYARD_NOTEBOOK_PATH": path, "BRICKYARD_CONTEXT_ID": "ctx-test", "BRICKYARD_CLUSTER_ID": "0000-test"}
    kernel = """
        import json, os
        from brickyard.runtime import mlflow_setup
        mlflow_setup.configure_process()
        before = mlflow_setup.worker_mlflow_env()  # MLflow not imported yet: workers keep the shared env
        import mlflow
        with mlflow.start_run() as run:
            mlflow.log_param("p", 1)
            shipped = mlflow_setup.worker_mlflow_env()
        print(json.dumps({"run_id": run.info.run_id, "exp_id": run.info.experiment_id, "before": before,
                          "shipped": shipped, "after": mlflow_setup.worker_mlflow_env()}))
    """
    first = run_python(kernel, env, tmp_path)
    second = run_python(kernel, env, tmp_path)  # a second process finds the experiment by name
    assert first["exp_id"] == second["exp_id"] and first["before"] == {}
    exp = mlflow_get(server, "experiments/get-by-name", experiment_name=path)["experiment"]
    assert exp["experiment_id"] == first["exp_id"]
    run = mlflow_get(server, "runs/get", run_id=first["run_id"])["run"]
    tags = tags_of(run)
    assert run["info"]["user_id"] == user and tags["mlflow.user"] == user
    assert tags["mlflow.source.type"] == "NOTEBOOK" and tags["mlflow.source.name"] == path
    assert tags["mlflow.databricks.notebookPath"] == path and tags["mlflow.databricks.cluster.id"] == "0000-test"
    assert tags["brickyard.kernelId"] == "ctx-test" and "mlflow.parentRunId" not in tags
    shipped = first["shipped"]
    assert shipped["MLFLOW_TRACKING_URI"] == "databricks" and shipped["DATABRICKS_TOKEN"] == token
    assert shipped["MLFLOW_EXPERIMENT_ID"] == first["exp_id"] and "MLFLOW_EXPERIMENT_NAME" not in shipped
    # After the run, workers get the notebook's experiment and no parent.
    assert "mlflow.parentRunId" not in json.loads(first["after"]["MLFLOW_RUN_CONTEXT"])

    # A worker (a process with only the shipped variables): its run is the kernel run's child, in
    # the same experiment; a run nested in the worker's own run keeps MLflow's parent.
    worker = run_python("""
        import json
        import mlflow
        with mlflow.start_run() as trial:
            with mlflow.start_run(nested=True) as inner:
                pass
        print(json.dumps({"trial": trial.info.run_id, "inner": inner.info.run_id, "exp": trial.info.experiment_id}))
    """, shipped, tmp_path)
    trial = mlflow_get(server, "runs/get", run_id=worker["trial"])["run"]
    inner = tags_of(mlflow_get(server, "runs/get", run_id=worker["inner"])["run"])
    assert worker["exp"] == first["exp_id"] and trial["info"]["user_id"] == user
    assert tags_of(trial)["mlflow.parentRunId"] == first["run_id"] and inner["mlflow.parentRunId"] == worker["trial"]
    assert tags_of(trial)["mlflow.source.name"] == path

    # Without a notebook (a job's Python file) MLflow keeps its own defaults; the cluster's own
    # MLFLOW_EXPERIMENT_ID is not overridden by the notebook's name.
    plain = run_python("""
        import json, os
        from brickyard.runtime import mlflow_setup
        mlflow_setup.configure_process()
        print(json.dumps({k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
                                                         "MLFLOW_RUN_CONTEXT")}))
    """, {"DATABRICKS_HOST": server.url, "DATABRICKS_TOKEN": token, "MLFLOW_EXPERIMENT_ID": "0",
          "BRICKYARD_NOTEBOOK_PATH": path}, tmp_path)
    assert plain["MLFLOW_TRACKING_URI"] == "databricks" and plain["MLFLOW_EXPERIMENT_NAME"] is None
    assert json.loads(plain["MLFLOW_RUN_CONTEXT"])["mlflow.source.name"] == path

    # A kernel whose token was revoked cannot log: MLflow reports the workspace's 401.
    failed = run_python(kernel, {**env, "DATABRICKS_TOKEN": "dapi" + "0" * 32}, tmp_path, ok=False)
    assert "UNAUTHENTICATED" in failed["stderr"] or "401" in failed["stderr"]


NOTEBOOK = '''# Databricks notebook source
import json, warnings
warnings.filterwarnings("ignore")
import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

model_name = dbutils.widgets.get("model_name")
table = dbutils.widgets.get("table")
data = pd.read_csv("/dbfs" + dbutils.widgets.get("csv"), sep=";")
data.columns = [c.replace(" ", "_") for c in data.columns]
data["quality"] = (data["quality"] >= 7).astype(int)
X = data.drop(["quality"], axis=1).astype("float64")
y = data["quality"]
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=123, stratify=y)

# COMMAND ----------

mlflow.sklearn.autolog(log_models=False, silent=True)


class SklearnModelWrapper(mlflow.pyfunc.PythonModel):
    def __init__(self, model):
        self.model = model

    def predict(self, context, model_input):
        return self.model.predict_proba(model_input)[:, 1]


with mlflow.start_run(run_name="untuned_random_forest") as run:
    model = RandomForestClassifier(n_estimators=10, random_state=123).fit(X_train, y_train)
    auc = roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])
    mlflow.log_metric("auc", auc)
    wrapped = SklearnModelWrapper(model)
    signature = infer_signature(X_train, wrapped.predict(None, X_train))
    mlflow.pyfunc.log_model(name="random_forest_model", python_model=wrapped, signature=signature)
rf_run_id = run.info.run_id

# COMMAND ----------

client = mlflow.MlflowClient()
mv = mlflow.register_model(f"runs:/{rf_run_id}/random_forest_model", model_name)
client.transition_model_version_stage(model_name, mv.version, "Production")
stage_preds = mlflow.pyfunc.load_model(f"models:/{model_name}/production").predict(X_test)

# COMMAND ----------

# MLflow's Databricks client refuses aliases on the workspace registry (a Unity Catalog feature
# on Databricks); the workspace's plain MLflow REST API (client mode 1) serves them.
import os
host = os.environ["DATABRICKS_HOST"]
os.environ["MLFLOW_TRACKING_TOKEN"] = os.environ["DATABRICKS_TOKEN"]
mlflow.set_tracking_uri(host)
mlflow.set_registry_uri(host)
mlflow.MlflowClient().set_registered_model_alias(model_name, "champion", mv.version)
alias_preds = mlflow.pyfunc.load_model(f"models:/{model_name}@champion").predict(X_test)
mlflow.set_tracking_uri("databricks")
mlflow.set_registry_uri("databricks")

# COMMAND ----------

import numpy as np
import xgboost as xgb
from hyperopt import STATUS_OK, SparkTrials, fmin, hp, tpe

search_space = {"max_depth": hp.quniform("max_depth", 2, 5, 1), "learning_rate": hp.loguniform("learning_rate", -3, 0)}


def train_model(params):
    mlflow.xgboost.autolog(silent=True)
    with mlflow.start_run(nested=True):
        train = xgb.DMatrix(data=X_train, label=y_train)
        test = xgb.DMatrix(data=X_test, label=y_test)
        booster = xgb.train(params={"objective": "binary:logistic", "max_depth": int(params["max_depth"]),
                                    "learning_rate": params["learning_rate"], "seed": 123},
                            dtrain=train, num_boost_round=20, evals=[(test, "test")], verbose_eval=False)
        trial_auc = roc_auc_score(y_test, booster.predict(test))
        mlflow.log_metric("auc", trial_auc)
    return {"status": STATUS_OK, "loss": -trial_auc}


with mlflow.start_run(run_name="xgboost_models") as sweep:
    best = fmin(fn=train_model, space=search_space, algo=tpe.suggest, max_evals=3,
                trials=SparkTrials(parallelism=2), rstate=np.random.default_rng(123))
sweep_run_id = sweep.info.run_id

# COMMAND ----------

spark.createDataFrame(X_test).write.format("delta").mode("overwrite").saveAsTable(table)
# The model's output is a 1-D array (a tensor signature): without result_type MLflow 3 makes the column array<double>.
apply_model_udf = mlflow.pyfunc.spark_udf(spark, f"models:/{model_name}/production", result_type="double")
scored = spark.table(table).withColumn("prediction", apply_model_udf(*X_test.columns)).toPandas()
local = model.predict_proba(scored[list(X_test.columns)])[:, 1]
table_format = spark.sql(f"DESCRIBE DETAIL {table}").collect()[0]["format"]

# COMMAND ----------

dbutils.notebook.exit(json.dumps({
    "rf_run_id": rf_run_id, "sweep_run_id": sweep_run_id, "version": mv.version,
    "stage_vs_model": float(np.abs(stage_preds - model.predict_proba(X_test)[:, 1]).max()),
    "alias_vs_model": float(np.abs(alias_preds - model.predict_proba(X_test)[:, 1]).max()),
    "n_test": len(X_test), "n_scored": len(scored), "n_null": int(scored["prediction"].isna().sum()),
    "udf_vs_model": float(np.abs(scored["prediction"].to_numpy() - local).max()),
    "table_format": table_format,
}))
'''


@pytest.mark.slow
def test_notebook_job_autolog_registry_sparktrials_and_spark_udf(server, bob, cluster_id, unique):
    user, token = bob
    bw = server.client(token)
    csv = f"/FileStore/mlflow-tests/{unique('wine')}.csv"
    bw.dbfs.upload(csv, io.BytesIO(DATA.read_bytes()), overwrite=True)
    path = f"/Users/{user}/{unique('wine_nb')}"
    bw.workspace.import_(path, content=base64.b64encode(NOTEBOOK.encode()).decode(), format=ImportFormat.SOURCE,
                         language=Language.PYTHON, overwrite=True)
    model_name, table = unique("wine_quality"), f"default.{unique('wine_scoring')}"
    run = bw.jobs.submit(run_name="mlflow-lab", tasks=[jobs.SubmitTask(
        task_key="lab", existing_cluster_id=cluster_id, notebook_task=jobs.NotebookTask(
            notebook_path=path, base_parameters={"model_name": model_name, "table": table, "csv": csv}))]
    ).result(timeout=WAIT)
    task_run = run.tasks[0].run_id
    output = bw.jobs.get_run_output(task_run)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, (output.error, output.error_trace)
    out = json.loads(output.notebook_output.result)

    # Every run is in the notebook's experiment, by the job's user, tagged with the notebook.
    exp = mlflow_get(server, "experiments/get-by-name", experiment_name=path)["experiment"]
    rf = mlflow_get(server, "runs/get", run_id=out["rf_run_id"])["run"]
    sweep = mlflow_get(server, "runs/get", run_id=out["sweep_run_id"])["run"]
    for r in (rf, sweep):
        tags = tags_of(r)
        assert r["info"]["experiment_id"] == exp["experiment_id"]
        assert r["info"]["user_id"] == user and tags["mlflow.user"] == user
        assert tags["mlflow.source.type"] == "NOTEBOOK" and tags["mlflow.source.name"] == path
        assert tags["mlflow.databricks.notebookPath"] == path and tags["mlflow.databricks.cluster.id"] == cluster_id
    # sklearn autolog: the estimator's parameters and training metrics; our own metric too.
    params = {p["key"]: p["value"] for p in rf["data"]["params"]}
    metrics = {m["key"] for m in rf["data"]["metrics"]}
    assert params["n_estimators"] == "10" and params["random_state"] == "123"
    assert "auc" in metrics and {"training_accuracy_score", "training_roc_auc"} <= metrics

    # SparkTrials: three trials ran on Spark workers as children of the sweep run, as bob,
    # with xgboost autolog's parameters and model.
    children = search_runs(server, exp["experiment_id"], f"tags.mlflow.parentRunId = '{out['sweep_run_id']}'")
    assert len(children) == 3
    for child in children:
        tags = tags_of(child)
        assert child["info"]["user_id"] == user and tags["mlflow.source.name"] == path
        assert tags["brickyard.kernelId"] == tags_of(sweep)["brickyard.kernelId"]
        assert {p["key"] for p in child["data"]["params"]} >= {"max_depth", "learning_rate", "objective"}
        assert "auc" in {m["key"] for m in child["data"]["metrics"]}
        models = server.api("POST", "/api/2.0/mlflow/logged-models/search", json={
            "experiment_ids": [exp["experiment_id"]],
            "filter": f"source_run_id = '{child['info']['run_id']}'"}).json().get("models", [])
        assert len(models) == 1

    # Registry: version 1 of the model from the untuned run, in Production, alias champion; it
    # loaded by stage and by alias, and spark_udf scored every row of the Delta table with it.
    mv = mlflow_get(server, "model-versions/get", name=model_name, version=out["version"])["model_version"]
    assert mv["current_stage"] == "Production" and mv["run_id"] == out["rf_run_id"]
    assert mv.get("aliases") == ["champion"]
    assert out["stage_vs_model"] < 1e-9 and out["alias_vs_model"] < 1e-9
    assert out["table_format"] == "delta"
    assert out["n_scored"] == out["n_test"] == 120 and out["n_null"] == 0 and out["udf_vs_model"] < 1e-9

    # The executed notebook links each cell to the runs it logged.
    html = bw.jobs.export_run(task_run).views[0].content
    assert f"/ml/#/experiments/{exp['experiment_id']}/runs/{out['rf_run_id']}" in html
    assert f"/runs/{out['sweep_run_id']}" in html and "logged 4 runs" in html
    # Workers logged to the workspace, never to a local MLflow database.
    cluster_dir = Path(server.workspace.services["clusters"].procs[cluster_id].cluster_dir)
    assert not list(cluster_dir.rglob("mlflow.db")) and not list(cluster_dir.rglob("mlruns"))


PY_TASK = '''
import json, sys
import mlflow
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
mlflow.set_experiment(sys.argv[1])


def on_worker(_):
    import os
    import mlflow
    with mlflow.start_run(run_name="on-worker") as run:
        mlflow.log_metric("x", 1.0)
    yield run.info.run_id, os.getcwd()


with mlflow.start_run(run_name="driver") as parent:
    (child, worker_cwd), = spark.sparkContext.parallelize([0], 1).mapPartitions(on_worker).collect()
print(json.dumps({"parent": parent.info.run_id, "child": child, "worker_cwd": worker_cwd}))
'''


@pytest.mark.slow
def test_python_job_and_its_workers_log_to_the_workspace(server, bob, cluster_id, unique):
    """A spark_python_task: MLflow set for the process and for the Python workers it starts."""
    user, token = bob
    bw = server.client(token)
    file = f"dbfs:/FileStore/mlflow-tests/{unique('job')}.py"
    bw.dbfs.upload(file.removeprefix("dbfs:"), io.BytesIO(PY_TASK.encode()), overwrite=True)
    exp_name = f"/Users/{user}/{unique('job_exp')}"
    run = bw.jobs.submit(run_name="mlflow-py", tasks=[jobs.SubmitTask(
        task_key="py", existing_cluster_id=cluster_id,
        spark_python_task=jobs.SparkPythonTask(python_file=file, parameters=[exp_name]))]).result(timeout=WAIT)
    output = bw.jobs.get_run_output(run.tasks[0].run_id)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, output.logs
    out = json.loads(output.logs.strip().splitlines()[-1])
    exp_id = mlflow_get(server, "experiments/get-by-name", experiment_name=exp_name)["experiment"]["experiment_id"]
    parent = mlflow_get(server, "runs/get", run_id=out["parent"])["run"]
    child = mlflow_get(server, "runs/get", run_id=out["child"])["run"]
    assert parent["info"]["experiment_id"] == child["info"]["experiment_id"] == exp_id
    assert parent["info"]["user_id"] == child["info"]["user_id"] == user
    assert tags_of(child)["mlflow.parentRunId"] == out["parent"]
    assert not (Path(out["worker_cwd"]) / "mlflow.db").exists()
