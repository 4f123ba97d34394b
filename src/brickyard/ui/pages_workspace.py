"""Workspace pages: the folder tree (Users, Shared), create folder, import (file or URL), export in
each format, move/rename/delete, and the notebook page (cells and outputs, Run on cluster,
Open in JupyterLab).

Everything goes through the workspace tree service with the signed-in Principal (its
permission rules), and "Run on cluster" through the Jobs service (runs/submit), as the API does.
"""
from __future__ import annotations

import ipaddress
import posixpath
import socket
from urllib.parse import quote, urlencode, urljoin, urlsplit

import requests
from fastapi import Depends, Form, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from brickyard.errors import BrickyardError, invalid
from brickyard.runtime import formats
from brickyard.services.common import now_ms
from brickyard.services.jobs_exec import ACTIVE
from brickyard.services.workspace import (
    DIRECTORY,
    FILE,
    MAX_NOTEBOOK_BYTES,
    NOTEBOOK,
    ROOT_FOLDERS,
    may_write,
    normalize_path,
    parent_of,
    require_write,
)
from brickyard.ui.core import CsrfProtect, UiUser, redirect, render, ui_router, workspace
from brickyard.ui.workspace_render import notebook_view

router = ui_router()

# Notebook metadata key where the page keeps the run it started and the last run it applied.
RUN_META = "brickyard_ui"
IMPORT_FORMATS = ("AUTO", "SOURCE", "JUPYTER", "DBC", "HTML")
EXPORT_FORMATS = (("SOURCE", "Source file"), ("JUPYTER", "IPython Notebook"), ("DBC", "DBC Archive"),
                  ("HTML", "HTML"))
# An import form: the content limit, base64-free, plus room for the other fields and framing.
MAX_IMPORT_FORM = MAX_NOTEBOOK_BYTES + 256 * 1024
URL_TIMEOUT = (5, 30)
URL_MAX_REDIRECTS = 5
DEFAULT_JUPYTER_PORT = 8888


def limit_body(max_bytes: int):  # noqa: ANN201
    """A dependency refusing a request whose declared body is larger than max_bytes (before parsing)."""
    def check(request: Request) -> None:
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            raise BrickyardError("MALFORMED_REQUEST", "The upload has no Content-Length.")
        if int(length) > max_bytes:
            raise BrickyardError("MAX_NOTEBOOK_SIZE_EXCEEDED",
                                 f"The import is larger than the {MAX_NOTEBOOK_BYTES} bytes limit.")
    return Depends(check)


def _home(me) -> str:  # noqa: ANN001
    return f"/Users/{me.user_name}"


def _url(path: str, base: str = "/workspace", **extra: object) -> str:
    return f"{base}?{urlencode({'path': path, **{k: v for k, v in extra.items() if v is not None}})}"


def _crumbs(path: str) -> list[dict]:
    crumbs, prefix = [{"name": "Workspace", "path": "/"}], ""
    for part in [p for p in path.split("/") if p]:
        prefix += "/" + part
        crumbs.append({"name": part, "path": prefix})
    return crumbs


def _tree(sess, tree, me, current: str) -> list[dict]:  # noqa: ANN001
    """The folder tree from the root, opened along the current folder."""
    chain = set()
    prefix = ""
    for part in [p for p in current.split("/") if p]:
        prefix += "/" + part
        chain.add(prefix)

    def build(path: str, depth: int) -> list[dict]:
        nodes = []
        for obj in tree.list_as(sess, me, path):
            if obj.object_type != DIRECTORY:
                continue
            is_open = obj.path in chain
            nodes.append({"name": posixpath.basename(obj.path), "path": obj.path, "current": obj.path == current,
                          "open": is_open, "children": build(obj.path, depth + 1) if is_open and depth < 12 else []})
        return nodes

    return build("/", 0)


def _rows(objects) -> list[dict]:  # noqa: ANN001
    order = {DIRECTORY: 0, NOTEBOOK: 1, FILE: 2}
    rows = [{"name": posixpath.basename(o.path), "path": o.path, "type": o.object_type,
             "language": (o.language or "").lower(), "modified": o.modified_at, "size": o.size or 0}
            for o in objects]
    return sorted(rows, key=lambda r: (order.get(r["type"], 3), r["name"].lower()))


def _protected(path: str) -> bool:
    """The root folders and users' home folders cannot be moved, renamed or deleted here."""
    return path in ("/",) + ROOT_FOLDERS or (path.startswith("/Users/") and path.count("/") == 2)


# -- the folder page ------------------------------------------------------------------------------

@router.get("/workspace")
def folder(request: Request, me: UiUser, path: str = ""):
    ws = workspace(request)
    tree = ws.services["tree"]
    path = normalize_path(path or _home(me))
    with ws.store.session() as sess:
        obj = tree.status_as(sess, me, path)
        if obj is not None and obj.object_type == NOTEBOOK:
            return redirect(request, _url(path, "/workspace/notebook"))
        if obj is not None and obj.object_type == FILE:
            return redirect(request, _url(parent_of(path)))
        rows = _rows(tree.list_as(sess, me, path))
        nav = _tree(sess, tree, me, path)
    return render(request, "workspace/folder.html", active="workspace", path=path, rows=rows, tree=nav,
                  crumbs=_crumbs(path), home=_home(me), writable=may_write(me, path + "/x"),
                  protected=_protected, import_formats=IMPORT_FORMATS, export_formats=EXPORT_FORMATS,
                  url=_url)


@router.post("/workspace/mkdirs", dependencies=[CsrfProtect])
def mkdirs(request: Request, me: UiUser, parent: str = Form(...), name: str = Form("")):
    name = name.strip()
    if not name or "/" in name or name in (".", ".."):
        raise invalid("A folder name is required and may not contain '/'.")
    path = normalize_path(f"{normalize_path(parent).rstrip('/')}/{name}")
    ws = workspace(request)
    with ws.store.session() as sess:
        if ws.services["tree"].get(sess, path) is not None:
            raise BrickyardError("RESOURCE_ALREADY_EXISTS", f"{path} already exists.")
        ws.services["tree"].mkdirs_as(sess, me, path)
    return redirect(request, _url(path), f"Folder {name} created.")


def _check_public_host(host: str, port: int) -> None:
    """Refuse hosts that resolve to link-local (cloud metadata), multicast or unspecified addresses."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise invalid(f"Cannot resolve {host}: {exc.strerror or exc}.") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if addr.is_link_local or addr.is_multicast or addr.is_unspecified or addr.is_reserved:
            raise invalid(f"Importing from {host} ({addr}) is not allowed.")


def fetch_url(url: str, max_bytes: int = MAX_NOTEBOOK_BYTES) -> tuple[bytes, str]:
    """GET an http(s) URL (redirects checked hop by hop), at most max_bytes; returns (content, file name)."""
    for _ in range(URL_MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid("Only http:// and https:// URLs can be imported.")
        _check_public_host(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        try:
            resp = requests.get(url, timeout=URL_TIMEOUT, stream=True, allow_redirects=False,
                                headers={"User-Agent": "brickyard-workspace-import"})
        except requests.RequestException as exc:
            raise invalid(f"Could not fetch {url}: {type(exc).__name__}.") from None
        with resp:
            if resp.is_redirect and resp.headers.get("location"):
                url = urljoin(url, resp.headers["location"])
                continue
            if resp.status_code != 200:
                raise invalid(f"Could not fetch {url}: HTTP {resp.status_code}.")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise BrickyardError("MAX_NOTEBOOK_SIZE_EXCEEDED",
                                     f"{url} is larger than the {max_bytes} bytes import limit.")
            body = bytearray()
            try:
                for chunk in resp.iter_content(64 * 1024):
                    body += chunk
                    if len(body) > max_bytes:
                        raise BrickyardError("MAX_NOTEBOOK_SIZE_EXCEEDED",
                                             f"{url} is larger than the {max_bytes} bytes import limit.")
            except requests.RequestException as exc:
                raise invalid(f"Could not fetch {url}: {type(exc).__name__}.") from None
            name = posixpath.basename(urlsplit(resp.url or url).path) or "Imported"
            return bytes(body), name
    raise invalid(f"Too many redirects fetching {url}.")


@router.post("/workspace/import", dependencies=[limit_body(MAX_IMPORT_FORM), CsrfProtect])
async def import_page(request: Request, me: UiUser):
    from starlette.concurrency import run_in_threadpool

    form = await request.form()
    parent = normalize_path(str(form.get("parent") or ""))
    fmt = str(form.get("format") or "AUTO")
    url = str(form.get("url") or "").strip()
    name = str(form.get("name") or "").strip()
    overwrite = form.get("overwrite") in ("on", "true", "1")
    upload = form.get("file")
    if fmt not in IMPORT_FORMATS:
        raise invalid(f"Unknown format {fmt[:30]!r}.")
    if isinstance(upload, UploadFile) and upload.filename:
        content = await upload.read(MAX_NOTEBOOK_BYTES + 1)
        filename = posixpath.basename(upload.filename.replace("\\", "/"))
    elif url:
        content, filename = await run_in_threadpool(fetch_url, url)
    else:
        raise invalid("Choose a file to import, or give a URL.")
    if len(content) > MAX_NOTEBOOK_BYTES:
        raise BrickyardError("MAX_NOTEBOOK_SIZE_EXCEEDED", f"The import is larger than {MAX_NOTEBOOK_BYTES} bytes.")
    target_name = name or filename
    if "/" in target_name or target_name in (".", ".."):
        raise invalid("The name may not contain '/'.")
    path = normalize_path(f"{parent.rstrip('/')}/{target_name}")
    if fmt != "AUTO":
        path = formats.strip_extension(path)
    ws = workspace(request)

    def run() -> str:
        with ws.store.session() as sess:
            return ws.services["tree"].import_object(sess, me, path, content, fmt, None, overwrite)

    created = await run_in_threadpool(run)
    return redirect(request, _url(parent), f"Imported {posixpath.basename(created)}.")


@router.get("/workspace/export")
def export(request: Request, me: UiUser, path: str, format: str = "SOURCE"):  # noqa: A002
    ws = workspace(request)
    with ws.store.session() as sess:
        out = ws.services["tree"].export_object(sess, me, path, format)
    ascii_name = out.filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(out.filename)}"
    return Response(out.content, media_type=out.media_type, headers={"Content-Disposition": disposition})


@router.post("/workspace/delete", dependencies=[CsrfProtect])
def delete(request: Request, me: UiUser, path: str = Form(...)):
    path = normalize_path(path)
    if _protected(path):
        raise invalid(f"{path} is a protected folder and cannot be deleted.")
    ws = workspace(request)
    with ws.store.session() as sess:
        ws.services["tree"].delete_as(sess, me, path, True)
    return redirect(request, _url(parent_of(path)), f"Deleted {posixpath.basename(path)}.")


def move_object(ws, me, source: object, target: object) -> str:  # noqa: ANN001
    """Move or rename a notebook, file or folder (with everything below it) in one transaction."""
    source, target = normalize_path(source), normalize_path(target)
    if _protected(source):
        raise invalid(f"{source} is a protected folder and cannot be moved or renamed.")
    if target == source:
        return target
    if target.startswith(source + "/"):
        raise invalid(f"Cannot move {source} into itself.")
    require_write(me, source)
    require_write(me, target)
    tree = ws.services["tree"]
    with ws.store.session() as sess:
        obj = tree.require(sess, source)
        if tree.get(sess, target) is not None:
            raise BrickyardError("RESOURCE_ALREADY_EXISTS", f"{target} already exists.")
        if not tree.is_dir(sess, parent_of(target)):
            raise BrickyardError("RESOURCE_DOES_NOT_EXIST", f"The folder {parent_of(target)} does not exist.")
        items = [obj] + sorted(tree.descendants(sess, source), key=lambda o: o.path)
        for item in items:
            new_path = target + item.path[len(source):]
            if item.object_type == DIRECTORY:
                tree.mkdirs(sess, new_path, owner_id=item.owner_id)
            else:
                tree.put(sess, new_path, item.object_type, item.content or b"", item.language, item.owner_id,
                         False)
        tree.delete(sess, source, recursive=True)
    return target


@router.post("/workspace/move", dependencies=[CsrfProtect])
def move(request: Request, me: UiUser, path: str = Form(...), new_path: str = Form("")):
    new_path = new_path.strip()
    if not new_path:
        raise invalid("The new path is required.")
    if not new_path.startswith("/"):  # a bare name renames in place
        new_path = f"{parent_of(normalize_path(path)).rstrip('/')}/{new_path}"
    target = move_object(workspace(request), me, path, new_path)
    return redirect(request, _url(parent_of(target)), f"Moved to {target}.")


# -- the notebook page -----------------------------------------------------------------------------

def _notebook(sess, ws, me, path: str):  # noqa: ANN001, ANN202
    obj = ws.services["tree"].status_as(sess, me, path)
    if obj is None or obj.object_type != NOTEBOOK:
        raise BrickyardError("RESOURCE_DOES_NOT_EXIST", f"{path} is not a notebook.")
    return obj, ws.services["tree"].notebook(obj)


def _runnable_clusters(ws, me) -> list[dict]:  # noqa: ANN001
    out = []
    for c in ws.services["clusters"].list():
        if c.get("state") != "RUNNING":
            continue
        try:
            ws.services["clusters"].check_attach(me, c["cluster_id"])
        except BrickyardError:
            continue
        out.append({"cluster_id": c["cluster_id"], "name": c.get("cluster_name") or c["cluster_id"]})
    return out


def _jupyter_link(path: str, port: int) -> str:
    return f"http://localhost:{port}/lab/tree{quote(path)}.ipynb"


@router.get("/workspace/notebook")
def notebook_page(request: Request, me: UiUser, path: str, jupyter_port: int = DEFAULT_JUPYTER_PORT):
    ws = workspace(request)
    path = normalize_path(path)
    pending = None
    with ws.store.session() as sess:
        _, nb = _notebook(sess, ws, me, path)
    meta = nb.metadata.get(RUN_META) if isinstance(nb.metadata.get(RUN_META), dict) else {}
    if meta.get("pending_run"):
        # A run started from this page: apply it if it ended while nobody watched.
        state = apply_run(ws, me, path, int(meta["pending_run"]))
        if state.get("done"):
            with ws.store.session() as sess:
                _, nb = _notebook(sess, ws, me, path)
            meta = nb.metadata.get(RUN_META) or {}
        else:
            pending = state
    if not 1 <= jupyter_port <= 65535:
        jupyter_port = DEFAULT_JUPYTER_PORT
    return render(request, "workspace/notebook.html", active="workspace", path=path, name=nb.name,
                  language=nb.language.lower(), cells=notebook_view(nb), crumbs=_crumbs(path),
                  clusters=_runnable_clusters(ws, me), pending=pending, last_run=meta.get("last_run"),
                  export_formats=EXPORT_FORMATS, writable=may_write(me, path), url=_url,
                  jupyter_url=_jupyter_link(path, jupyter_port), jupyter_port=jupyter_port,
                  workspace_url=ws.settings.base_url)


def _set_run_meta(ws, me, path: str, update) -> None:  # noqa: ANN001
    """Rewrite the notebook's page metadata (only when the user may write the notebook)."""
    if not may_write(me, path):
        return
    tree = ws.services["tree"]
    with ws.store.session() as sess:
        _, nb = _notebook(sess, ws, me, path)
        meta = dict(nb.metadata.get(RUN_META) or {})
        if update(nb, meta) is False:
            return
        nb.metadata[RUN_META] = meta
        tree.put(sess, path, NOTEBOOK, formats.dumps(nb), nb.language, None, True)


@router.post("/workspace/notebook/run", dependencies=[CsrfProtect])
def run_notebook(request: Request, me: UiUser, path: str = Form(...), cluster_id: str = Form("")):
    ws = workspace(request)
    path = normalize_path(path)
    if not cluster_id:
        raise invalid("Choose a running cluster to run the notebook on.")
    ws.services["clusters"].check_attach(me, cluster_id)
    with ws.store.session() as sess:
        _, nb = _notebook(sess, ws, me, path)
    run_id = ws.services["jobs"].submit(me, {
        "run_name": f"{nb.name} (notebook page)",
        "existing_cluster_id": cluster_id,
        "notebook_task": {"notebook_path": path},
    })

    def mark(nb, meta) -> None:  # noqa: ANN001
        meta["pending_run"] = run_id
        meta["pending_cluster"] = cluster_id

    _set_run_meta(ws, me, path, mark)
    return redirect(request, _url(path, "/workspace/notebook"), f"Run {run_id} started on {cluster_id}.")


def apply_run(ws, me, path: str, run_id: int) -> dict:  # noqa: ANN001
    """The run's state; once it has ended, its executed cells' outputs become the notebook's
    latest results (when the cells are still the ones that ran)."""
    try:
        run = ws.services["jobs"].get_run(me, run_id)
    except BrickyardError as exc:
        # A run this user may not see (started by someone else): say so, without polling it.
        return {"run_id": run_id, "done": False, "life": "UNKNOWN", "result": "", "message": exc.message,
                "run_page_url": "", "cluster_id": "", "hidden": True}
    state = run.get("state") or {}
    life = state.get("life_cycle_state", "")
    view = {"run_id": run_id, "done": life not in ACTIVE, "life": life, "result": state.get("result_state", ""),
            "message": state.get("state_message", ""), "run_page_url": run.get("run_page_url", ""),
            "cluster_id": (run.get("cluster_spec") or {}).get("existing_cluster_id", ""), "hidden": False}
    if not view["done"]:
        return view
    executed = None
    try:
        exported = ws.services["jobs"].export(me, run_id, "CODE")
        views = exported.get("views") or []
        if views:
            executed = formats.read_html(views[0]["content"].encode(), posixpath.basename(path))
    except (BrickyardError, formats.NotebookFormatError):
        executed = None

    def finish(nb, meta) -> bool:  # noqa: ANN001
        if meta.get("pending_run") != run_id:
            return False  # applied already, or another run started since
        applied = executed is not None and [c.source for c in executed.cells] == [c.source for c in nb.cells]
        if applied:
            for cell, done in zip(nb.cells, executed.cells):
                cell.outputs, cell.execution_count = done.outputs, done.execution_count
        meta.pop("pending_run", None)
        meta.pop("pending_cluster", None)
        meta["last_run"] = {"run_id": run_id, "result": view["result"] or life, "message": view["message"],
                            "at": now_ms(), "by": me.user_name, "cluster_id": view["cluster_id"],
                            "applied": applied, "run_page_url": view["run_page_url"]}
        return True

    _set_run_meta(ws, me, path, finish)
    return view


@router.get("/workspace/notebook/run-status")
def run_status(request: Request, me: UiUser, path: str, run_id: int):
    ws = workspace(request)
    path = normalize_path(path)
    view = apply_run(ws, me, path, run_id)
    if view["done"]:
        kind = "success" if view["result"] == "SUCCESS" else "error"
        message = f"Run {run_id} finished: {view['result'] or view['life']}."
        if view["message"] and kind == "error":
            message += f" {view['message']}"
        return redirect(request, _url(path, "/workspace/notebook"), message, kind)
    return render(request, "workspace/_run_status.html", path=path, pending=view)
