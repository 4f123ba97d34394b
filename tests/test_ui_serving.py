"""Serving pages in a real browser: register a small sklearn model with the real MLflow client,
create an endpoint from the page ("Serve this model"), watch it become ready, query it from the
page's query box (pre-filled from the model's input example) and see the predictions and metrics.

The workspace of this module runs serving with one worker process per served version (as
tests/test_serving.py does: the machine is small)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import requests
from ui_support import _new_page, csrf_of, login_with_token, session_cookies, shot

from conftest import server_with_env

pytestmark = [pytest.mark.ui, pytest.mark.slow]

COLUMNS = ["alcohol", "sulphates"]
SERVING_ENV = {"BRICKYARD_SERVING_MAX_PROCESSES": "1", "BRICKYARD_SERVING_START_TIMEOUT": "180",
               "BRICKYARD_SERVING_RETRY_AFTER_SECONDS": "1"}
READY_WAIT_MS = 240_000


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with server_with_env(tmp_path_factory.mktemp("uiserving") / "brickyard", SERVING_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def model(srv, tmp_path_factory):
    """Registered model `ui-wine` v1: a logistic regression logged with an input example; returns
    its predictions for the example's two rows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_", "BRICKYARD_"))}
    env.update(MLFLOW_TRACKING_URI=srv.url, MLFLOW_TRACKING_TOKEN=srv.token, MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="true", PYTHONWARNINGS="ignore")
    code = textwrap.dedent(f"""
        import json, warnings
        warnings.filterwarnings("ignore")
        import numpy as np, pandas as pd
        import mlflow
        from sklearn.linear_model import LogisticRegression
        X = pd.DataFrame([[9.0, 0.4], [13.5, 0.9], [12.8, 0.8], [9.4, 0.5], [11.0, 0.6], [10.0, 0.7]],
                         columns={COLUMNS!r})
        y = np.array([0, 1, 1, 0, 1, 0])
        mlflow.set_experiment("/Users/admin/ui-serving")
        with mlflow.start_run():
            m = LogisticRegression().fit(X, y)
            mlflow.sklearn.log_model(m, name="model", input_example=X.head(2), registered_model_name="ui-wine")
        print(json.dumps({{"preds": m.predict(X.head(2)).tolist()}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path_factory.mktemp("mlflow"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["preds"]


def send(page, text: str | None = None) -> None:
    """Send the query box (after putting `text` in it) and wait for the answer the page shows."""
    if text is not None:
        page.fill("#query-request", text)
    page.evaluate("() => { document.querySelector('#query-response').innerHTML = ''; }")
    page.click("#send-query")
    page.wait_for_selector("#query-status, #query-error")


@pytest.fixture
def spage(browser, srv):
    context, page = _new_page(browser, srv)
    login_with_token(page, srv.token)
    yield page
    context.close()


def test_serve_a_registered_model_from_the_pages_and_query_it(spage, srv, model):
    page = spage
    w = srv.client()
    # Registered models, each version with "Serve this model".
    page.goto("/serving/models")
    row = page.locator("section[data-model='ui-wine'] tr[data-version='1']")
    assert row.count() == 1
    shot(page, "serving-models")
    with page.expect_navigation():
        row.locator("a.serve-link").click()
    assert "/serving/create?model=ui-wine&version=1" in page.url
    assert page.input_value("#model") == "ui-wine" and page.input_value("#version") == "1"
    assert page.input_value("#endpoint-name") == "ui-wine"
    page.fill("#endpoint-name", "ui-wine-ep")
    page.select_option("#workload-size", "Small")
    shot(page, "serving-create")
    with page.expect_navigation():
        page.click("#create-endpoint-submit")
    assert page.url.endswith("/serving/endpoints/ui-wine-ep")
    # The page polls the endpoint until its config update settles; the SDK agrees it is ready.
    page.wait_for_selector("#endpoint-status[data-state=Ready]", timeout=READY_WAIT_MS)
    ep = w.serving_endpoints.get("ui-wine-ep")
    assert ep.state.ready.value == "READY"
    served = ep.config.served_entities[0]
    assert (served.entity_name, served.entity_version, served.workload_size) == ("ui-wine", "1", "Small")
    assert page.locator("#served .deployment").inner_text() == "DEPLOYMENT_READY"
    assert page.locator("#config-update").inner_text() == "NOT_UPDATING"

    # The query box holds the model's serving input example: the two logged rows.
    sample = json.loads(page.input_value("#query-request"))
    assert sample["dataframe_split"]["columns"] == COLUMNS
    assert len(sample["dataframe_split"]["data"]) == 2
    send(page)
    assert page.locator("#query-status").inner_text() == "200"
    assert json.loads(page.locator("#query-body").inner_text()) == {"predictions": model}
    shot(page, "serving-endpoint")

    # Another request of our own, in another format; a bad one shows the model server's error.
    send(page, json.dumps({"dataframe_records": [{"alcohol": 13.5, "sulphates": 0.9}]}))
    assert json.loads(page.locator("#query-body").inner_text()) == {"predictions": model[1:]}
    send(page, "{not json")
    assert "not valid JSON" in page.locator("#query-error").inner_text()
    send(page, json.dumps({"dataframe_split": {"columns": ["nope"], "data": [[1]]}}))
    assert page.locator("#query-status").inner_text().startswith("4")
    assert "alcohol" in page.locator("#query-body").inner_text()  # the model server names the missing column

    # The same endpoint answers the REST API, and the page's metrics count every request.
    r = requests.post(srv.url + "/serving-endpoints/ui-wine-ep/invocations", headers=srv.headers(),
                      json=sample, timeout=120)
    assert r.status_code == 200 and r.json() == {"predictions": model}
    page.reload()
    requests_seen = int(page.locator("#metrics tr[data-served='ui-wine-1'] .metric-requests").inner_text())
    assert requests_seen == 4  # the page's 3 model calls (not the invalid JSON) and the API's one
    prom = requests.get(srv.url + "/api/2.0/serving-endpoints/ui-wine-ep/metrics", headers=srv.headers(),
                        timeout=30).text
    assert 'request_count_total{endpoint="ui-wine-ep",served_model="ui-wine-1"} 4' in prom

    # Listed with its state.
    page.goto("/serving")
    assert page.locator("tr[data-endpoint='ui-wine-ep'] .endpoint-state").inner_text() == "Ready"
    shot(page, "serving-list")

    # The query route needs the session's CSRF token like every form.
    sid = session_cookies(page)["by_session"]
    r = requests.post(srv.url + "/serving/endpoints/ui-wine-ep/query", cookies={"by_session": sid},
                      data={"request": json.dumps(sample)}, allow_redirects=False, timeout=30)
    assert r.status_code == 403
    r = requests.post(srv.url + "/serving/endpoints/ui-wine-ep/query", cookies={"by_session": sid},
                      headers={"X-CSRF-Token": csrf_of(page)}, data={"request": json.dumps(sample)},
                      allow_redirects=False, timeout=60)
    assert r.status_code == 200 and "predictions" in r.text

    # Delete from the page.
    page.goto("/serving/endpoints/ui-wine-ep")
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation():
        page.click("#delete-endpoint")
    assert page.url.endswith("/serving")
    assert all(e.name != "ui-wine-ep" for e in w.serving_endpoints.list())
    assert page.console_errors == []


def test_create_form_errors_and_other_users(spage, srv, model, browser):
    page = spage
    page.goto("/serving/create")
    assert page.input_value("#model") == "ui-wine"
    # the version list follows the model (htmx)
    assert page.locator("#version option").all_inner_texts()[0].startswith("Version 1")
    page.fill("#endpoint-name", "bad name!")
    page.eval_on_selector("#endpoint-name", "el => el.removeAttribute('pattern')")
    page.click("#create-endpoint-submit")
    assert "letters, digits" in page.locator("#form-error").inner_text()
    assert page.input_value("#endpoint-name") == "bad name!"
    # A version that does not exist.
    page.fill("#endpoint-name", "ui-wine-nov")
    page.eval_on_selector("#version", "el => { el.innerHTML = '<option value=\"99\">99</option>'; }")
    page.click("#create-endpoint-submit")
    assert "has no version 99" in page.locator("#form-error").inner_text()
    page.console_errors.clear()  # the refused forms came back as 400/404 documents
    # A non-admin user sees endpoints but cannot delete another user's.
    srv.api("POST", "/api/2.0/serving-endpoints", json={
        "name": "ui-wine-admin", "config": {"served_entities": [{"entity_name": "ui-wine", "entity_version": "1",
                                                                 "workload_size": "Small",
                                                                 "scale_to_zero_enabled": True}]}})
    _, token = srv.new_user("ui-serving-user")
    context, other = _new_page(browser, srv)
    try:
        login_with_token(other, token)
        other.goto("/serving/endpoints/ui-wine-admin")
        assert other.locator("#endpoint-name").inner_text() == "ui-wine-admin"
        assert other.locator("#delete-endpoint").count() == 0
        # Metrics, like the API's, are for the endpoint's creator and admins.
        assert other.locator("#metrics").count() == 0 and other.locator("#metrics-hidden").count() == 1
        sid = session_cookies(other)["by_session"]
        r = requests.post(srv.url + "/serving/endpoints/ui-wine-admin/delete", cookies={"by_session": sid},
                          headers={"X-CSRF-Token": csrf_of(other)}, allow_redirects=False, timeout=30)
        assert r.status_code == 403 and "cannot manage serving endpoint" in r.text
    finally:
        context.close()
    assert srv.client().serving_endpoints.get("ui-wine-admin").name == "ui-wine-admin"
    srv.api("DELETE", "/api/2.0/serving-endpoints/ui-wine-admin")
    # A version's link on the models page opens it in the embedded MLflow UI, signed in by the session.
    page.goto("/serving/models")
    with page.expect_navigation():
        page.click("section[data-model='ui-wine'] tr[data-version='1'] a[href*='/versions/1']")
    assert page.url.endswith("/ml/#/models/ui-wine/versions/1")
    page.get_by_text("Version 1").first.wait_for()
    shot(page, "mlflow-model-version")
