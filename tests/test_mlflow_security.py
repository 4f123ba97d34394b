"""MLflow behind the workspace: authentication on every route family, artifact path traversal
(MLflow's own CVE history is the list), model version sources, refused features."""
from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest

NO_TOKEN_ROUTES = [
    ("GET", "/api/2.0/mlflow/experiments/search?max_results=1"),
    ("POST", "/api/2.0/mlflow/runs/create"),
    ("GET", "/api/3.0/mlflow/server-info"),
    ("GET", "/api/2.0/mlflow/registered-models/search"),
    ("POST", "/api/2.0/mlflow/model-versions/transition-stage"),
    ("GET", "/ajax-api/2.0/mlflow/experiments/search"),
    ("POST", "/ajax-api/3.0/mlflow/traces/search"),
    ("GET", "/ajax-api/2.0/mlflow-artifacts/artifacts?path=0"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=0"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/0/x.txt"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/x.txt"),
    ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/0/x.txt"),
    ("GET", "/ml/"),
    ("GET", "/ml/static-files/static/js/main.js"),
    ("POST", "/ml/graphql"),
    ("GET", "/ml/get-artifact?path=x&run_id=y"),
    ("GET", "/ml/ajax-api/2.0/mlflow/experiments/search"),
    ("GET", "/api/2.0/mlflow/model-versions/list-artifacts?name=a&version=1"),
    ("GET", "/api/2.0/mlflow/model-versions/get-signed-download-uri?name=a&version=1&path=MLmodel"),
    ("GET", "/api/2.0/mlflow/brickyard/model-versions/history?name=a&version=1"),
    ("POST", "/api/2.0/mlflow/unity-catalog/registered-models/create"),
    ("POST", "/api/2.0/mlflow/webhooks"),
]


def raw(server, method: str, path: str, token: str | None = "", body: bytes | None = None) -> tuple[int, dict | str]:
    """Send `path` byte for byte (requests would normalise `..` away)."""
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {} if token is None else {"Authorization": f"Bearer {token or server.token}"}
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, data.decode("latin-1")


@pytest.mark.parametrize(("method", "path"), NO_TOKEN_ROUTES)
def test_every_mlflow_route_needs_a_token(server, method, path):
    status, body = raw(server, method, path, token=None, body=b"{}" if method in ("POST", "PUT") else None)
    assert status == 401 and body["error_code"] == "UNAUTHENTICATED", (status, body)
    status, body = raw(server, method, path, token="dapi" + "0" * 32, body=b"{}" if method in ("POST", "PUT") else None)
    assert status == 401 and body["error_code"] == "UNAUTHENTICATED", (status, body)


@pytest.fixture(scope="module")
def run_ids(server):
    """An experiment and a run (created over REST) to aim traversal attempts at."""
    r = server.api("POST", "/api/2.0/mlflow/experiments/create", json={"name": "security-probe"})
    exp_id = r.json()["experiment_id"] if r.status_code == 200 else server.api(
        "GET", "/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "security-probe"}).json()["experiment"]["experiment_id"]
    run = server.api("POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": exp_id}).json()["run"]["info"]
    return exp_id, run["run_id"]


TRAVERSALS = [
    "../../../../etc/passwd",
    "{exp}/{run}/artifacts/../../../../../../etc/passwd",
    "{exp}/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "{exp}/%2E%2E%2F%2E%2E%2Fsecret.txt",
    "{exp}/%252e%252e/%252e%252e/secret.txt",
    "{exp}/%25252e%25252e/secret.txt",
    "{exp}/..%2f..%2fsecret.txt",
    "{exp}/{run}/artifacts/a.txt;jsessionid=1",
    "{exp}/{run}/artifacts/..;/..;/secret.txt",
    "{exp}/{run}/artifacts/a%3Bb.txt",
    "{exp}/{run}/artifacts/a%23b.txt",
    "{exp}/{run}/artifacts/..%5c..%5csecret.txt",
    "{exp}/{run}/artifacts/a%00.txt",
]


@pytest.mark.parametrize("template", TRAVERSALS)
def test_artifact_proxy_refuses_traversal(server, run_ids, template):
    exp, run = run_ids
    rel = template.format(exp=exp, run=run)
    before = sorted(p for p in server.settings.home.rglob("*") if p.is_file() and "secret" in p.name)
    for method, body in (("PUT", b"owned"), ("GET", None), ("DELETE", None)):
        status, answer = raw(server, method, f"/api/2.0/mlflow-artifacts/artifacts/{rel}", body=body)
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", (method, status, answer)
    status, answer = raw(server, "GET", f"/ajax-api/2.0/mlflow-artifacts/artifacts/{rel}")
    assert status == 400, answer
    after = sorted(p for p in server.settings.home.rglob("*") if p.is_file() and "secret" in p.name)
    assert before == after == []
    assert not (server.settings.home / "etc").exists()


@pytest.mark.parametrize("value", ["../..", "%2e%2e/%2e%2e", "%252e%252e", "a/../../b", "a;b", "a%23b", "/etc"])
def test_path_parameters_refuse_traversal(server, run_ids, value):
    exp, run = run_ids
    from urllib.parse import quote

    q = quote(value, safe="")
    for path in (f"/api/2.0/mlflow-artifacts/artifacts?path={q}",
                 f"/api/2.0/mlflow/artifacts/list?run_id={run}&path={q}",
                 f"/ajax-api/2.0/mlflow/artifacts/list?run_id={run}&path={q}",
                 f"/ml/get-artifact?run_id={run}&path={q}",
                 f"/api/2.0/mlflow/model-versions/list-artifacts?name=x&version=1&path={q}",
                 f"/api/2.0/mlflow/model-versions/get-signed-download-uri?name=x&version=1&path={q}",
                 f"/ajax-api/2.0/mlflow/logged-models/m-1/artifacts/files?artifact_file_path={q}"):
        status, answer = raw(server, "GET", path)
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", (path, status, answer)


def test_proxy_still_serves_ordinary_names(server, run_ids):
    exp, run = run_ids
    rel = f"{exp}/{run}/artifacts/dir/na%20me..txt"
    status, _ = raw(server, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{rel}", body=b"ok")
    assert status == 200
    status, answer = raw(server, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{rel}")
    assert status == 200 and answer == "ok"
    r = server.api("GET", "/api/2.0/mlflow/artifacts/list", params={"run_id": run, "path": "dir"})
    assert [f["path"] for f in r.json()["files"]] == ["dir/na me..txt"]


BAD_SOURCES = [
    "file:///etc",
    "/etc/passwd",
    "s3://bucket/model",
    "dbfs:/FileStore/model",
    "dbfs:/databricks/mlflow-tracking/../../FileStore/model",
    "dbfs:/databricks/mlflow-tracking/%2e%2e/%2e%2e/FileStore",
    "dbfs://profile@databricks/databricks/mlflow-tracking/1",
    "mlflow-artifacts:/../../etc",
    "mlflow-artifacts:/1/x;a=b",
    "http://127.0.0.1:1/plain/path",
    "runs:/abc/../../../etc",
]


@pytest.mark.parametrize("source", BAD_SOURCES)
def test_model_version_source_must_stay_in_the_store(server, unique, source):
    name = unique("src")
    assert server.api("POST", "/api/2.0/mlflow/registered-models/create", json={"name": name}).status_code == 200
    r = server.api("POST", "/api/2.0/mlflow/model-versions/create", json={"name": name, "source": source})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
    versions = server.api("GET", "/api/2.0/mlflow/registered-models/get", params={"name": name}).json()
    assert "latest_versions" not in versions["registered_model"]


def test_proxied_source_is_stored_in_dbfs_form(server, run_ids, unique):
    exp, run = run_ids
    name = unique("src")
    server.api("POST", "/api/2.0/mlflow/registered-models/create", json={"name": name})
    r = server.api("POST", "/api/2.0/mlflow/model-versions/create",
                   json={"name": name, "source": f"mlflow-artifacts:/{exp}/{run}/artifacts/model", "run_id": run})
    assert r.status_code == 200, r.text
    assert r.json()["model_version"]["source"] == f"mlflow-artifacts:/{exp}/{run}/artifacts/model"
    r = server.api("GET", "/api/2.0/mlflow/model-versions/get", params={"name": name, "version": "1"}, headers={
        "User-Agent": "databricks-sdk-py/0.162.0"})
    assert r.json()["model_version"]["source"] == f"dbfs:/databricks/mlflow-tracking/{exp}/{run}/artifacts/model"


def test_experiment_location_must_stay_in_the_store(server, unique):
    r = server.api("POST", "/api/2.0/mlflow/experiments/create",
                   json={"name": unique("e"), "artifact_location": "file:///tmp/elsewhere"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = server.api("POST", "/api/2.0/mlflow/experiments/create",
                   json={"name": unique("e"), "artifact_location": "mlflow-artifacts:/shared/team-a"})
    assert r.status_code == 200
    exp = server.api("GET", "/api/2.0/mlflow/experiments/get", params={"experiment_id": r.json()["experiment_id"]},
                     headers={"User-Agent": "databricks-sdk-py/0.162.0"}).json()["experiment"]
    assert exp["artifact_location"] == "dbfs:/databricks/mlflow-tracking/shared/team-a"


def test_run_user_cannot_be_spoofed(server, run_ids, unique):
    exp, _ = run_ids
    _, token = server.new_user(unique("carol") + "@example.com")
    me = server.api("GET", "/api/2.0/preview/scim/v2/Me", token=token).json()["userName"]
    r = server.api("POST", "/api/2.0/mlflow/runs/create", token=token, json={
        "experiment_id": exp, "user_id": "admin", "tags": [{"key": "mlflow.user", "value": "admin"}]})
    run = r.json()["run"]
    assert run["info"]["user_id"] == me
    assert {"key": "mlflow.user", "value": me} in run["data"]["tags"]
    assert {"key": "mlflow.user", "value": "admin"} not in run["data"]["tags"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/2.0/mlflow/webhooks"),
    ("POST", "/api/2.0/mlflow/webhooks/1/test"),
    ("POST", "/ajax-api/2.0/mlflow/gateway-proxy"),
    ("GET", "/ajax-api/3.0/mlflow/gateway/secrets/list"),
    ("POST", "/ajax-api/3.0/mlflow/genai/evaluate/invoke"),
    ("GET", "/ajax-api/3.0/mlflow/jobs/1"),
    ("POST", "/ajax-api/2.0/mlflow/runs/create-promptlab-run"),
    ("GET", "/ml/ajax-api/3.0/mlflow/workspaces"),
])
def test_features_that_reach_out_are_not_offered(server, method, path):
    status, body = raw(server, method, path, body=b"{}" if method == "POST" else None)
    assert status == 404 and body["error_code"] == "ENDPOINT_NOT_FOUND", (status, body)


def test_revoked_token_loses_mlflow_access(server, unique):
    from brickyard.tracking.service import AUTH_CACHE_SECONDS

    _, token = server.new_user(unique("dave") + "@example.com")
    assert server.api("GET", "/api/2.0/mlflow/experiments/search", token=token, params={"max_results": 1}).status_code == 200
    token_id = server.api("GET", "/api/2.0/token/list", token=token).json()["token_infos"][0]["token_id"]
    assert server.api("POST", "/api/2.0/token/delete", token=token, json={"token_id": token_id}).status_code == 200
    time.sleep(AUTH_CACHE_SECONDS + 0.2)  # recently checked tokens are trusted this long
    r = server.api("GET", "/api/2.0/mlflow/experiments/search", token=token, params={"max_results": 1})
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
