"""Serving: endpoints with their state, create one from a registered model version, an endpoint's page
with a query box (a sample request from the model's input example or signature, sent through the
page as the signed-in user) and its request metrics; registered models with "Serve this model"."""
from __future__ import annotations

import json
import re
from urllib.parse import quote

from fastapi import Form, Request

from brickyard.errors import BrickyardError, invalid
from brickyard.serving.config import WORKLOAD_CONCURRENCY
from brickyard.serving.metrics import BUCKETS_MS
from brickyard.ui.core import CsrfProtect, UiUser, redirect, render, ui_router, workspace

router = ui_router()

MAX_MODELS = 200
MAX_VERSIONS = 100
MAX_EXAMPLE_BYTES = 256 << 10
MAX_SHOWN_RESPONSE = 200_000
METRIC_RE = re.compile(r'^(\w+)\{([^}]*)\}\s+(\S+)$')
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _svc(request: Request):  # noqa: ANN202
    return workspace(request).services["serving"]


def _registry(request: Request):  # noqa: ANN202
    return workspace(request).services["mlflow"].registry_store()


def _mlflow_call(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    from mlflow.exceptions import MlflowException

    from brickyard.tracking.service import from_mlflow

    try:
        return fn(*args, **kwargs)
    except MlflowException as exc:
        raise from_mlflow(exc) from None


# ---- the registry -----------------------------------------------------------------------------

def registered_models(request: Request) -> list[str]:
    models = _mlflow_call(_registry(request).search_registered_models, max_results=MAX_MODELS,
                          order_by=["name ASC"])
    return [m.name for m in models]


def model_versions(request: Request, name: str) -> list[dict]:
    """A registered model's versions, newest first."""
    if not name:
        return []
    quote_char = '"' if "'" in name else "'"
    if quote_char in name and quote_char == '"':
        raise invalid("Model names holding both kinds of quotes cannot be searched here.")
    found = _mlflow_call(_registry(request).search_model_versions,
                         filter_string=f"name={quote_char}{name}{quote_char}", max_results=MAX_VERSIONS,
                         order_by=["version_number DESC"])
    return [{"version": str(v.version), "stage": v.current_stage or "None", "status": v.status,
             "created": v.creation_timestamp, "run_id": v.run_id or "",
             "aliases": list(getattr(v, "aliases", None) or [])} for v in found]


def _read_version_file(request: Request, name: str, version: str, rel: str) -> bytes | None:
    ws = workspace(request)
    try:
        root = ws.services["mlflow"].version_root(name, version)
        return ws.services["dbfs"].read(f"{root}/{rel}", 0, MAX_EXAMPLE_BYTES)
    except BrickyardError:
        return None


def sample_request(request: Request, name: str, version: str) -> tuple[str, str]:
    """A request body for the model and where it came from: its serving input example, its input
    example, or one row of zeros shaped by its signature."""
    raw = _read_version_file(request, name, version, "serving_input_example.json")
    if raw:
        try:
            return json.dumps(json.loads(raw), indent=2), "the model's serving input example"
        except ValueError:
            pass
    raw = _read_version_file(request, name, version, "input_example.json")
    if raw:
        try:
            example = json.loads(raw)
        except ValueError:
            example = None
        if isinstance(example, dict) and "columns" in example and "data" in example:
            body = {"dataframe_split": {"columns": example["columns"], "data": example["data"]}}
            return json.dumps(body, indent=2), "the model's input example"
        if isinstance(example, dict) and example.get("inputs") is not None:
            return json.dumps(example, indent=2), "the model's input example"
        if example is not None:
            return json.dumps({"inputs": example}, indent=2), "the model's input example"
    raw = _read_version_file(request, name, version, "MLmodel")
    if raw:
        import yaml

        try:
            meta = yaml.safe_load(raw) or {}
            inputs = json.loads(((meta.get("signature") or {}).get("inputs")) or "null")
        except (ValueError, yaml.YAMLError, TypeError):
            inputs = None
        if isinstance(inputs, list) and inputs and all(isinstance(i, dict) and i.get("name") for i in inputs):
            zero = {"string": "", "boolean": False}
            row = [zero.get(i.get("type"), 0) for i in inputs]
            body = {"dataframe_split": {"columns": [i["name"] for i in inputs], "data": [row]}}
            return json.dumps(body, indent=2), "the model's signature (one row of placeholder values)"
    return json.dumps({"dataframe_split": {"columns": ["x"], "data": [[0]]}}, indent=2), \
        "a placeholder: the model has no input example or signature"


# ---- metrics ----------------------------------------------------------------------------------

def parse_metrics(text: str) -> list[dict]:
    """Per served model: requests, 4xx, 5xx, mean latency and bucket-bounded p50/p95 (ms)."""
    series: dict[str, dict] = {}
    for line in text.splitlines():
        m = METRIC_RE.match(line.strip())
        if not m:
            continue
        name, labels, value = m.group(1), dict(LABEL_RE.findall(m.group(2))), float(m.group(3))
        s = series.setdefault(labels.get("served_model", ""), {"served": labels.get("served_model", ""),
                                                                "requests": 0, "e4xx": 0, "e5xx": 0, "sum": 0.0,
                                                                "buckets": []})
        if name == "request_count_total":
            s["requests"] = int(value)
        elif name == "request_4xx_count_total":
            s["e4xx"] = int(value)
        elif name == "request_5xx_count_total":
            s["e5xx"] = int(value)
        elif name == "request_latency_ms_sum":
            s["sum"] = value
        elif name == "request_latency_ms_bucket" and labels.get("le") not in (None, "+Inf"):
            s["buckets"].append((float(labels["le"]), int(value)))
    out = []
    for s in series.values():
        n = s["requests"]

        def quantile(q: float, s: dict = s, n: int = n) -> str:
            if not n:
                return ""
            for bound, cumulative in sorted(s["buckets"]):
                if cumulative >= q * n:
                    return f"≤ {bound:g} ms"
            return f"> {BUCKETS_MS[-1]} ms"

        out.append({"served": s["served"], "requests": n, "e4xx": s["e4xx"], "e5xx": s["e5xx"],
                    "mean": f"{s['sum'] / n:.1f} ms" if n else "", "p50": quantile(0.5), "p95": quantile(0.95)})
    return sorted(out, key=lambda s: s["served"])


# ---- views ------------------------------------------------------------------------------------

def _endpoint_state(view: dict) -> dict:
    state = view.get("state") or {}
    ready = state.get("ready") == "READY"
    update = state.get("config_update", "")
    if update == "IN_PROGRESS":
        label, kind = ("Updating" if ready else "Not ready (creating)"), "warn"
    elif update == "UPDATE_FAILED":
        label, kind = ("Ready (last update failed)" if ready else "Failed"), ("warn" if ready else "err")
    else:
        label, kind = ("Ready", "ok") if ready else ("Not ready", "warn")
    return {"ready": ready, "config_update": update, "label": label, "kind": kind,
            "message": state.get("config_update_message", ""), "settled": update != "IN_PROGRESS"}


def _entities(config: dict | None) -> list[dict]:
    out = []
    for e in (config or {}).get("served_entities") or []:
        st = e.get("state") or {}
        out.append({"name": e.get("name", ""), "model": e.get("entity_name", ""), "version": e.get("entity_version", ""),
                    "size": e.get("workload_size", ""), "scale_to_zero": e.get("scale_to_zero_enabled", False),
                    "deployment": st.get("deployment", ""), "message": st.get("deployment_state_message", ""),
                    "model_href": "/ml/#/models/" + quote(e.get("entity_name", ""), safe="")
                    + "/versions/" + quote(str(e.get("entity_version", "")), safe="")})
    return out


def _list_rows(request: Request, me) -> list[dict]:  # noqa: ANN001
    rows = []
    for v in _svc(request).list(me):
        served = (v.get("config") or {}).get("served_entities") or []
        rows.append({"name": v["name"], "creator": v.get("creator", ""), "state": _endpoint_state(v),
                     "updated": v.get("last_updated_timestamp"),
                     "served": [f"{e['entity_name']} v{e['entity_version']}" for e in served]})
    return rows


@router.get("/serving")
def endpoints(request: Request, me: UiUser):
    rows = _list_rows(request, me)
    return render(request, "serving/list.html", active="serving", endpoints=rows,
                  polling=not all(r["state"]["settled"] for r in rows))


@router.get("/serving/table")
def endpoints_table(request: Request, me: UiUser):
    rows = _list_rows(request, me)
    return render(request, "serving/_table.html", endpoints=rows,
                  polling=not all(r["state"]["settled"] for r in rows))


@router.get("/serving/models")
def models_page(request: Request, me: UiUser):
    """Registered models and their versions, each with "Serve this model" (the create form)."""
    models = [{"name": n, "versions": model_versions(request, n)} for n in registered_models(request)]
    for m in models:
        m["href"] = "/ml/#/models/" + quote(m["name"], safe="")
        for v in m["versions"]:
            v["serve_href"] = f"/serving/create?model={quote(m['name'], safe='')}&version={quote(v['version'])}"
            v["href"] = m["href"] + "/versions/" + quote(v["version"])
    return render(request, "serving/models.html", active="models", models=models)


def _create_form(request: Request, status: int = 200, error: str = "", **values) -> object:  # noqa: ANN003
    form = {"name": "", "model": "", "version": "", "workload_size": "Small", "scale_to_zero": False}
    form.update({k: v for k, v in values.items() if v is not None})
    models = registered_models(request)
    if not form["model"] and models:
        form["model"] = models[0]
    versions = model_versions(request, form["model"]) if form["model"] in models else []
    if not form["version"] and versions:
        form["version"] = versions[0]["version"]
    if not form["name"] and form["model"]:
        form["name"] = re.sub(r"[^A-Za-z0-9_-]+", "-", form["model"]).strip("-")[:63]
    return render(request, "serving/create.html", status_code=status, active="serving", form=form, error=error,
                  models=models, versions=versions, sizes=list(WORKLOAD_CONCURRENCY))


@router.get("/serving/create")
def create_form(request: Request, me: UiUser, model: str = "", version: str = ""):
    return _create_form(request, model=model, version=version)


@router.get("/serving/create/versions")
def version_options(request: Request, me: UiUser, model: str = ""):
    """The <option>s of a model's versions (htmx swaps them in when the model changes)."""
    return render(request, "serving/_versions.html", versions=model_versions(request, model), selected="")


@router.post("/serving/create", dependencies=[CsrfProtect])
def create_endpoint(request: Request, me: UiUser, name: str = Form(""), model: str = Form(""),
                    version: str = Form(""), workload_size: str = Form("Small"), scale_to_zero: str = Form("")):
    values = {"name": name, "model": model, "version": version, "workload_size": workload_size,
              "scale_to_zero": bool(scale_to_zero)}
    body = {"name": name.strip(), "config": {"served_entities": [{
        "entity_name": model, "entity_version": version.strip(), "workload_size": workload_size,
        "scale_to_zero_enabled": bool(scale_to_zero)}]}}
    try:
        if not model:
            raise invalid("Choose a registered model to serve.")
        _svc(request).create(me, body)
    except BrickyardError as exc:
        return _create_form(request, exc.http_status if exc.http_status < 500 else 500, exc.message, **values)
    return redirect(request, f"/serving/endpoints/{quote(name.strip(), safe='')}",
                    f"Serving endpoint {name.strip()} created; it is starting.")


def _endpoint_model(request: Request, me, name: str) -> dict:  # noqa: ANN001
    svc = _svc(request)
    view = svc.get(me, name)
    state = _endpoint_state(view)
    can_manage = view.get("permission_level") == "CAN_MANAGE"
    # Metrics as the API gives them: to the endpoint's creator and admins only.
    return {"endpoint": view, "state": state, "entities": _entities(view.get("config")),
            "pending": _entities(view.get("pending_config")) if view.get("pending_config") else [],
            "metrics": parse_metrics(svc.export_metrics(me, name)) if can_manage else None,
            "polling": not state["settled"], "can_manage": can_manage}


@router.get("/serving/endpoints/{name}")
def endpoint_page(request: Request, name: str, me: UiUser):
    model = _endpoint_model(request, me, name)
    served = model["entities"] or model["pending"]
    sample, source = sample_request(request, served[0]["model"], served[0]["version"]) if served else ("{}", "")
    return render(request, "serving/endpoint.html", active="serving", sample=sample, sample_source=source,
                  **model)


@router.get("/serving/endpoints/{name}/status")
def endpoint_status(request: Request, name: str, me: UiUser):
    """State, served models and metrics (htmx polls this while the endpoint changes)."""
    return render(request, "serving/_status.html", **_endpoint_model(request, me, name))


@router.post("/serving/endpoints/{name}/query", dependencies=[CsrfProtect])
async def query(request: Request, name: str, me: UiUser):
    """Send the query box's request to the endpoint (as the API's invocations route does) and show
    the answer."""
    form = await request.form()
    text = form.get("request")
    text = text if isinstance(text, str) else ""
    svc = _svc(request)
    status, body, error = 0, "", ""
    try:
        json.loads(text)
    except ValueError as exc:
        error = f"The request is not valid JSON: {exc}."
    if not error:
        if len(text.encode()) > svc.settings.max_payload_bytes:
            error = f"The request is larger than the {svc.settings.max_payload_bytes >> 20} MB limit of model serving."
        else:
            try:
                status, _headers, payload = await svc.invoke(name, text.encode())
                raw = payload.decode("utf-8", "replace")
                try:
                    body = json.dumps(json.loads(raw), indent=2)
                except ValueError:
                    body = raw
            except BrickyardError as exc:
                status, body = exc.http_status, json.dumps({"error_code": exc.error_code, "message": exc.message},
                                                           indent=2)
    truncated = len(body) > MAX_SHOWN_RESPONSE
    return render(request, "serving/_response.html", status=status, body=body[:MAX_SHOWN_RESPONSE],
                  truncated=truncated, error=error, ok=200 <= status < 300)


@router.post("/serving/endpoints/{name}/delete", dependencies=[CsrfProtect])
def delete_endpoint(request: Request, name: str, me: UiUser):
    _svc(request).delete(me, name)
    return redirect(request, "/serving", f"Serving endpoint {name} deleted.")
