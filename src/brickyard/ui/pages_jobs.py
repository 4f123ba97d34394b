"""Jobs: list, create (a notebook task on an existing or new cluster, parameters, schedule), run now,
runs with their state (htmx polling), and a run's page with the executed notebook."""
from __future__ import annotations

import base64
import binascii
import json
import re

from fastapi import Form, Request
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse

from brickyard.compute import catalog
from brickyard.errors import BrickyardError, invalid, not_found
from brickyard.runtime.ansi import strip_ansi
from brickyard.runtime.mime import NOTEBOOK_EXIT_MIME, TABLE_MIME
from brickyard.services.jobs_exec import ACTIVE
from brickyard.ui.core import CsrfProtect, UiUser, redirect, render, security_headers, ui_router, workspace

router = ui_router()

API = "2.2"
MAX_PICKER_NOTEBOOKS = 500
# A notebook's HTML output is a document of its own, in a sandboxed frame (no scripts, an opaque
# origin): inline styles and data: images only, nothing fetched.
FRAME_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
             "frame-ancestors 'self'; form-action 'none'; base-uri 'none'")
IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif")
SINGLE_NODE_CONF = {"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"}


def _svc(request: Request):  # noqa: ANN202
    return workspace(request).services["jobs"]


# ---- helpers ----------------------------------------------------------------------------------

def parse_params(text: str, what: str = "Parameters") -> dict[str, str]:
    """`key=value` lines (blank lines and # comments ignored) as a dict."""
    out: dict[str, str] = {}
    for n, line in enumerate((text or "").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise invalid(f"{what}, line {n}: write key=value (got {line[:60]!r}).")
        if key in out:
            raise invalid(f"{what}, line {n}: {key!r} appears twice.")
        out[key] = value.strip()
    return out


def _state_badge(life: str, result: str | None) -> dict:
    """What a run's state looks like on a page: its label and a badge colour."""
    if life in ACTIVE:
        return {"label": life, "kind": "warn", "active": True}
    if result in ("SUCCESS", "SUCCESS_WITH_FAILURES"):
        return {"label": result, "kind": "ok", "active": False}
    if result in ("CANCELED", "UPSTREAM_CANCELED", "EXCLUDED", "DISABLED", None):
        return {"label": result or life, "kind": "", "active": False}
    return {"label": result, "kind": "err", "active": False}


def _run_row(run: dict) -> dict:
    state = run.get("state") or {}
    badge = _state_badge(state.get("life_cycle_state", ""), state.get("result_state"))
    return {"run_id": run["run_id"], "job_id": run.get("job_id"), "name": run.get("run_name", ""),
            "trigger": run.get("trigger", ""), "start": run.get("start_time"), "duration": run.get("run_duration", 0),
            "life": state.get("life_cycle_state", ""), "result": state.get("result_state") or "",
            "message": state.get("state_message", ""), "badge": badge,
            "href": f"/jobs/{run['job_id']}/runs/{run['run_id']}" if run.get("job_id") else f"/jobs/runs/{run['run_id']}"}


def _duration(ms: object) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return ""
    s = ms // 1000
    if s < 60:
        return f"{ms / 1000:.1f}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s}s"
    h, m = divmod(m, 60)
    return f"{h}h {m}m"


def _job_row(job: dict) -> dict:
    settings = job.get("settings") or {}
    tasks = settings.get("tasks") or []
    first = tasks[0] if tasks else {}
    kind = "Notebook" if "notebook_task" in first else ("Python" if "spark_python_task" in first else "")
    target = (first.get("notebook_task") or {}).get("notebook_path") or \
        (first.get("spark_python_task") or {}).get("python_file") or ""
    if first.get("existing_cluster_id"):
        compute = first["existing_cluster_id"]
    elif first.get("new_cluster"):
        compute = "New job cluster"
    elif first.get("job_cluster_key"):
        compute = f"Job cluster {first['job_cluster_key']}"
    else:
        compute = ""
    schedule = settings.get("schedule") or {}
    return {"job_id": job["job_id"], "name": settings.get("name", ""), "creator": job.get("creator_user_name", ""),
            "created": job.get("created_time"), "tasks": len(tasks), "kind": kind, "target": target,
            "compute": compute, "schedule": schedule, "settings": settings, "run_as": job.get("run_as_user_name", ""),
            "params_text": "".join(f"{k}={v}\n" for k, v in
                                   ((first.get("notebook_task") or {}).get("base_parameters") or {}).items())}


def _clusters(request: Request) -> list[dict]:
    rows = workspace(request).services["clusters"].list()
    return [{"id": c["cluster_id"], "name": c["cluster_name"], "state": c["state"]}
            for c in rows if c.get("cluster_source") != "JOB"]


def _notebook_paths(request: Request, me) -> list[str]:  # noqa: ANN001
    """Notebooks the user can read, for the path picker (breadth first, bounded)."""
    ws = workspace(request)
    tree = ws.services["tree"]
    found: list[str] = []
    queue = [f"/Users/{me.user_name}", "/Shared", "/Users", "/Repos"]
    seen: set[str] = set()
    with ws.store.session() as sess:
        while queue and len(found) < MAX_PICKER_NOTEBOOKS and len(seen) < 2000:
            path = queue.pop(0)
            if path in seen:
                continue
            seen.add(path)
            try:
                objects = tree.list_as(sess, me, path)
            except BrickyardError:
                continue
            for o in objects:
                if o.object_type == "NOTEBOOK":
                    if o.path not in found:
                        found.append(o.path)
                elif o.object_type in ("DIRECTORY", "REPO"):
                    queue.append(o.path)
    return sorted(found)


# ---- notebook rendering -----------------------------------------------------------------------

def _markdown(text: str) -> Markup:
    """A small, safe subset of Markdown (headings, paragraphs, lists, code, bold, italics, links):
    everything is escaped first, then only our own tags are added."""
    def inline(s: str) -> str:
        s = str(escape(s))
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![*\w])\*([^*]+)\*(?!\w)", r"<em>\1</em>", s)
        s = re.sub(r"\[([^\]]+)\]\((https?://[^)\s&quot;]+)\)",
                   r'<a href="\2" rel="noopener noreferrer" target="_blank">\1</a>', s)
        return s

    out: list[str] = []
    para: list[str] = []
    items: list[str] = []
    code: list[str] | None = None

    def flush() -> None:
        if para:
            out.append("<p>" + " ".join(inline(p) for p in para) + "</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in text.splitlines():
        if code is not None:
            if line.strip().startswith("```"):
                out.append("<pre>" + str(escape("\n".join(code))) + "</pre>")
                code = None
            else:
                code.append(line)
            continue
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            code = []
        elif m := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            flush()
            level = len(m.group(1))
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif m := re.match(r"^[-*+]\s+(.*)$", stripped):
            if para:
                flush()
            items.append(m.group(1))
        elif not stripped:
            flush()
        else:
            if items:
                flush()
            para.append(stripped)
    if code is not None:
        out.append("<pre>" + str(escape("\n".join(code))) + "</pre>")
    flush()
    return Markup("".join(out))


def _text(value: object) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return "" if value is None else str(value)


def _cell_type(value: object) -> str:
    """A table column's type: Spark sends it JSON-encoded ("\\"long\\"")."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else (decoded.get("type", "struct") if isinstance(decoded, dict)
                                                         else str(decoded))
    return str(value)


def render_output(out: dict, frame_url: str) -> dict:
    """One nbformat output as a view model for templates/jobs/_notebook.html."""
    kind = out.get("output_type")
    if kind == "stream":
        return {"kind": "stream", "name": out.get("name", "stdout"), "text": strip_ansi(_text(out.get("text")))}
    if kind == "error":
        trace = "\n".join(strip_ansi(_text(t)) for t in out.get("traceback") or [])
        return {"kind": "error", "ename": _text(out.get("ename")), "evalue": _text(out.get("evalue")),
                "trace": trace}
    data = out.get("data") or {}
    if isinstance(data.get(NOTEBOOK_EXIT_MIME), dict):
        return {"kind": "exit", "value": _text(data[NOTEBOOK_EXIT_MIME].get("value"))}
    table = data.get(TABLE_MIME)
    if isinstance(table, dict) and isinstance(table.get("schema"), list):
        columns = [{"name": _text(c.get("name")), "type": _cell_type(c.get("type"))} for c in table["schema"]
                   if isinstance(c, dict)]
        rows = [[v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v) for v in r]
                for r in table.get("data") or [] if isinstance(r, list)]
        return {"kind": "table", "columns": columns, "rows": rows, "truncated": bool(table.get("truncated"))}
    for mime in IMAGE_MIMES:
        if isinstance(data.get(mime), str):
            payload = "".join(data[mime].split())
            try:
                base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                continue
            return {"kind": "image", "src": f"data:{mime};base64,{payload}"}
    if isinstance(data.get("image/svg+xml"), str):
        svg = base64.b64encode(_text(data["image/svg+xml"]).encode()).decode()
        return {"kind": "image", "src": f"data:image/svg+xml;base64,{svg}"}
    if "text/html" in data:
        return {"kind": "html", "src": frame_url}
    if "text/markdown" in data:
        return {"kind": "markdown", "html": _markdown(_text(data["text/markdown"]))}
    if "application/json" in data:
        return {"kind": "text", "text": json.dumps(data["application/json"], indent=2)}
    if "text/plain" in data:
        return {"kind": "text", "text": strip_ansi(_text(data["text/plain"]))}
    return {"kind": "text", "text": f"(output of type {', '.join(sorted(data)) or 'unknown'})"}


def render_notebook(nb, frame_base: str) -> dict:  # noqa: ANN001
    """The executed notebook as a view model: cells with their source and outputs."""
    cells = []
    for i, cell in enumerate(nb.cells):
        language = cell.language(nb.language)
        item = {"index": i + 1, "language": language.lower(), "markdown": None, "source": cell.source,
                "outputs": [render_output(o, f"{frame_base}/{i}/{j}") for j, o in enumerate(cell.outputs)],
                "count": cell.execution_count}
        if cell.is_markdown:
            # Shown rendered once, as Databricks does: its own display of the text is the same Markdown.
            item["markdown"] = _markdown(cell.body)
            item["outputs"] = [o for o in item["outputs"] if o["kind"] != "markdown"]
        cells.append(item)
    return {"name": nb.name, "language": nb.language.lower(), "cells": cells}


# ---- jobs list and create ---------------------------------------------------------------------

@router.get("/jobs")
def jobs_list(request: Request, me: UiUser):
    listed = _svc(request).list(me, {"limit": 100, "expand_tasks": True}, API)
    rows = [_job_row(j) for j in listed.get("jobs") or []]
    return render(request, "jobs/list.html", active="jobs", jobs=rows, more=listed.get("has_more", False))


@router.get("/jobs/runs")
def all_runs(request: Request, me: UiUser):
    """Job runs: the newest runs of every job the user can see, and one-time (submitted) runs."""
    listed = _svc(request).list_runs(me, {"limit": 25})
    runs = [_run_row(r) for r in listed.get("runs") or []]
    return render(request, "jobs/runs.html", active="jobs", runs=runs, duration=_duration,
                  polling=any(r["badge"]["active"] for r in runs))


@router.get("/jobs/runs-table")
def all_runs_table(request: Request, me: UiUser):
    listed = _svc(request).list_runs(me, {"limit": 25})
    runs = [_run_row(r) for r in listed.get("runs") or []]
    return render(request, "jobs/_runs.html", job_id=None, runs=runs, duration=_duration,
                  polling=any(r["badge"]["active"] for r in runs))


def _form_defaults(request: Request) -> dict:
    return {"name": "", "task_key": "notebook", "notebook_path": "", "compute": "existing", "cluster_id": "",
            "spark_version": catalog.DEFAULT_ML_RUNTIME.key, "node_type_id": catalog.SMALLEST_LOCAL.node_type_id,
            "num_workers": "0", "params": "", "cron": "", "timezone": "UTC", "paused": False,
            "max_concurrent_runs": "1", "timeout_seconds": "0"}


def _create_form(request: Request, me, status: int = 200, error: str = "", **values) -> HTMLResponse:  # noqa: ANN001
    form = _form_defaults(request)
    form.update({k: v for k, v in values.items() if v is not None})
    clusters = _clusters(request)
    if not form["cluster_id"] and clusters:
        running = [c for c in clusters if c["state"] == "RUNNING"]
        form["cluster_id"] = (running or clusters)[0]["id"]
    return render(request, "jobs/create.html", status_code=status, active="jobs", form=form, error=error,
                  clusters=clusters, notebooks=_notebook_paths(request, me), runtimes=catalog.RUNTIMES,
                  node_types=catalog.NODE_TYPES)


@router.get("/jobs/create")
def create_form(request: Request, me: UiUser, notebook_path: str = ""):
    return _create_form(request, me, notebook_path=notebook_path)


def job_body(form: dict) -> dict:
    """JobSettings from the create form's fields."""
    path = form["notebook_path"].strip()
    if not path:
        raise invalid("Choose the notebook the job runs (an absolute workspace path).")
    task: dict = {"task_key": form["task_key"].strip() or "notebook",
                  "notebook_task": {"notebook_path": path,
                                    "base_parameters": parse_params(form["params"], "Parameters")}}
    if form["compute"] == "existing":
        if not form["cluster_id"]:
            raise invalid("Choose an existing cluster, or a new job cluster.")
        task["existing_cluster_id"] = form["cluster_id"]
    elif form["compute"] == "new":
        try:
            workers = int(form["num_workers"] or 0)
        except ValueError:
            raise invalid("Workers must be a whole number (0 for a single node cluster).") from None
        cluster: dict = {"spark_version": form["spark_version"], "node_type_id": form["node_type_id"],
                         "num_workers": workers}
        if workers == 0:
            cluster["spark_conf"] = dict(SINGLE_NODE_CONF)
            cluster["custom_tags"] = {"ResourceClass": "SingleNode"}
        task["new_cluster"] = cluster
    else:
        raise invalid("Cluster must be an existing cluster or a new job cluster.")
    body: dict = {"name": form["name"].strip() or "Untitled", "tasks": [task]}
    for field, label in (("max_concurrent_runs", "Maximum concurrent runs"), ("timeout_seconds", "Timeout")):
        value = (form.get(field) or "").strip()
        if value:
            if not value.isdigit():
                raise invalid(f"{label} must be a whole number.")
            body[field] = int(value)
    cron = form["cron"].strip()
    if cron:
        body["schedule"] = {"quartz_cron_expression": cron, "timezone_id": form["timezone"].strip() or "UTC",
                            "pause_status": "PAUSED" if form["paused"] else "UNPAUSED"}
    return body


@router.post("/jobs/create", dependencies=[CsrfProtect])
def create_job(request: Request, me: UiUser, name: str = Form(""), task_key: str = Form("notebook"),
               notebook_path: str = Form(""), compute: str = Form("existing"), cluster_id: str = Form(""),
               spark_version: str = Form(""), node_type_id: str = Form(""), num_workers: str = Form("0"),
               params: str = Form(""), cron: str = Form(""), timezone: str = Form("UTC"), paused: str = Form(""),
               max_concurrent_runs: str = Form("1"), timeout_seconds: str = Form("0")):
    form = {"name": name, "task_key": task_key, "notebook_path": notebook_path, "compute": compute,
            "cluster_id": cluster_id, "spark_version": spark_version or catalog.DEFAULT_ML_RUNTIME.key,
            "node_type_id": node_type_id or catalog.SMALLEST_LOCAL.node_type_id, "num_workers": num_workers,
            "params": params, "cron": cron, "timezone": timezone, "paused": bool(paused),
            "max_concurrent_runs": max_concurrent_runs, "timeout_seconds": timeout_seconds}
    try:
        job_id = _svc(request).create(me, job_body(form))
    except BrickyardError as exc:
        return _create_form(request, me, exc.http_status if exc.http_status < 500 else 500, exc.message, **form)
    return redirect(request, f"/jobs/{job_id}", f"Job {form['name'].strip() or 'Untitled'} created.")


# ---- one job ----------------------------------------------------------------------------------

def _runs(request: Request, me, job_id: int) -> list[dict]:  # noqa: ANN001
    listed = _svc(request).list_runs(me, {"job_id": job_id, "limit": 25})
    return [_run_row(r) for r in listed.get("runs") or []]


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: int, me: UiUser):
    job = _job_row(_svc(request).get(me, job_id, API))
    runs = _runs(request, me, job_id)
    return render(request, "jobs/job.html", active="jobs", job=job, runs=runs,
                  polling=any(r["badge"]["active"] for r in runs), duration=_duration,
                  settings_json=json.dumps(job["settings"], indent=2))


@router.get("/jobs/{job_id}/runs-table")
def runs_table(request: Request, job_id: int, me: UiUser):
    """The runs table alone (htmx polls it while a run is active)."""
    runs = _runs(request, me, job_id)
    return render(request, "jobs/_runs.html", job_id=job_id, runs=runs,
                  polling=any(r["badge"]["active"] for r in runs), duration=_duration)


@router.post("/jobs/{job_id}/run-now", dependencies=[CsrfProtect])
def run_now(request: Request, job_id: int, me: UiUser, params: str = Form("")):
    body: dict = {"job_id": job_id}
    values = parse_params(params, "Parameters")
    if values:
        body["notebook_params"] = values
    run_id = _svc(request).run_now(me, body)
    return redirect(request, f"/jobs/{job_id}/runs/{run_id}", f"Run {run_id} started.")


@router.post("/jobs/{job_id}/schedule", dependencies=[CsrfProtect])
def set_pause(request: Request, job_id: int, me: UiUser, pause: str = Form("")):
    svc = _svc(request)
    schedule = (svc.get(me, job_id, API).get("settings") or {}).get("schedule")
    if not schedule:
        raise invalid(f"Job {job_id} has no schedule.")
    status = "PAUSED" if pause == "1" else "UNPAUSED"
    svc.update(me, {"job_id": job_id, "new_settings": {"schedule": {**schedule, "pause_status": status}}})
    return redirect(request, f"/jobs/{job_id}", "Schedule paused." if status == "PAUSED" else "Schedule resumed.")


@router.post("/jobs/{job_id}/delete", dependencies=[CsrfProtect])
def delete_job(request: Request, job_id: int, me: UiUser):
    _svc(request).delete(me, {"job_id": job_id})
    return redirect(request, "/jobs", f"Job {job_id} deleted.")


# ---- one run ----------------------------------------------------------------------------------

def _run_model(request: Request, me, run_id: int) -> dict:  # noqa: ANN001
    svc = _svc(request)
    run = svc.get_run(me, run_id)
    row = _run_row(run)
    tasks = []
    for t in run.get("tasks") or []:
        state = t.get("state") or {}
        badge = _state_badge(state.get("life_cycle_state", ""), state.get("result_state"))
        item = {"key": t["task_key"], "run_id": t["run_id"], "attempt": t.get("attempt_number", 0),
                "badge": badge, "message": state.get("state_message", ""),
                "cluster": (t.get("cluster_instance") or {}).get("cluster_id", ""),
                "kind": "notebook" if "notebook_task" in t else "python",
                "target": (t.get("notebook_task") or {}).get("notebook_path")
                or (t.get("spark_python_task") or {}).get("python_file", ""),
                "params": (t.get("notebook_task") or {}).get("base_parameters") or {},
                "duration": t.get("run_duration", 0), "notebook": None, "error": "", "error_trace": "",
                "result": None, "logs": None}
        if not badge["active"]:
            out = svc.get_output(me, t["run_id"])
            item["error"] = out.get("error", "")
            item["error_trace"] = strip_ansi(out.get("error_trace", "") or "")
            item["result"] = (out.get("notebook_output") or {}).get("result")
            item["logs"] = out.get("logs")
            if item["kind"] == "notebook":
                nb = svc.executed_notebook(me, t["run_id"])
                if nb is not None:
                    base = f"/jobs/runs/{run_id}/tasks/{t['run_id']}/output"
                    item["notebook"] = render_notebook(nb, base)
        tasks.append(item)
    return {"run": row, "tasks": tasks, "raw": run, "polling": row["badge"]["active"]}


def _run_page(request: Request, me, run_id: int, job_id: int | None):  # noqa: ANN001
    try:
        model = _run_model(request, me, run_id)
    except BrickyardError as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        # A task run's id (run_page_url of a task): show its job run, at the task.
        meta = _svc(request).get_output(me, run_id).get("metadata") or {}
        parent = meta.get("original_attempt_run_id")
        if not parent or parent == run_id:
            raise
        target = f"/jobs/{meta['job_id']}/runs/{parent}" if meta.get("job_id") else f"/jobs/runs/{parent}"
        return redirect(request, f"{target}#task-{run_id}")
    actual_job = model["run"]["job_id"]
    if job_id is not None and actual_job != job_id:
        raise not_found(f"Run {run_id} is not a run of job {job_id}.")
    job_name = ""
    if actual_job:
        try:
            job_name = _svc(request).get(me, actual_job, API)["settings"].get("name", "")
        except BrickyardError:
            job_name = ""
    return render(request, "jobs/run.html", active="jobs", job_name=job_name, duration=_duration, **model)


@router.get("/jobs/{job_id}/runs/{run_id}")
def run_page(request: Request, job_id: int, run_id: int, me: UiUser):
    return _run_page(request, me, run_id, job_id)


@router.get("/jobs/runs/{run_id}")
def one_time_run_page(request: Request, run_id: int, me: UiUser):
    return _run_page(request, me, run_id, None)


@router.get("/jobs/runs/{run_id}/body")
def run_body(request: Request, run_id: int, me: UiUser):
    """The state, tasks and outputs of a run (htmx polls it until the run ends)."""
    model = _run_model(request, me, run_id)
    return render(request, "jobs/_run_body.html", duration=_duration, **model)


@router.post("/jobs/runs/{run_id}/cancel", dependencies=[CsrfProtect])
def cancel_run(request: Request, run_id: int, me: UiUser):
    svc = _svc(request)
    run = svc.get_run(me, run_id)
    svc.cancel(me, run_id)
    target = f"/jobs/{run['job_id']}/runs/{run_id}" if run.get("job_id") else f"/jobs/runs/{run_id}"
    return redirect(request, target, f"Cancelling run {run_id}.", "info")


@router.get("/jobs/runs/{run_id}/tasks/{task_run_id}/output/{cell}/{index}")
def html_output(request: Request, run_id: int, task_run_id: int, cell: int, index: int, me: UiUser):
    """One text/html output of an executed notebook, as its own document for a sandboxed iframe."""
    nb = _svc(request).executed_notebook(me, task_run_id)
    if nb is None or not 0 <= cell < len(nb.cells) or not 0 <= index < len(nb.cells[cell].outputs):
        raise not_found(f"Run {task_run_id} has no output {cell}/{index}.")
    # The task run must belong to the run in the URL (the page links only its own outputs).
    meta = _svc(request).get_output(me, task_run_id).get("metadata") or {}
    if meta.get("original_attempt_run_id") not in (run_id, task_run_id):
        raise not_found(f"Run {task_run_id} is not a task of run {run_id}.")
    data = nb.cells[cell].outputs[index].get("data") or {}
    if "text/html" not in data:
        raise not_found(f"Output {cell}/{index} of run {task_run_id} is not HTML.")
    doc = ('<!doctype html><html><head><meta charset="utf-8"><style>body{font-family:sans-serif;font-size:13px;'
           'margin:6px}table{border-collapse:collapse}th,td{border:1px solid #dfe3e6;padding:3px 8px}</style>'
           '</head><body>' + _text(data["text/html"]) + "</body></html>")
    response = HTMLResponse(doc)
    response.headers["Content-Security-Policy"] = FRAME_CSP
    return security_headers(response, FRAME_CSP)
