"""Compute: clusters (list with live state, Create Cluster form, cluster page with actions, events,
libraries, driver logs, Spark UI link) and instance pools (list, create, pool page with stats).

Every action goes through the services the REST API uses (clusters, libraries, pools, dbfs), so the
spec validation and the permissions are the API's own; the form only turns its fields into the
API's JSON body.
"""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from fastapi import File, Form, Request, UploadFile

from brickyard.compute import catalog
from brickyard.errors import BrickyardError, denied, invalid
from brickyard.services.users import Principal
from brickyard.ui.core import CsrfProtect, UiUser, redirect, render, ui_router, workspace

router = ui_router()

MODES = (("standard", "Standard"), ("high_concurrency", "High Concurrency"), ("single_node", "Single Node"))
FINAL_STATES = ("TERMINATED", "ERROR")
STATE_BADGES = {"RUNNING": "badge-ok", "PENDING": "badge-warn", "RESTARTING": "badge-warn",
                "RESIZING": "badge-warn", "TERMINATING": "badge-warn", "TERMINATED": "", "ERROR": "badge-err"}
LIB_BADGES = {"INSTALLED": "badge-ok", "FAILED": "badge-err", "PENDING": "badge-warn", "RESOLVING": "badge-warn",
              "INSTALLING": "badge-warn", "UNINSTALL_ON_RESTART": ""}
LOG_TAIL_BYTES = 64 * 1024
UPLOAD_DIR = "dbfs:/FileStore/jars"
SAFE_FILE_RE = re.compile(r"[^A-Za-z0-9._+-]")


def _svc(request: Request, name: str):  # noqa: ANN202
    return workspace(request).services[name]


def _render(request: Request, template: str, status_code: int = 200, **ctx):  # noqa: ANN003, ANN202
    return render(request, f"compute/{template}", status_code=status_code, active="compute",
                  state_badges=STATE_BADGES, lib_badges=LIB_BADGES, **ctx)


def _status(exc: BrickyardError) -> int:
    return exc.http_status if exc.http_status < 500 else 500


# ---- the clusters list ---------------------------------------------------------------------

def _cluster_rows(request: Request) -> list[dict]:
    runtimes = {r.key: r.name for r in catalog.RUNTIMES}
    rows = []
    for c in _svc(request, "clusters").list():
        spec = c.get("spec") or {}
        if spec.get("autoscale"):
            workers = f"{spec['autoscale']['min_workers']}–{spec['autoscale']['max_workers']}"
        else:
            workers = str(spec.get("num_workers") or 0)
        rows.append({
            "cluster_id": c["cluster_id"], "cluster_name": c["cluster_name"], "state": c["state"],
            "state_message": c.get("state_message") or "", "mode": _mode_label(c),
            "runtime": runtimes.get(spec.get("runtime_key", ""), c.get("spark_version", "")),
            "spark_version": c.get("spark_version", ""), "workers": workers,
            "node_type_id": c.get("node_type_id") or "", "creator": c.get("creator_user_name") or "",
            "source": c.get("cluster_source") or "", "pool": c.get("instance_pool_id") or "",
        })
    return rows


def _mode_label(cluster: dict) -> str:
    from brickyard.services import cluster_spec

    return {cluster_spec.SINGLE_NODE: "Single Node", cluster_spec.HIGH_CONCURRENCY: "High Concurrency"}.get(
        cluster_spec.mode_of(cluster.get("spec") or cluster), "Standard")


@router.get("/compute")
def clusters(request: Request, me: UiUser):
    return _render(request, "list.html", clusters=_cluster_rows(request))


@router.get("/compute/_rows")
def cluster_rows(request: Request, me: UiUser):
    """The list's table body, polled by htmx every 2 s."""
    return _render(request, "_cluster_rows.html", clusters=_cluster_rows(request))


# ---- the Create Cluster form ---------------------------------------------------------------

def _form_defaults(me: Principal) -> dict:
    return {
        "cluster_name": f"{me.user_name.split('@')[0]}'s Cluster", "mode": "standard",
        "spark_version": catalog.DEFAULT_ML_RUNTIME.key, "instance_pool_id": "", "autoscale": "on",
        "min_workers": "1", "max_workers": "2", "num_workers": "1", "autotermination": "on",
        "autotermination_minutes": "120", "node_type_id": "local.medium", "driver_node_type_id": "",
        "spark_conf": "", "env_vars": "", "init_scripts": "",
    }


def _create_page(request: Request, form: dict, error: str = "", status: int = 200):  # noqa: ANN202
    try:
        pools = [{"id": p["instance_pool_id"], "name": p["instance_pool_name"], "node_type_id": p["node_type_id"]}
                 for p in _svc(request, "pools").list()]
    except BrickyardError:
        pools = []
    return _render(request, "create.html", status_code=status, form=form, error=error, modes=MODES,
                   runtimes=catalog.spark_versions_response()["versions"],
                   node_types=catalog.node_types_response()["node_types"], pools=pools)


@router.get("/compute/create")
def create_form(request: Request, me: UiUser):
    return _create_page(request, _form_defaults(me))


def _int_field(value: str, label: str) -> int:
    value = (value or "").strip()
    if not re.fullmatch(r"-?\d{1,9}", value):
        raise invalid(f"{label} must be a whole number; got {value!r}.")
    return int(value)


def _pairs(text: str, label: str, *, sep: str | None) -> dict[str, str]:
    """`key value` lines (sep None: split at the first blank, or at '=' when the key has one) or
    `KEY=value` lines (sep '=')."""
    out: dict[str, str] = {}
    for n, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if sep is None:
            parts = line.split(None, 1)
            if "=" in parts[0]:  # `key=value` (a Spark key never holds '=')
                parts = line.split("=", 1)
            if len(parts) != 2:
                raise invalid(f"{label}, line {n}: expected 'key value'; got {line!r}.")
        else:
            if sep not in line:
                raise invalid(f"{label}, line {n}: expected 'NAME{sep}value'; got {line!r}.")
            parts = line.split(sep, 1)
        out[parts[0].strip()] = parts[1].strip()
    return out


def _init_scripts(text: str) -> list[dict]:
    """One script a line: `dbfs:/...`, `file:/...`, `/Volumes/...`, `workspace:/...` or a workspace path."""
    out = []
    for n, raw in enumerate((text or "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        lower = line.lower()
        if lower.startswith("dbfs:/"):
            out.append({"dbfs": {"destination": line}})
        elif lower.startswith("file:/"):
            out.append({"file": {"destination": line}})
        elif lower.startswith("workspace:/"):
            out.append({"workspace": {"destination": line[len("workspace:"):]}})
        elif line.startswith("/Volumes/"):
            out.append({"volumes": {"destination": line}})
        elif line.startswith("/"):
            out.append({"workspace": {"destination": line}})
        else:
            raise invalid(f"Init scripts, line {n}: {line!r} is not a workspace path (/Users/...), dbfs:/, "
                          "file:/ or /Volumes/ path.")
    return out


def cluster_body(form: dict) -> dict:
    """The clusters/create body the Create Cluster form describes (as the Databricks UI sends it)."""
    mode = form.get("mode")
    if mode not in dict(MODES):
        raise invalid("Cluster Mode must be Standard, High Concurrency or Single Node.")
    spark_conf = _pairs(form.get("spark_conf", ""), "Spark config", sep=None)
    env = _pairs(form.get("env_vars", ""), "Environment variables", sep="=")
    tags: dict[str, str] = {}
    body: dict = {"cluster_name": (form.get("cluster_name") or "").strip(),
                  "spark_version": form.get("spark_version") or None}
    if mode == "single_node":
        spark_conf.setdefault("spark.databricks.cluster.profile", "singleNode")
        spark_conf.setdefault("spark.master", "local[*, 4]")
        tags["ResourceClass"] = "SingleNode"
        body["num_workers"] = 0
    else:
        if mode == "high_concurrency":
            spark_conf.setdefault("spark.databricks.cluster.profile", "serverless")
            spark_conf.setdefault("spark.databricks.repl.allowedLanguages", "sql,python,r")
            tags["ResourceClass"] = "Serverless"
        if form.get("autoscale"):
            body["autoscale"] = {"min_workers": _int_field(form.get("min_workers", ""), "Min Workers"),
                                 "max_workers": _int_field(form.get("max_workers", ""), "Max Workers")}
        else:
            body["num_workers"] = _int_field(form.get("num_workers", ""), "Workers")
    if form.get("autotermination"):
        minutes = _int_field(form.get("autotermination_minutes", ""), "Terminate after (minutes)")
        if not 10 <= minutes <= 43200:
            raise invalid("Terminate after must be between 10 and 43200 minutes of inactivity.")
        body["autotermination_minutes"] = minutes
    else:
        body["autotermination_minutes"] = 0
    pool = (form.get("instance_pool_id") or "").strip()
    if pool:
        body["instance_pool_id"] = pool
    else:
        body["node_type_id"] = form.get("node_type_id") or None
        if form.get("driver_node_type_id"):
            body["driver_node_type_id"] = form["driver_node_type_id"]
    body["spark_conf"] = spark_conf
    body["spark_env_vars"] = env
    if tags:
        body["custom_tags"] = tags
    scripts = _init_scripts(form.get("init_scripts", ""))
    if scripts:
        body["init_scripts"] = scripts
    return body


@router.post("/compute/create", dependencies=[CsrfProtect])
def create_cluster(request: Request, me: UiUser, cluster_name: str = Form(""), mode: str = Form("standard"),
                   spark_version: str = Form(""), instance_pool_id: str = Form(""), autoscale: str = Form(""),
                   min_workers: str = Form(""), max_workers: str = Form(""), num_workers: str = Form(""),
                   autotermination: str = Form(""), autotermination_minutes: str = Form(""),
                   node_type_id: str = Form(""), driver_node_type_id: str = Form(""), spark_conf: str = Form(""),
                   env_vars: str = Form(""), init_scripts: str = Form("")):
    form = {"cluster_name": cluster_name, "mode": mode, "spark_version": spark_version,
            "instance_pool_id": instance_pool_id, "autoscale": autoscale, "min_workers": min_workers,
            "max_workers": max_workers, "num_workers": num_workers, "autotermination": autotermination,
            "autotermination_minutes": autotermination_minutes, "node_type_id": node_type_id,
            "driver_node_type_id": driver_node_type_id, "spark_conf": spark_conf, "env_vars": env_vars,
            "init_scripts": init_scripts}
    try:
        cluster_id = _svc(request, "clusters").create(me, cluster_body(form), source="UI")
    except BrickyardError as exc:
        return _create_page(request, form, exc.message, _status(exc))
    return redirect(request, f"/compute/{cluster_id}", f"Cluster {cluster_name.strip()} is starting.")


# ---- instance pools (before /compute/{cluster_id}) -----------------------------------------

def _pool_row(p: dict) -> dict:
    return {"id": p["instance_pool_id"], "name": p["instance_pool_name"], "node_type_id": p["node_type_id"],
            "min_idle": p.get("min_idle_instances", 0), "max_capacity": p.get("max_capacity"),
            "idle_minutes": p.get("idle_instance_autotermination_minutes"),
            "runtime": (p.get("preloaded_spark_versions") or [""])[0], "state": p.get("state", ""),
            "creator": (p.get("default_tags") or {}).get("DatabricksInstancePoolCreatorId", ""),
            "stats": p.get("stats") or {},
            "errors": [e.get("message", "") for e in (p.get("status") or {}).get("pending_instance_errors", [])]}


@router.get("/compute/pools")
def pools(request: Request, me: UiUser):
    return _render(request, "pools.html", pools=[_pool_row(p) for p in _svc(request, "pools").list()])


def _pool_form_page(request: Request, form: dict, error: str = "", status: int = 200):  # noqa: ANN202
    return _render(request, "pool_create.html", status_code=status, form=form, error=error,
                   runtimes=catalog.spark_versions_response()["versions"],
                   node_types=catalog.node_types_response()["node_types"])


@router.get("/compute/pools/create")
def pool_create_form(request: Request, me: UiUser):
    return _pool_form_page(request, {"instance_pool_name": "", "node_type_id": "local.medium",
                                     "min_idle_instances": "0", "max_capacity": "",
                                     "idle_instance_autotermination_minutes": "60", "preloaded_spark_version": ""})


@router.post("/compute/pools/create", dependencies=[CsrfProtect])
def pool_create(request: Request, me: UiUser, instance_pool_name: str = Form(""), node_type_id: str = Form(""),
                min_idle_instances: str = Form("0"), max_capacity: str = Form(""),
                idle_instance_autotermination_minutes: str = Form("60"), preloaded_spark_version: str = Form("")):
    form = {"instance_pool_name": instance_pool_name, "node_type_id": node_type_id,
            "min_idle_instances": min_idle_instances, "max_capacity": max_capacity,
            "idle_instance_autotermination_minutes": idle_instance_autotermination_minutes,
            "preloaded_spark_version": preloaded_spark_version}
    try:
        body: dict = {"instance_pool_name": instance_pool_name.strip(), "node_type_id": node_type_id or None,
                      "min_idle_instances": _int_field(min_idle_instances, "Min Idle"),
                      "idle_instance_autotermination_minutes": _int_field(
                          idle_instance_autotermination_minutes, "Idle Instance Auto Termination")}
        if max_capacity.strip():
            body["max_capacity"] = _int_field(max_capacity, "Max Capacity")
        if preloaded_spark_version:
            body["preloaded_spark_versions"] = [preloaded_spark_version]
        pool_id = _svc(request, "pools").create(me, body)
    except BrickyardError as exc:
        return _pool_form_page(request, form, exc.message, _status(exc))
    return redirect(request, f"/compute/pools/{pool_id}", f"Instance pool {instance_pool_name.strip()} created.")


def _pool_ctx(request: Request, pool_id: str) -> dict:
    pool = _pool_row(_svc(request, "pools").get(pool_id))
    using = [c for c in _cluster_rows(request) if c["pool"] == pool_id]
    return {"pool": pool, "using": using}


@router.get("/compute/pools/{pool_id}")
def pool_page(request: Request, pool_id: str, me: UiUser):
    return _render(request, "pool.html", **_pool_ctx(request, pool_id))


@router.get("/compute/pools/{pool_id}/_stats")
def pool_stats(request: Request, pool_id: str, me: UiUser):
    return _render(request, "_pool_stats.html", **_pool_ctx(request, pool_id))


@router.post("/compute/pools/{pool_id}/delete", dependencies=[CsrfProtect])
def pool_delete(request: Request, pool_id: str, me: UiUser):
    name = _svc(request, "pools").get(pool_id)["instance_pool_name"]
    _svc(request, "pools").delete(me, pool_id)
    return redirect(request, "/compute/pools", f"Instance pool {name} deleted.")


# ---- a cluster's page ----------------------------------------------------------------------

def _cluster(request: Request, cluster_id: str) -> dict:
    c = _svc(request, "clusters").get(cluster_id)
    c["mode_label"] = _mode_label(c)
    for key in ("termination_reason", "spark_ui_url", "autoscale", "instance_pool_id", "node_type_id",
                "driver_node_type_id", "autotermination_minutes"):
        c.setdefault(key, None)
    for key in ("spark_conf", "spark_env_vars", "spec"):
        c[key] = c.get(key) or {}
    c["init_scripts"] = c.get("init_scripts") or []
    why = c["termination_reason"] or {}
    c["termination_by"] = (why.get("parameters") or {}).get("username", "")
    return c


def _may_manage(me: Principal, cluster: dict) -> bool:
    return me.is_admin or cluster.get("creator_user_name") == me.user_name


def _event_summary(event: dict) -> str:
    d = event.get("details") or {}
    parts = []
    if d.get("message"):
        parts.append(str(d["message"]))
    why = d.get("reason")
    if isinstance(why, dict) and why.get("code"):
        params = why.get("parameters") or {}
        extra = ", ".join(f"{k}={v}" for k, v in params.items() if k != "message")
        parts.append(f"Reason: {why['code']}" + (f" ({extra})" if extra else ""))
    if d.get("user"):
        parts.append(f"by {d['user']}")
    for key in ("current_num_workers", "target_num_workers"):
        if key in d:
            parts.append(f"{key.replace('_', ' ')}: {d[key]}")
    return " · ".join(parts)


def _events(request: Request, cluster_id: str) -> list[dict]:
    out = _svc(request, "clusters").events({"cluster_id": cluster_id, "limit": 50})
    return [{"timestamp": e["timestamp"], "type": e["type"], "summary": _event_summary(e)} for e in out["events"]]


def _libraries(request: Request, cluster_id: str) -> list[dict]:
    rows = []
    for s in _svc(request, "libraries").cluster_status(cluster_id)["library_statuses"]:
        lib = s["library"]
        kind = next(iter(lib))
        value = lib[kind]
        if kind == "pypi":
            name = value["package"] + (f" (from {value['repo']})" if value.get("repo") else "")
        elif kind == "maven":
            name = value["coordinates"] + (f" (from {value['repo']})" if value.get("repo") else "")
        else:
            name = value
        rows.append({"kind": kind, "name": name, "status": s["status"], "messages": s.get("messages") or [],
                     "library": json.dumps(lib, sort_keys=True)})
    return rows


def _cluster_page(request: Request, me: Principal, cluster_id: str, status: int = 200, **ctx):  # noqa: ANN003, ANN202
    cluster = _cluster(request, cluster_id)
    ctx.setdefault("lib_error", "")
    ctx.setdefault("lib_form", {"source": "pypi", "package": "", "repo": "", "coordinates": "", "maven_repo": "",
                                "exclusions": "", "dbfs_path": ""})
    ctx.setdefault("tab", request.query_params.get("tab", "configuration"))
    return _render(request, "cluster.html", status_code=status, cluster=cluster,
                   spec_json=json.dumps(cluster.get("spec") or {}, indent=2, sort_keys=True),
                   events=_events(request, cluster_id), libraries=_libraries(request, cluster_id),
                   can_manage=_may_manage(me, cluster), **ctx)


@router.get("/compute/{cluster_id}")
def cluster_page(request: Request, cluster_id: str, me: UiUser):
    return _cluster_page(request, me, cluster_id)


@router.get("/compute/{cluster_id}/_status")
def cluster_status(request: Request, cluster_id: str, me: UiUser):
    """The state line and the action buttons, polled by htmx."""
    cluster = _cluster(request, cluster_id)
    return _render(request, "_cluster_status.html", cluster=cluster, can_manage=_may_manage(me, cluster))


@router.get("/compute/{cluster_id}/_events")
def cluster_events(request: Request, cluster_id: str, me: UiUser):
    return _render(request, "_events.html", cluster={"cluster_id": cluster_id},
                   events=_events(request, cluster_id))


@router.get("/compute/{cluster_id}/_libraries")
def cluster_libraries(request: Request, cluster_id: str, me: UiUser):
    cluster = _cluster(request, cluster_id)
    return _render(request, "_libraries.html", cluster=cluster, libraries=_libraries(request, cluster_id),
                   can_manage=_may_manage(me, cluster))


@router.get("/compute/{cluster_id}/_driver_logs")
def driver_logs(request: Request, cluster_id: str, me: UiUser):
    cluster = _cluster(request, cluster_id)
    text, size = _svc(request, "clusters").driver_log_tail(me, cluster_id, LOG_TAIL_BYTES)
    note = (f"Last {min(size, LOG_TAIL_BYTES) // 1024} KB of {size // 1024} KB" if size
            else "The driver has not written a log yet.")
    return _render(request, "_driver_logs.html", cluster=cluster, log_text=text, log_note=note)


ACTIONS = {
    "start": ("start", "Cluster {name} is starting."),
    "restart": ("restart", "Cluster {name} is restarting."),
    "terminate": ("terminate", "Cluster {name} is terminating."),
}


@router.post("/compute/{cluster_id}/delete", dependencies=[CsrfProtect])
def cluster_delete(request: Request, cluster_id: str, me: UiUser):
    name = _cluster(request, cluster_id)["cluster_name"]
    _svc(request, "clusters").permanent_delete(me, cluster_id)
    return redirect(request, "/compute", f"Cluster {name} deleted.")


@router.post("/compute/{cluster_id}/{action}", dependencies=[CsrfProtect])
def cluster_action(request: Request, cluster_id: str, action: str, me: UiUser):
    if action not in ACTIONS:
        raise BrickyardError("ENDPOINT_NOT_FOUND", f"No action {action!r} for clusters.", 404)
    name = _cluster(request, cluster_id)["cluster_name"]
    method, message = ACTIONS[action]
    getattr(_svc(request, "clusters"), method)(me, cluster_id)
    return redirect(request, f"/compute/{cluster_id}", message.format(name=name))


@router.post("/compute/{cluster_id}/libraries/install", dependencies=[CsrfProtect])
def library_install(request: Request, cluster_id: str, me: UiUser, source: str = Form("pypi"),
                    package: str = Form(""), repo: str = Form(""), coordinates: str = Form(""),
                    maven_repo: str = Form(""), exclusions: str = Form(""), dbfs_path: str = Form(""),
                    upload: UploadFile | None = File(None)):
    lib_form = {"source": source, "package": package, "repo": repo, "coordinates": coordinates,
                "maven_repo": maven_repo, "exclusions": exclusions, "dbfs_path": dbfs_path}
    uploaded = None
    try:
        if source == "pypi":
            lib: dict = {"pypi": {"package": package.strip(), **({"repo": repo.strip()} if repo.strip() else {})}}
        elif source == "maven":
            excl = [e.strip() for e in exclusions.replace(",", "\n").splitlines() if e.strip()]
            lib = {"maven": {"coordinates": coordinates.strip(),
                             **({"repo": maven_repo.strip()} if maven_repo.strip() else {}),
                             **({"exclusions": excl} if excl else {})}}
        elif source == "dbfs":
            path = dbfs_path.strip()
            kind = "whl" if path.endswith(".whl") else "jar" if path.endswith(".jar") else \
                "requirements" if path.endswith(".txt") else None
            if kind is None:
                raise invalid("A DBFS library must be a .whl, .jar or requirements .txt file.")
            lib = {kind: path}
        elif source == "upload":
            if upload is None or not upload.filename:
                raise invalid("Choose a .whl or .jar file to upload.")
            name = SAFE_FILE_RE.sub("_", Path(upload.filename).name)
            kind = "whl" if name.endswith(".whl") else "jar" if name.endswith(".jar") else None
            if kind is None:
                raise invalid(f"{upload.filename}: only .whl and .jar files can be uploaded as libraries.")
            # Only the cluster's creator or an admin may change its libraries: check before storing the file.
            if not _may_manage(me, _cluster(request, cluster_id)):
                raise denied(f"Only the creator of cluster {cluster_id} or an admin may change its libraries.")
            uploaded = f"{UPLOAD_DIR}/{uuid.uuid4().hex}/{name}"
            writer = _svc(request, "dbfs").open_writer(uploaded, False)
            try:
                while chunk := upload.file.read(1 << 20):
                    writer.write(chunk)
                writer.commit()
            except BaseException:
                writer.abort()
                uploaded = None
                raise
            lib = {kind: uploaded}
        else:
            raise invalid("Library Source must be Upload, DBFS, PyPI or Maven.")
        _svc(request, "libraries").install(me, {"cluster_id": cluster_id, "libraries": [lib]})
    except BrickyardError as exc:
        if uploaded:
            try:
                _svc(request, "dbfs").delete(uploaded, False)
            except BrickyardError:
                pass
        return _cluster_page(request, me, cluster_id, _status(exc), lib_error=exc.message, lib_form=lib_form,
                             tab="libraries")
    label = next(iter(lib.values()))
    label = label.get("package") or label.get("coordinates") if isinstance(label, dict) else label
    return redirect(request, f"/compute/{cluster_id}?tab=libraries", f"Installing {label}.")


@router.post("/compute/{cluster_id}/libraries/uninstall", dependencies=[CsrfProtect])
def library_uninstall(request: Request, cluster_id: str, me: UiUser, library: str = Form("")):
    try:
        lib = json.loads(library)
    except ValueError:
        raise invalid("library must be a library object.") from None
    _svc(request, "libraries").uninstall(me, {"cluster_id": cluster_id, "libraries": [lib]})
    return redirect(request, f"/compute/{cluster_id}?tab=libraries",
                    "The library will be uninstalled when the cluster restarts.")
