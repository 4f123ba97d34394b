"""Model serving: endpoints over registered versions, queried through databricks-sdk and requests.

The workspace runs in this module with a short scale-to-zero idle time and one worker process
per served version (the machine is small); models are logged and registered by the real MLflow
client (tracking URI http://... + token) in a subprocess.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta

import pytest
import requests
import yaml
from databricks.sdk.errors import NotFound, OperationFailed, PermissionDenied, ResourceAlreadyExists
from databricks.sdk.service.serving import (
    DataframeSplitInput,
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    Route,
    ServedEntityInput,
    TrafficConfig,
)

from conftest import free_port, server_with_env

pytestmark = pytest.mark.slow

COLUMNS = ["alcohol", "sulphates"]
ROWS = [[9.0, 0.4], [13.5, 0.9], [12.8, 0.8], [9.4, 0.5]]
SERVING_ENV = {"BRICKYARD_SERVING_IDLE_SECONDS": "4", "BRICKYARD_SERVING_MAX_PROCESSES": "1",
               "BRICKYARD_SERVING_START_TIMEOUT": "120", "BRICKYARD_SERVING_RETRY_AFTER_SECONDS": "1"}
WAIT = timedelta(minutes=4)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with server_with_env(tmp_path_factory.mktemp("serving") / "brickyard", SERVING_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def ws_client(srv):
    return srv.client()


def run_mlflow(code: str, srv, tmp_path) -> dict:
    """Run `code` with the real MLflow client against the workspace; its last output line is JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_", "BRICKYARD_"))}
    env.update(MLFLOW_TRACKING_URI=srv.url, MLFLOW_TRACKING_TOKEN=srv.token, MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="true", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model(srv, tmp_path_factory):
    """Registered model `wine`: v1 and v2 are logistic regressions, v3 fails to load."""
    out = run_mlflow(f"""
        import json, warnings
        warnings.filterwarnings("ignore")
        import numpy as np, pandas as pd
        import mlflow
        from sklearn.linear_model import LogisticRegression
        cols = {COLUMNS!r}
        X = pd.DataFrame([[9.0, 0.4], [13.5, 0.9], [12.8, 0.8], [9.4, 0.5], [11.0, 0.6], [10.0, 0.7]], columns=cols)
        y = np.array([0, 1, 1, 0, 1, 0])
        mlflow.set_experiment("/Users/admin/serving-tests")
        preds = []
        for C in (1.0, 0.001):
            with mlflow.start_run():
                m = LogisticRegression(C=C).fit(X, y)
                mlflow.sklearn.log_model(m, name="model", input_example=X.head(2), registered_model_name="wine")
            preds.append(m.predict(pd.DataFrame({ROWS!r}, columns=cols)).tolist())

        class Broken(mlflow.pyfunc.PythonModel):
            def load_context(self, context):
                raise RuntimeError("broken on purpose")
            def predict(self, context, model_input):
                return model_input

        with mlflow.start_run():
            mlflow.pyfunc.log_model(name="model", python_model=Broken(), registered_model_name="wine")
        print(json.dumps({{"preds": preds}}))
    """, srv, tmp_path_factory.mktemp("mlflow"))
    return out["preds"]


def entity(version: int, **kw) -> ServedEntityInput:
    return ServedEntityInput(entity_name="wine", entity_version=str(version), workload_size="Small",
                             scale_to_zero_enabled=kw.pop("scale_to_zero", False), **kw)


def invoke(srv, name: str, payload, token: str | None = None, **kw) -> requests.Response:
    headers = {} if token == "" else {"Authorization": f"Bearer {token or srv.token}"}
    kw.setdefault("timeout", 120)
    return requests.post(f"{srv.url}/serving-endpoints/{name}/invocations", json=payload, headers=headers, **kw)


@pytest.fixture(scope="module")
def endpoint(ws_client, model) -> str:
    name = "wine-ep"
    ws_client.serving_endpoints.create(
        name=name, config=EndpointCoreConfigInput(name=name, served_entities=[entity(1)])).result(timeout=WAIT)
    return name


def test_deploy_and_query_every_format(ws_client, endpoint, model):
    w = ws_client
    ep = w.serving_endpoints.get(endpoint)
    assert ep.state.ready == EndpointStateReady.READY
    assert ep.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
    served = ep.config.served_entities[0]
    assert (served.name, served.entity_name, served.entity_version) == ("wine-1", "wine", "1")
    assert served.state.deployment.value == "DEPLOYMENT_READY"
    assert ep.config.traffic_config.routes[0].traffic_percentage == 100
    assert endpoint in [e.name for e in w.serving_endpoints.list()]

    expected = model[0]
    records = [dict(zip(COLUMNS, r)) for r in ROWS]
    r = w.serving_endpoints.query(endpoint, dataframe_split=DataframeSplitInput(columns=COLUMNS, data=ROWS))
    assert r.predictions == expected and r.served_model_name == "wine-1"
    assert w.serving_endpoints.query(endpoint, dataframe_records=records).predictions == expected
    assert w.serving_endpoints.query(endpoint, instances=records).predictions == expected
    inputs = {c: [row[i] for row in ROWS] for i, c in enumerate(COLUMNS)}
    assert w.serving_endpoints.query(endpoint, inputs=inputs).predictions == expected


def test_bad_requests(srv, endpoint):
    r = invoke(srv, endpoint, {"dataframe_split": {"columns": ["alcohol"], "data": [[9.0]]}})
    assert r.status_code == 400 and r.json()["error_code"] == "BAD_REQUEST"
    assert "'sulphates'" in r.json()["message"]
    r = invoke(srv, endpoint, {"dataframe_records": [{"alcohol": "strong", "sulphates": 0.4}]})
    assert r.status_code == 400 and "'alcohol'" in r.json()["message"]
    r = invoke(srv, endpoint, {"rows": [[1, 2]]})
    assert r.status_code == 400 and "dataframe_split" in r.json()["message"]
    r = requests.post(f"{srv.url}/serving-endpoints/{endpoint}/invocations", data=b"{not json",
                      headers=srv.headers(), timeout=30)
    assert r.status_code == 400
    # Authentication: the workspace's own tokens.
    assert invoke(srv, endpoint, {"instances": [[9.0, 0.4]]}, token="").status_code == 401
    assert invoke(srv, endpoint, {"instances": [[9.0, 0.4]]}, token="dapi-wrong").status_code == 401
    r = invoke(srv, "no-such-endpoint", {"instances": [[9.0, 0.4]]})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # 16 MB is the payload limit.
    big = {"dataframe_split": {"columns": COLUMNS, "data": [[9.0, 0.4]] * 1_400_000}}
    r = invoke(srv, endpoint, big)
    assert r.status_code == 413 and r.json()["error_code"] == "REQUEST_ENTITY_TOO_LARGE"
    # Still serving afterwards.
    assert invoke(srv, endpoint, {"instances": [{"alcohol": 9.0, "sulphates": 0.4}]}).status_code == 200


def test_api_errors_and_permissions(srv, ws_client, endpoint, model):
    w = ws_client
    with pytest.raises(ResourceAlreadyExists):
        w.serving_endpoints.create(name=endpoint, config=EndpointCoreConfigInput(name=endpoint,
                                                                               served_entities=[entity(1)]))
    with pytest.raises(NotFound):
        w.serving_endpoints.create(name="ghost", config=EndpointCoreConfigInput(
            name="ghost", served_entities=[entity(99)]))
    bad = [
        {"name": "bad name!", "config": {"served_entities": [{"entity_name": "wine", "entity_version": "1"}]}},
        {"name": "x1", "config": {"served_entities": [{"entity_name": "wine", "entity_version": "1",
                                                       "workload_size": "Huge"}]}},
        {"name": "x2", "config": {"served_entities": [{"entity_name": "wine", "entity_version": "1"}],
                                  "traffic_config": {"routes": [{"served_model_name": "wine-1",
                                                                 "traffic_percentage": 60}]}}},
        {"name": "x3", "config": {"served_entities": []}},
    ]
    for body in bad:
        r = srv.api("POST", "/api/2.0/serving-endpoints", json=body)
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", (body, r.text)
    assert srv.api("GET", "/api/2.0/serving-endpoints/ghost").status_code == 404
    assert srv.api("GET", "/api/2.0/serving-endpoints", token="nope").status_code == 401
    assert "x1" not in [e.name for e in w.serving_endpoints.list()]  # nothing half-written

    _, bob_token = srv.new_user("serving-bob@example.com")
    bob = srv.client(bob_token)
    assert bob.serving_endpoints.get(endpoint).permission_level.value == "CAN_QUERY"
    assert bob.serving_endpoints.query(endpoint, instances=[dict(zip(COLUMNS, ROWS[0]))]).predictions == model[0][:1]
    with pytest.raises(PermissionDenied):
        bob.serving_endpoints.update_config(endpoint, served_entities=[entity(2)])
    with pytest.raises(PermissionDenied):
        bob.serving_endpoints.delete(endpoint)
    with pytest.raises(NotFound):
        w.serving_endpoints.logs(endpoint, "no-such-served-model")


def test_logs_and_metrics(srv, ws_client, endpoint):
    w = ws_client
    for _ in range(3):
        w.serving_endpoints.query(endpoint, instances=[dict(zip(COLUMNS, ROWS[0]))])
    assert "loaded model wine-1" in w.serving_endpoints.logs(endpoint, "wine-1").logs
    assert "ready" in w.serving_endpoints.build_logs(endpoint, "wine-1").logs
    text = w.serving_endpoints.export_metrics(endpoint).contents.read().decode()
    labels = f'endpoint="{endpoint}",served_model="wine-1"'
    counts = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if not line.startswith("#")}
    assert counts[f"request_count_total{{{labels}}}"] >= 3
    assert counts[f"request_4xx_count_total{{{labels}}}"] >= 1  # from test_bad_requests
    assert counts[f'request_latency_ms_bucket{{{labels},le="+Inf"}}'] == counts[f"request_count_total{{{labels}}}"]
    assert "# TYPE request_latency_ms histogram" in text
    # Logs and metrics are the endpoint's creator's and admins' (like its changes), not every user's.
    _, carol_token = srv.new_user("serving-carol@example.com")
    carol = srv.client(carol_token)
    for call in (lambda: carol.serving_endpoints.logs(endpoint, "wine-1"),
                 lambda: carol.serving_endpoints.build_logs(endpoint, "wine-1"),
                 lambda: carol.serving_endpoints.export_metrics(endpoint)):
        with pytest.raises(PermissionDenied, match="cannot manage serving endpoint"):
            call()
    for path in ("/served-models/wine-1/logs", "/served-models/wine-1/build-logs", "/metrics"):
        r = srv.api("GET", f"/api/2.0/serving-endpoints/{endpoint}{path}", token=carol_token)
        assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED", (path, r.text)
        assert "loaded model" not in r.text and "request_count" not in r.text


K8S_TYPES = {"Deployment": "V1Deployment", "Service": "V1Service", "Secret": "V1Secret",
             "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler"}


class _Payload:
    """What kubernetes' ApiClient.deserialize reads: a response with JSON in .data."""

    def __init__(self, obj: dict):
        self.data = json.dumps(obj)


def test_export_build_context_and_manifests(srv, endpoint, model, tmp_path):
    from kubernetes.client import ApiClient

    out = tmp_path / "ctx"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "BRICKYARD_", "MLFLOW_"))}
    env.update(DATABRICKS_HOST=srv.url, DATABRICKS_TOKEN=srv.token, HOME=str(tmp_path))
    cli = [sys.executable, "-m", "brickyard.cli", "serving", "export", endpoint, "--out", str(out)]
    proc = subprocess.run(cli + ["--image", "myacr.azurecr.io/wine-ep:v1"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "az acr build" in proc.stdout and srv.token not in proc.stdout
    assert (out / "model" / "wine-1" / "MLmodel").exists()
    reqs = (out / "requirements.txt").read_text().splitlines()
    assert reqs[0].startswith("mlflow==") and any(r.startswith("scikit-learn==") for r in reqs)
    assert "COPY model/ model/" in (out / "Dockerfile").read_text()

    # The manifests are valid Kubernetes objects: nothing unknown or misspelt is dropped on the way in.
    api, objs = ApiClient(), {}
    for path in sorted((out / "k8s").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        obj = api.deserialize(_Payload(doc), K8S_TYPES[doc["kind"]])
        assert api.sanitize_for_serialization(obj) == doc, path.name
        objs[doc["kind"]] = obj
    assert set(objs) == set(K8S_TYPES)
    container = objs["Deployment"].spec.template.spec.containers[0]
    assert container.image == "myacr.azurecr.io/wine-ep:v1"
    assert container.readiness_probe.http_get.path == "/ready" and container.liveness_probe.http_get.path == "/health"
    assert container.env[0].value_from.secret_key_ref.name == objs["Secret"].metadata.name
    assert objs["Service"].spec.selector == objs["Deployment"].spec.selector.match_labels
    assert objs["HorizontalPodAutoscaler"].spec.scale_target_ref.name == objs["Deployment"].metadata.name
    assert (out / "k8s" / "secret.yaml").stat().st_mode & 0o077 == 0
    key = base64.b64decode(objs["Secret"].data["key"]).decode()

    # The image's command, run here: the exported server answers with the key only.
    cmd = json.loads((out / "Dockerfile").read_text().split("CMD ", 1)[1])
    port = free_port()
    cmd = [sys.executable] + cmd[1:]
    cmd[cmd.index("--host") + 1], cmd[cmd.index("--port") + 1] = "127.0.0.1", str(port)
    server = subprocess.Popen(cmd, cwd=out, env={**env, "SERVING_KEY": key}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            assert server.poll() is None and time.time() < deadline
            try:
                if requests.get(url + "/ready", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        payload = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
        r = requests.post(url + "/invocations", json=payload, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200 and r.json()["predictions"] == model[0]
        assert r.headers["served-model-name"] == "wine-1"
        assert requests.post(url + "/invocations", json=payload, timeout=30).status_code == 401
        r = requests.post(url + "/invocations", json=payload, headers={"Authorization": f"Bearer {srv.token}"})
        assert r.status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)

    # A second export into the same folder is refused, nothing overwritten.
    proc = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "not empty" in proc.stderr


def test_worker_killed_is_restarted_and_503_meanwhile(srv, endpoint):
    svc = srv.workspace.services["serving"]
    before = svc.worker_pids(endpoint, "wine-1")
    assert len(before) == 1
    os.kill(before[0], signal.SIGKILL)
    statuses, retry_after = [], None
    deadline = time.time() + 90
    while time.time() < deadline:
        r = invoke(srv, endpoint, {"instances": [dict(zip(COLUMNS, ROWS[0]))]}, timeout=10)
        statuses.append(r.status_code)
        if r.status_code == 503:
            retry_after = r.headers.get("Retry-After")
        if r.status_code == 200 and 503 in statuses:
            break
        time.sleep(0.05)
    assert 503 in statuses and retry_after == "1", statuses[:20]
    assert statuses[-1] == 200 and set(statuses) <= {200, 503}
    after = svc.worker_pids(endpoint, "wine-1")
    assert after and after[0] != before[0]


def test_rollout_under_load_then_failed_update_keeps_serving(srv, ws_client, model):
    w, name = ws_client, "wine-rollout"
    w.serving_endpoints.create(name=name, config=EndpointCoreConfigInput(
        name=name, served_entities=[entity(1)])).result(timeout=WAIT)
    seen, failures, stop = [], [], threading.Event()

    def load() -> None:
        session = requests.Session()
        while not stop.is_set():
            r = session.post(f"{srv.url}/serving-endpoints/{name}/invocations", headers=srv.headers(),
                             json={"dataframe_split": {"columns": COLUMNS, "data": ROWS}}, timeout=60)
            if r.status_code != 200:
                failures.append((r.status_code, r.text[:200]))
            else:
                seen.append(r.headers["served-model-name"])

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        waiter = w.serving_endpoints.update_config(name, served_entities=[entity(2)])
        r = srv.api("PUT", f"/api/2.0/serving-endpoints/{name}/config",
                    json={"served_entities": [{"entity_name": "wine", "entity_version": "1"}]})
        assert r.status_code == 409 and r.json()["error_code"] == "RESOURCE_CONFLICT"
        ep = waiter.result(timeout=WAIT)
        assert [e.name for e in ep.config.served_entities] == ["wine-2"] and ep.config.config_version == 2
        n = len(seen)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert seen[0] == "wine-1" and "wine-2" in seen and set(seen[n:]) == {"wine-2"}
    assert w.serving_endpoints.query(name, dataframe_split=DataframeSplitInput(
        columns=COLUMNS, data=ROWS)).predictions == model[1]

    # A version whose model cannot load: the update fails, wine-2 keeps serving.
    with pytest.raises(OperationFailed):
        w.serving_endpoints.update_config(name, served_entities=[entity(3)]).result(timeout=WAIT)
    ep = w.serving_endpoints.get(name)
    assert ep.state.config_update == EndpointStateConfigUpdate.UPDATE_FAILED
    assert ep.state.ready == EndpointStateReady.READY
    failed = ep.pending_config.served_entities[0]
    assert failed.name == "wine-3" and failed.state.deployment.value == "DEPLOYMENT_FAILED"
    assert "broken on purpose" in failed.state.deployment_state_message
    assert [e.name for e in ep.config.served_entities] == ["wine-2"]
    r = w.serving_endpoints.query(name, dataframe_split=DataframeSplitInput(columns=COLUMNS, data=ROWS))
    assert r.served_model_name == "wine-2"
    assert "broken on purpose" in w.serving_endpoints.logs(name, "wine-3").logs
    w.serving_endpoints.delete(name)
    with pytest.raises(NotFound):
        w.serving_endpoints.get(name)
    assert invoke(srv, name, {"instances": [[9.0, 0.4]]}).status_code == 404


def test_scale_to_zero_and_cold_start(srv, ws_client, model):
    w, name = ws_client, "wine-idle"
    svc = srv.workspace.services["serving"]
    w.serving_endpoints.create(name=name, config=EndpointCoreConfigInput(
        name=name, served_entities=[entity(1, scale_to_zero=True)])).result(timeout=WAIT)
    warm = set(svc.worker_pids(name, "wine-1"))
    assert warm
    deadline = time.time() + 60
    while svc.worker_pids(name, "wine-1") and time.time() < deadline:
        time.sleep(0.5)
    assert svc.worker_pids(name, "wine-1") == []
    state = w.serving_endpoints.get(name).config.served_entities[0].state
    assert "Scaled to zero" in state.deployment_state_message
    r = invoke(srv, name, {"dataframe_split": {"columns": COLUMNS, "data": ROWS}})
    assert r.status_code == 200 and r.json()["predictions"] == model[0]
    cold = set(svc.worker_pids(name, "wine-1"))  # a new worker started for the request: the cold start
    assert cold and not cold & warm
    w.serving_endpoints.delete(name)


def test_traffic_split(srv, ws_client, model):
    w, name = ws_client, "wine-split"
    w.serving_endpoints.create(name=name, config=EndpointCoreConfigInput(
        name=name, served_entities=[entity(1), entity(2)],
        traffic_config=TrafficConfig(routes=[Route(served_model_name="wine-1", traffic_percentage=50),
                                             Route(served_model_name="wine-2", traffic_percentage=50)]),
    )).result(timeout=WAIT)
    counts: dict[str, int] = {}
    session = requests.Session()
    for _ in range(1000):
        r = session.post(f"{srv.url}/serving-endpoints/{name}/invocations", headers=srv.headers(),
                         json={"instances": [dict(zip(COLUMNS, ROWS[0]))]}, timeout=60)
        assert r.status_code == 200
        counts[r.headers["served-model-name"]] = counts.get(r.headers["served-model-name"], 0) + 1
    assert set(counts) == {"wine-1", "wine-2"}
    assert 450 <= counts["wine-1"] <= 550, counts
    # Traffic only: the running versions are kept, no worker restarts.
    pids = srv.workspace.services["serving"].worker_pids(name, "wine-1")
    w.serving_endpoints.update_config(name, served_entities=[entity(1), entity(2)], traffic_config=TrafficConfig(
        routes=[Route(served_model_name="wine-1", traffic_percentage=0),
                Route(served_model_name="wine-2", traffic_percentage=100)])).result(timeout=WAIT)
    assert srv.workspace.services["serving"].worker_pids(name, "wine-1") == pids
    names = {session.post(f"{srv.url}/serving-endpoints/{name}/invocations", headers=srv.headers(),
                          json={"instances": [dict(zip(COLUMNS, ROWS[0]))]}).headers["served-model-name"]
             for _ in range(20)}
    assert names == {"wine-2"}
    w.serving_endpoints.delete(name)


def _worker_pids(parent: int) -> set[int]:
    """Scoring workers started by process `parent` (read from /proc: the server is another process)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if ppid == parent and b"brickyard.serving.worker" in cmdline:
            out.add(int(entry))
    return out


def test_ready_endpoint_is_served_again_after_restart(tmp_path):
    """`brickyard up` stopped and started again: the endpoint that was READY answers again, from new workers."""
    from types import SimpleNamespace

    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    from conftest import ADMIN_TOKEN, run_cli_server

    home, port = tmp_path / "home", free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"BRICKYARD_BOOTSTRAP_TOKEN": ADMIN_TOKEN, "BRICKYARD_LOG_LEVEL": "warning", **SERVING_ENV}
    payload = {"dataframe_split": {"columns": COLUMNS, "data": ROWS}}
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def client() -> WorkspaceClient:
        return WorkspaceClient(config=Config(host=url, token=ADMIN_TOKEN, retry_timeout_seconds=20, auth_type="pat"))

    def stop(proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out[-3000:]

    proc = run_cli_server(home, port, env)
    try:
        expected = run_mlflow(f"""
            import json, warnings
            warnings.filterwarnings("ignore")
            import numpy as np, pandas as pd, mlflow
            from sklearn.linear_model import LogisticRegression
            X = pd.DataFrame([[9.0, 0.4], [13.5, 0.9], [12.8, 0.8], [9.4, 0.5]], columns={COLUMNS!r})
            mlflow.set_experiment("/Users/admin/serving-restart")
            with mlflow.start_run():
                m = LogisticRegression().fit(X, np.array([0, 1, 1, 0]))
                mlflow.sklearn.log_model(m, name="model", input_example=X.head(2), registered_model_name="kept")
            print(json.dumps(m.predict(pd.DataFrame({ROWS!r}, columns={COLUMNS!r})).tolist()))
        """, SimpleNamespace(url=url, token=ADMIN_TOKEN), tmp_path)
        client().serving_endpoints.create(name="kept", config=EndpointCoreConfigInput(
            name="kept", served_entities=[ServedEntityInput(entity_name="kept", entity_version="1",
                                                            workload_size="Small")])).result(timeout=WAIT)
        r = requests.post(f"{url}/serving-endpoints/kept/invocations", json=payload, headers=headers, timeout=60)
        assert r.status_code == 200 and r.json()["predictions"] == expected
        before = _worker_pids(proc.pid)
        assert len(before) == 1
    finally:
        stop(proc)
    # The workers stopped with the workspace.
    deadline = time.time() + 30
    while any(os.path.exists(f"/proc/{pid}") for pid in before) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in before)

    proc = run_cli_server(home, port, env)
    try:
        # Until the worker answers, invocations get 503 with Retry-After (never a hang), then 200.
        statuses = []
        deadline = time.time() + WAIT.total_seconds()
        while time.time() < deadline:
            r = requests.post(f"{url}/serving-endpoints/kept/invocations", json=payload, headers=headers, timeout=60)
            statuses.append(r.status_code)
            if r.status_code != 200:
                assert r.status_code == 503 and r.headers["Retry-After"] == "1", (r.status_code, r.text)
                time.sleep(0.2)
                continue
            assert r.json()["predictions"] == expected and r.headers["served-model-name"] == "kept-1"
            break
        assert statuses[-1] == 200, statuses[-10:]
        ep = client().serving_endpoints.get("kept")
        assert ep.state.ready == EndpointStateReady.READY
        assert ep.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
        assert ep.config.served_entities[0].state.deployment.value == "DEPLOYMENT_READY"
        after = _worker_pids(proc.pid)
        assert len(after) == 1 and not after & before
        assert client().serving_endpoints.query("kept", dataframe_split=DataframeSplitInput(
            columns=COLUMNS, data=ROWS)).predictions == expected
    finally:
        stop(proc)
