"""MLflow client mode 1 (MLFLOW_TRACKING_URI=http://host:port + MLFLOW_TRACKING_TOKEN) against the workspace.

The real mlflow client runs in subprocesses (MLflow caches clients and tracking URIs per process).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest


def run_mlflow(code: str, env: dict, tmp_path, timeout: int = 600) -> dict:
    """Run `code` in a fresh Python with only our MLflow/Databricks variables; its last line is JSON."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_"))}
    full.update(env, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    return json.loads(proc.stdout.strip().splitlines()[-1])


def http_env(server, token: str | None = None) -> dict:
    return {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_TOKEN": token or server.token}


@pytest.fixture(scope="module")
def alice(server):
    """A non-admin user: runs and registry changes must carry her name, not the OS user's."""
    _, token = server.new_user("mlflow-alice@example.com")
    return "mlflow-alice@example.com", token


def test_tracking_params_metrics_tags_and_artifacts(server, alice, unique, tmp_path):
    user, token = alice
    name = f"/Users/{user}/{unique('exp')}"
    out = run_mlflow(f"""
        import json, os, time
        import mlflow
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param, RunTag
        c = MlflowClient()
        exp_id = mlflow.create_experiment({name!r})
        run = c.create_run(exp_id, tags={{"mlflow.user": "mallory", "team": "wine"}})
        rid = run.info.run_id
        now = int(time.time() * 1000)
        c.log_batch(rid, metrics=[Metric("rmse", 1.0 / (i + 1), now + i, i) for i in range(5)],
                    params=[Param("alpha", "0.5")], tags=[RunTag("stage", "dev")])
        c.log_param(rid, "beta", 2)
        c.log_metric(rid, "auc", 0.88)
        c.set_tag(rid, "note", "hello")
        os.makedirs("art/sub")
        open("art/a.txt", "w").write("alpha")
        open("art/sub/b.bin", "wb").write(bytes(range(256)) * 40)
        c.log_artifact(rid, "art/a.txt")
        c.log_artifacts(rid, "art", "folder")
        top = sorted((f.path, f.is_dir) for f in c.list_artifacts(rid))
        sub = sorted(f.path for f in c.list_artifacts(rid, "folder/sub"))
        got = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="folder", dst_path="dl")
        same = open(os.path.join(got, "sub", "b.bin"), "rb").read() == bytes(range(256)) * 40
        c.set_terminated(rid)
        r = c.get_run(rid)
        print(json.dumps({{
            "exp_id": exp_id, "run_id": rid, "user_id": r.info.user_id, "status": r.info.status,
            "artifact_uri": r.info.artifact_uri,
            "location": c.get_experiment(exp_id).artifact_location,
            "tags": r.data.tags, "params": r.data.params, "metrics": r.data.metrics,
            "history": [(m.step, m.value) for m in c.get_metric_history(rid, "rmse")],
            "top": top, "sub": sub, "same": same}}))
    """, http_env(server, token), tmp_path)
    assert out["user_id"] == user and out["tags"]["mlflow.user"] == user  # not "mallory", not the OS user
    assert out["status"] == "FINISHED"
    assert out["params"] == {"alpha": "0.5", "beta": "2"}
    assert out["metrics"] == {"rmse": 0.2, "auc": 0.88}
    assert out["history"] == [[i, 1.0 / (i + 1)] for i in range(5)]
    assert out["tags"]["team"] == "wine" and out["tags"]["stage"] == "dev" and out["tags"]["note"] == "hello"
    assert out["top"] == [["a.txt", False], ["folder", True]]
    assert out["sub"] == ["folder/sub/b.bin"]
    assert out["same"] is True
    exp_id, run_id = out["exp_id"], out["run_id"]
    # Clients on an http tracking URI get MLflow's proxy form of the same DBFS folder ...
    assert out["location"] == f"mlflow-artifacts:/{exp_id}"
    assert out["artifact_uri"] == f"mlflow-artifacts:/{exp_id}/{run_id}/artifacts"
    # ... which is dbfs:/databricks/mlflow-tracking/<exp>/<run>/artifacts for Databricks clients and the DBFS API.
    r = server.api("GET", "/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                   headers={"User-Agent": "databricks-sdk-py/0.162.0"})
    assert r.json()["run"]["info"]["artifact_uri"] == f"dbfs:/databricks/mlflow-tracking/{exp_id}/{run_id}/artifacts"
    r = server.api("GET", "/api/2.0/dbfs/read",
                   params={"path": f"/databricks/mlflow-tracking/{exp_id}/{run_id}/artifacts/a.txt"})
    assert r.status_code == 200 and r.json()["data"] == "YWxwaGE="


def test_register_stages_aliases_load_and_history(server, alice, unique, tmp_path):
    user, alice_token = alice
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
        versions, preds = [], []
        for i, C in enumerate((0.01, 100.0)):
            with mlflow.start_run() as run:
                m = LogisticRegression(C=C).fit(X, y)
                info = mlflow.sklearn.log_model(m, name="model", input_example=X[:1])
            preds.append(m.predict_proba(X)[:, 1].tolist())
            mv = mlflow.register_model(f"runs:/{{run.info.run_id}}/model", "{model}")
            versions.append(mv.version)
        c.transition_model_version_stage("{model}", versions[0], "Staging")
        c.transition_model_version_stage("{model}", versions[0], "Production")
        c.transition_model_version_stage("{model}", versions[1], "Production", archive_existing_versions=True)
        c.set_registered_model_alias("{model}", "champion", versions[0])
        c.set_registered_model_tag("{model}", "task", "wine")
        c.set_model_version_tag("{model}", versions[1], "validated", "yes")
        stages = {{v.version: v.current_stage for v in c.search_model_versions("name = '{model}'")}}
        by_stage = mlflow.pyfunc.load_model("models:/{model}/production")
        by_alias = mlflow.pyfunc.load_model("models:/{model}@champion")
        sk = mlflow.sklearn.load_model("models:/{model}@champion")
        found = [m.name for m in c.search_registered_models("name = '{model}'")]
        print(json.dumps({{"versions": versions, "stages": stages, "preds": preds,
                          "source": c.get_model_version("{model}", versions[1]).source,
                          "by_stage": by_stage.predict(X).tolist(),
                          "by_alias": by_alias.predict(X).tolist(),
                          "alias_proba": sk.predict_proba(X)[:, 1].tolist(),
                          "tags": c.get_registered_model("{model}").tags,
                          "mv_tags": c.get_model_version("{model}", versions[1]).tags, "found": found}}))
    """, http_env(server), tmp_path)
    v1, v2 = out["versions"]
    assert (v1, v2) == ("1", "2")
    assert out["stages"] == {"1": "Archived", "2": "Production"}
    assert out["source"].startswith("models:/m-")
    assert out["alias_proba"] == pytest.approx(out["preds"][0])  # champion = version 1
    assert out["by_stage"] == [0, 1, 1, 0, 1]
    assert out["tags"] == {"task": "wine"} and out["mv_tags"] == {"validated": "yes"}
    assert out["found"] == [model]

    # Alice moves the alias (plain REST, her own token); the history names each actor.
    r = server.api("POST", "/api/2.0/mlflow/registered-models/alias", token=alice_token,
                   json={"name": model, "alias": "champion", "version": "2"})
    assert r.status_code == 200, r.text
    r = server.api("DELETE", "/api/2.0/mlflow/registered-models/alias", token=alice_token,
                   json={"name": model, "alias": "champion"})
    assert r.status_code == 200, r.text

    r = server.api("GET", "/api/2.0/mlflow/brickyard/registered-models/history", params={"name": model})
    assert r.status_code == 200, r.text
    events = [(e["kind"], e.get("version"), e.get("alias"), e.get("from_stage", e.get("from_version")),
               e.get("to_stage", e.get("to_version")), e["user_name"]) for e in r.json()["events"]]
    assert events == [
        ("STAGE", "1", None, "None", "Staging", "admin"),
        ("STAGE", "1", None, "Staging", "Production", "admin"),
        ("STAGE", "1", None, "Production", "Archived", "admin"),  # archive_existing_versions
        ("STAGE", "2", None, "None", "Production", "admin"),
        ("ALIAS", None, "champion", None, "1", "admin"),
        ("ALIAS", None, "champion", "1", "2", user),
        ("ALIAS", None, "champion", "2", None, user),
    ]
    stamps = [e["timestamp"] for e in r.json()["events"]]
    assert stamps == sorted(stamps) and all(isinstance(t, int) and t > 1.6e12 for t in stamps)

    r = server.api("GET", "/api/2.0/mlflow/brickyard/model-versions/history", params={"name": model, "version": "2"})
    assert [(e["kind"], e.get("to_stage", e.get("to_version"))) for e in r.json()["events"]] == [
        ("STAGE", "Production"), ("ALIAS", "2"), ("ALIAS", None)]


def test_registry_and_history_errors(server, unique):
    model = unique("m")
    r = server.api("GET", "/api/2.0/mlflow/brickyard/model-versions/history", params={"name": model, "version": "1"})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    r = server.api("GET", "/api/2.0/mlflow/brickyard/registered-models/history")
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = server.api("GET", "/api/2.0/mlflow/brickyard/registered-models/history", params={"name": model}, token="dapibad")
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    assert server.api("POST", "/api/2.0/mlflow/registered-models/create", json={"name": model}).status_code == 200
    r = server.api("GET", "/api/2.0/mlflow/brickyard/registered-models/history", params={"name": model})
    assert r.status_code == 200 and r.json() == {"events": []}
    r = server.api("POST", "/api/2.0/mlflow/registered-models/create", json={"name": model})
    assert r.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    r = server.api("POST", "/api/2.0/mlflow/model-versions/transition-stage",
                   json={"name": model, "version": "7", "stage": "Production", "archive_existing_versions": False})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    r = server.api("GET", "/api/2.0/mlflow/runs/get", params={"run_id": "deadbeef"})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # An unknown MLflow endpoint answers in Databricks' JSON error form, not with an HTML page.
    r = server.api("GET", "/api/2.0/mlflow/no-such-thing")
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_ui_served_under_ml(server):
    r = server.api("GET", "/ml/")
    assert r.status_code == 200 and "<title>MLflow</title>" in r.text
    r = server.api("GET", "/ml", allow_redirects=False)
    assert r.status_code in (307, 308) and r.headers["location"].endswith("/ml/")
    r = server.api("GET", "/ml/ajax-api/2.0/mlflow/experiments/search", params={"max_results": 5})
    assert r.status_code == 200 and "experiments" in r.json()



def test_two_workspaces_in_one_process_keep_their_own_mlflow(server, unique, tmp_path):
    """MLflow's server keeps its stores in module globals; each request must still reach its own workspace."""
    import requests
    from conftest import ADMIN_TOKEN, ThreadedServer, make_settings

    other = ThreadedServer(make_settings(tmp_path / "other"))
    other.start()
    try:
        url = f"http://127.0.0.1:{other.settings.port}"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        name = unique("only-there")
        r = requests.post(url + "/api/2.0/mlflow/experiments/create", json={"name": name}, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        exp_id = r.json()["experiment_id"]
        r = requests.put(f"{url}/api/2.0/mlflow-artifacts/artifacts/{exp_id}/x/artifacts/f.txt", data=b"there",
                         headers=headers, timeout=60)
        assert r.status_code == 200
        r = requests.get(url + "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name},
                         headers=headers, timeout=60)
        assert r.status_code == 200
        r = server.api("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
        assert r.status_code == 404
        assert (other.settings.dbfs_root / f"databricks/mlflow-tracking/{exp_id}/x/artifacts/f.txt").read_bytes() == b"there"
        assert not (server.settings.dbfs_root / f"databricks/mlflow-tracking/{exp_id}/x").exists()
    finally:
        other.stop()
