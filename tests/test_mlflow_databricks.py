"""MLflow client mode 2 (MLFLOW_TRACKING_URI=databricks, registry `databricks`, DATABRICKS_HOST/TOKEN).

MLflow then speaks through the Databricks SDK: artifacts go through the Files API paths
/WorkspaceInternal/Mlflow/Artifacts/..., registered model files through model-versions/list-artifacts
and signed URLs. The real client runs in subprocesses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import requests


def run_mlflow(code: str, env: dict, tmp_path, timeout: int = 600, ok: bool = True) -> dict:
    """Run `code` in a fresh Python with only our MLflow/Databricks variables; its last line is JSON."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_"))}
    full.update(env, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", PYTHONWARNINGS="ignore",
                HOME=str(tmp_path))  # no ~/.databrickscfg of the machine
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    return json.loads(proc.stdout.strip().splitlines()[-1])


def databricks_env(server, token: str | None = None) -> dict:
    return {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_REGISTRY_URI": "databricks",
            "DATABRICKS_HOST": server.url, "DATABRICKS_TOKEN": token or server.token}


SDK = {"User-Agent": "databricks-sdk-py/0.162.0"}


def test_tracking_and_artifacts_through_files_api(server, unique, tmp_path):
    _, token = server.new_user(unique("bob") + "@example.com")
    user = server.api("GET", "/api/2.0/preview/scim/v2/Me", token=token).json()["userName"]
    name = f"/Users/{user}/{unique('exp')}"
    out = run_mlflow(f"""
        import json, os
        import mlflow
        from mlflow import MlflowClient
        exp = mlflow.set_experiment({name!r})
        os.makedirs("art/sub")
        open("art/hello.txt", "w").write("hello")
        open("art/sub/data.csv", "w").write("a,b\\n1,2\\n")
        with mlflow.start_run() as run:
            mlflow.log_param("alpha", 0.5)
            for step in range(3):
                mlflow.log_metric("rmse", 1.0 - step / 10, step=step)
            mlflow.set_tag("phase", "train")
            mlflow.log_artifact("art/hello.txt")
            mlflow.log_artifacts("art/sub", "tables")
            mlflow.log_dict({{"k": 1}}, "meta/info.json")
        c = MlflowClient()
        rid = run.info.run_id
        r = c.get_run(rid)
        listed = sorted(f.path for f in c.list_artifacts(rid))
        got = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="tables/data.csv", dst_path="dl")
        print(json.dumps({{"exp_id": exp.experiment_id, "location": exp.artifact_location, "run_id": rid,
                          "artifact_uri": r.info.artifact_uri, "user": r.info.user_id,
                          "tag_user": r.data.tags["mlflow.user"], "params": r.data.params,
                          "history": [m.value for m in c.get_metric_history(rid, "rmse")],
                          "listed": listed, "csv": open(got).read()}}))
    """, databricks_env(server, token), tmp_path)
    exp_id, run_id = out["exp_id"], out["run_id"]
    assert out["location"] == f"dbfs:/databricks/mlflow-tracking/{exp_id}"
    assert out["artifact_uri"] == f"dbfs:/databricks/mlflow-tracking/{exp_id}/{run_id}/artifacts"
    assert out["user"] == user and out["tag_user"] == user
    assert out["params"] == {"alpha": "0.5"} and out["history"] == [1.0, 0.9, 0.8]
    assert out["listed"] == ["hello.txt", "meta", "tables"]
    assert out["csv"] == "a,b\n1,2\n"
    # The same folder, seen by the DBFS API and by MLflow's artifact proxy (client mode 1).
    r = server.api("GET", "/api/2.0/dbfs/list", params={"path": f"/databricks/mlflow-tracking/{exp_id}/{run_id}/artifacts"})
    assert sorted(f["path"].rsplit("/", 1)[-1] for f in r.json()["files"]) == ["hello.txt", "meta", "tables"]
    r = server.api("GET", f"/api/2.0/mlflow-artifacts/artifacts/{exp_id}/{run_id}/artifacts/hello.txt")
    assert r.status_code == 200 and r.content == b"hello"


def test_registry_stages_and_load_by_stage(server, unique, tmp_path):
    model = unique("wine")
    out = run_mlflow(f"""
        import json, warnings
        warnings.filterwarnings("ignore")
        import numpy as np
        import mlflow
        from mlflow import MlflowClient
        from sklearn.linear_model import LogisticRegression
        X = np.array([[0., 1.], [1., 0.], [1., 1.], [0., 0.], [2., 0.]]); y = np.array([0, 1, 1, 0, 1])
        mlflow.set_experiment("/Users/admin/{model}")
        c = MlflowClient()
        versions, probas = [], []
        for C in (0.01, 100.0):
            with mlflow.start_run() as run:
                m = LogisticRegression(C=C).fit(X, y)
                info = mlflow.sklearn.log_model(m, name="model", input_example=X[:1])
            probas.append(m.predict_proba(X)[:, 1].tolist())
            versions.append(mlflow.register_model(f"runs:/{{run.info.run_id}}/model", "{model}").version)
        c.transition_model_version_stage("{model}", versions[0], "Production")
        first = mlflow.sklearn.load_model("models:/{model}/production").predict_proba(X)[:, 1].tolist()
        c.transition_model_version_stage("{model}", versions[1], "Production", archive_existing_versions=True)
        second = mlflow.sklearn.load_model("models:/{model}/Production").predict_proba(X)[:, 1].tolist()
        pyfunc = mlflow.pyfunc.load_model("models:/{model}/production").predict(X).tolist()
        latest = {{v.current_stage: v.version for v in c.get_latest_versions("{model}")}}
        print(json.dumps({{"versions": versions, "probas": probas, "first": first, "second": second,
                          "pyfunc": pyfunc, "latest": latest, "model_uri": info.model_uri,
                          "source": c.get_model_version("{model}", versions[1]).source}}))
    """, databricks_env(server), tmp_path)
    assert out["versions"] == ["1", "2"]
    assert out["first"] == pytest.approx(out["probas"][0])
    assert out["second"] == pytest.approx(out["probas"][1])
    assert out["pyfunc"] == [0, 1, 1, 0, 1]
    assert out["latest"] == {"Archived": "1", "Production": "2"}
    model_id = out["model_uri"].split("/")[-1]
    assert out["source"].startswith("dbfs:/databricks/mlflow-tracking/") and f"/logged_models/{model_id}/" in out["source"]

    # The Databricks-only routes the client used, checked directly.
    q = {"name": model, "version": "2"}
    r = server.api("GET", "/api/2.0/mlflow/model-versions/list-artifacts", params={**q, "path": ""})
    files = {f["path"]: f for f in r.json()["files"]}
    assert {"MLmodel", "model.pkl", "requirements.txt"} <= set(files) and files["MLmodel"]["is_dir"] is False
    r = server.api("GET", "/api/2.0/mlflow/model-versions/get-signed-download-uri", params={**q, "path": "MLmodel"})
    signed = r.json()["signed_uri"]
    body = requests.get(signed, timeout=30)  # no token: the signature is the credential
    assert body.status_code == 200 and b"flavors:" in body.content
    assert requests.get(signed.replace("signature=", "signature=x"), timeout=30).status_code == 403
    r = server.api("GET", "/api/2.0/mlflow/model-versions/get-signed-download-uri", params={**q, "path": "nope"})
    assert r.status_code == 404
    r = server.api("GET", "/api/2.0/mlflow/model-versions/list-artifacts", params={"name": model, "version": "9"})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    r = server.api("GET", "/api/2.0/mlflow/brickyard/model-versions/history", params={"name": model, "version": "1"})
    assert [(e["from_stage"], e["to_stage"], e["user_name"]) for e in r.json()["events"]] == [
        ("None", "Production", "admin"), ("Production", "Archived", "admin")]


def test_runs_logged_over_http_are_readable_in_databricks_mode(server, unique, tmp_path):
    """One experiment serves both modes: a run and model logged by mode 1 load in mode 2."""
    model = unique("cross")
    http_env = {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_TOKEN": server.token}
    first = run_mlflow(f"""
        import json, warnings
        warnings.filterwarnings("ignore")
        import mlflow
        from sklearn.dummy import DummyClassifier
        mlflow.set_experiment("/Users/admin/{model}")
        with mlflow.start_run() as run:
            mlflow.log_text("written over http", "notes/readme.txt")
            m = DummyClassifier(strategy="constant", constant=7).fit([[0], [1]], [7, 7])
            mlflow.sklearn.log_model(m, name="model")
        mv = mlflow.register_model(f"runs:/{{run.info.run_id}}/model", "{model}")
        mlflow.MlflowClient().transition_model_version_stage("{model}", mv.version, "Production")
        print(json.dumps({{"run_id": run.info.run_id}}))
    """, http_env, tmp_path)
    second = run_mlflow(f"""
        import json, warnings
        warnings.filterwarnings("ignore")
        import mlflow
        text = mlflow.artifacts.load_text(f"runs:/{first['run_id']}/notes/readme.txt")
        pred = mlflow.pyfunc.load_model("models:/{model}/production").predict([[5]]).tolist()
        print(json.dumps({{"text": text, "pred": pred}}))
    """, databricks_env(server), tmp_path)
    assert second == {"text": "written over http", "pred": [7]}


def test_unity_catalog_registry_is_refused_clearly(server, tmp_path):
    out = run_mlflow("""
        import json
        import mlflow
        mlflow.set_registry_uri("databricks-uc")
        try:
            mlflow.MlflowClient().create_registered_model("main.default.wine")
            print(json.dumps({"error": None}))
        except Exception as exc:
            print(json.dumps({"error": str(exc)}))
    """, databricks_env(server), tmp_path)
    assert out["error"] and "workspace model registry" in out["error"]
    assert "set_registry_uri('databricks')" in out["error"]
    r = server.api("POST", "/api/2.0/mlflow/unity-catalog/registered-models/create", json={"name": "a.b.c"})
    assert r.status_code == 400 and r.json()["error_code"] == "FEATURE_DISABLED"
    r = server.api("GET", "/api/2.0/mlflow/unity-catalog/registered-models:is-databricks-sdk-models-artifact-repository-enabled")
    assert r.status_code == 400
    r = server.api("POST", "/api/2.0/mlflow/unity-catalog/registered-models/create", token="dapinope", json={})
    assert r.status_code == 401
