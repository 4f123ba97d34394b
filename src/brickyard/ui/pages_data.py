"""Data pages: the DBFS browser (list, download, delete) and Upload Data (several files with
progress bars into dbfs:/FileStore/shared_uploads/<user>/, then the pandas and Spark snippets
Databricks shows for them). Everything goes through the DBFS service, as the DBFS API does.
"""
from __future__ import annotations

import posixpath
import re
import threading
from urllib.parse import quote, urlencode

from fastapi import Form, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, StreamingResponse

from brickyard.errors import BrickyardError, invalid
from brickyard.storage.dbfs import normalize
from brickyard.ui.core import CsrfProtect, UiUser, redirect, render, ui_router, workspace

router = ui_router()

FILESTORE = "/FileStore"
READ_CHUNK = 1 << 20
MAX_SNIPPET_FILES = 100
# Databricks' upload dialog renames what is not a letter, digit, '_' or '.' ("winequality-red.csv"
# becomes "winequality_red.csv"), and the lab's notebooks read the renamed files.
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.]")
# A name already taken keeps its file: the upload gets "-1", "-2", ... before its extension
# (Databricks' "winequality_red-1.csv"). Names are chosen and installed under this lock, so two
# uploads of one name into one folder at the same time get two names.
_NAME_LOCK = threading.Lock()
MAX_NAME_SUFFIX = 10_000
# The names an upload can end up with (safe_name's, plus the clash suffix).
_FINAL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*(?:-\d+(?:\.[A-Za-z0-9_.]*)?)?")


def upload_dir_for(me) -> str:  # noqa: ANN001
    """The default target below /FileStore, as Databricks fills it in: shared_uploads/<user>/."""
    return f"shared_uploads/{me.user_name}/"


def safe_name(name: str) -> str:
    base = posixpath.basename(name.replace("\\", "/")).strip()
    clean = _UNSAFE_NAME.sub("_", base).lstrip(".")
    if not clean or set(clean) <= {"_", "."}:
        raise invalid(f"The file name {name[:100]!r} cannot be used.")
    return clean


def with_suffix(name: str, n: int) -> str:
    """name-n, before the extension: winequality_red.csv -> winequality_red-1.csv."""
    stem, ext = posixpath.splitext(name)
    return f"{stem}-{n}{ext}"


def free_name(svc, folder: str, name: str) -> str:  # noqa: ANN001
    """`name`, or the first of name-1, name-2, ... that is not taken in `folder`."""
    try:
        taken = {posixpath.basename(e.path) for e in svc.list(folder)}
    except BrickyardError as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        taken = set()  # a new folder
    if name not in taken:
        return name
    for n in range(1, MAX_NAME_SUFFIX):
        candidate = with_suffix(name, n)
        if candidate not in taken:
            return candidate
    raise BrickyardError("RESOURCE_ALREADY_EXISTS", f"{folder} already holds {MAX_NAME_SUFFIX} files named like {name}.")


def target_dir(relative: str) -> str:
    """A folder below /FileStore from the dialog's field (a relative path; '..' refused)."""
    rel = (relative or "").strip().strip("/")
    if any(p in ("..",) for p in rel.split("/")):
        raise invalid("The target directory may not contain '..'.")
    return normalize(f"{FILESTORE}/{rel}" if rel else FILESTORE)


def _parent(path: str) -> str:
    return posixpath.dirname(path) or "/"


def _crumbs(path: str) -> list[dict]:
    crumbs, prefix = [{"name": "dbfs:", "path": "/"}], ""
    for part in [p for p in path.split("/") if p]:
        prefix += "/" + part
        crumbs.append({"name": part, "path": prefix})
    return crumbs


def _data_url(path: str) -> str:
    return "/data?" + urlencode({"path": path})


# -- the DBFS browser ----------------------------------------------------------------------------

@router.get("/data")
def browse(request: Request, me: UiUser, path: str = "/"):
    ws = workspace(request)
    svc = ws.services["dbfs"]
    path = normalize(path or "/")
    info = svc.get_status(path)
    if not info.is_dir:
        return redirect(request, _data_url(_parent(info.path)))
    entries = sorted(svc.list(info.path), key=lambda e: (not e.is_dir, e.path.lower()))
    rows = [{"name": posixpath.basename(e.path), "path": e.path, "is_dir": e.is_dir, "size": e.size,
             "mtime": e.mtime_ms} for e in entries]
    return render(request, "data/browse.html", active="data", path=info.path, rows=rows, crumbs=_crumbs(info.path),
                  data_url=_data_url, human=human_size)


def human_size(size: int | None) -> str:
    value = float(size or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


@router.get("/data/download")
def download(request: Request, me: UiUser, path: str):
    svc = workspace(request).services["dbfs"]
    info = svc.get_status(path)
    if info.is_dir:
        raise invalid(f"{info.path} is a directory.")

    def chunks():  # noqa: ANN202
        offset = 0
        while True:
            data = svc.read(info.path, offset, READ_CHUNK)
            if not data:
                return
            offset += len(data)
            yield data

    name = posixpath.basename(info.path)
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    headers = {"Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}",
               "Content-Length": str(info.size)}
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=headers)


@router.post("/data/delete", dependencies=[CsrfProtect])
def delete(request: Request, me: UiUser, path: str = Form(...)):
    svc = workspace(request).services["dbfs"]
    path = normalize(path)
    if path in ("/", FILESTORE):
        raise invalid(f"{path} cannot be deleted from here.")
    svc.delete(path, True)
    return redirect(request, _data_url(_parent(path)), f"Deleted dbfs:{path}.")


# -- Upload Data ---------------------------------------------------------------------------------

@router.get("/data/upload")
def upload_page(request: Request, me: UiUser, dir: str = ""):  # noqa: A002
    return render(request, "data/upload.html", active="data", target=dir or upload_dir_for(me))


@router.post("/data/upload/file", dependencies=[CsrfProtect])
async def upload_file(request: Request, me: UiUser, dir: str = "", name: str = ""):  # noqa: A002
    """One file as the raw request body (the page's XHR, with upload progress); JSON answer.

    A file of the same name in the folder is kept: this one gets the first free name-N (chosen when
    the upload is complete), and the answer says which.
    """
    ws = workspace(request)
    svc = ws.services["dbfs"]
    try:
        folder = target_dir(dir or upload_dir_for(me))
        clean = safe_name(name)
        final = await run_in_threadpool(free_name, svc, folder, clean)
        path = f"{folder}/{final}"
        limit = ws.settings.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BrickyardError("REQUEST_ENTITY_TOO_LARGE", f"{name} is larger than {limit} bytes.")
        writer = svc.open_writer(path, False)  # never overwrites (also refuses a directory of that name)
        try:
            async for chunk in request.stream():
                if chunk:
                    writer.write(chunk)
                    if writer.size > limit:
                        raise BrickyardError("REQUEST_ENTITY_TOO_LARGE", f"{name} is larger than {limit} bytes.")
            if declared.isdigit() and int(declared) != writer.size:
                raise BrickyardError("MALFORMED_REQUEST", "The upload is shorter than its Content-Length.")
            final = await run_in_threadpool(_install, svc, writer, folder, clean)
            path = f"{folder}/{final}"
        except ClientDisconnect:
            raise BrickyardError("MALFORMED_REQUEST", "The browser disconnected during the upload.") from None
        finally:
            writer.abort()  # a no-op once committed
        size = writer.size
    except BrickyardError as exc:
        return JSONResponse({"error_code": exc.error_code, "message": exc.message}, status_code=exc.http_status)
    return JSONResponse({"path": f"dbfs:{path}", "name": final, "original": name, "renamed": final != name,
                         "kept_existing": final != clean, "size": size})


def _install(svc, writer, folder: str, clean: str) -> str:  # noqa: ANN001
    """Commit the upload under the first free name (another upload may have taken the one chosen at
    its start); the name it got."""
    with _NAME_LOCK:
        final = free_name(svc, folder, clean)
        writer.path = f"{folder}/{final}"  # the temp file is installed under its path at commit
        writer.commit()
    return final


def snippets(paths: list[str]) -> dict:
    """The notebook code Databricks shows after an upload, one line per file (df1, df2, ...)."""
    spark, pandas, rows = [], ["import pandas as pd"], []
    for i, path in enumerate(paths, 1):
        ext = posixpath.splitext(path)[1].lower()
        dbfs, local = f"dbfs:{path}", f"/dbfs{path}"
        if ext in (".csv", ".tsv", ".txt") or not ext:
            sp = f'df{i} = spark.read.format("csv").option("header", "true").load("{dbfs}")'
            pd_line = f'df{i} = pd.read_csv("{local}")'
        elif ext == ".json":
            sp = f'df{i} = spark.read.format("json").load("{dbfs}")'
            pd_line = f'df{i} = pd.read_json("{local}")'
        elif ext == ".parquet":
            sp = f'df{i} = spark.read.format("parquet").load("{dbfs}")'
            pd_line = f'df{i} = pd.read_parquet("{local}")'
        elif ext in (".xlsx", ".xls"):
            sp = f'df{i} = spark.createDataFrame(pd.read_excel("{local}"))'
            pd_line = f'df{i} = pd.read_excel("{local}")'
        else:
            sp = f'df{i} = spark.read.format("binaryFile").load("{dbfs}")'
            pd_line = f'data{i} = open("{local}", "rb").read()'
        spark.append(sp)
        pandas.append(pd_line)
        rows.append({"path": path, "dbfs": dbfs, "local": local, "spark": sp, "pandas": f"import pandas as pd\n{pd_line}",
                     "index": i})
    return {"spark": "\n".join(spark), "pandas": "\n".join(pandas), "files": rows}


@router.get("/data/upload/done")
def upload_done(request: Request, me: UiUser, dir: str = "",  # noqa: A002
                file: list[str] = Query(default=[])):  # noqa: B008
    svc = workspace(request).services["dbfs"]
    folder = target_dir(dir or upload_dir_for(me))
    if not file:
        return redirect(request, "/data/upload", "Upload some files first.", "info")
    paths = []
    for name in file[:MAX_SNIPPET_FILES]:
        # The names the uploads answered with (a "-1" clash suffix included); others as upload renames them.
        path = f"{folder}/{name if _FINAL_NAME.fullmatch(name) else safe_name(name)}"
        svc.get_status(path)  # each file must be there
        paths.append(path)
    return render(request, "data/done.html", active="data", folder=folder, snippet=snippets(paths),
                  data_url=_data_url)
