"""DBFS API 2.0 and the raw /dbfs/<path> endpoints MLflow's DBFS artifact store uses."""
from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, json_body, opt_bool, opt_int, query_or_body, req_str
from brickyard.errors import BrickyardError, invalid
from brickyard.storage.dbfs import AtomicFile, FileStat

router = APIRouter(tags=["dbfs"])
COPY_CHUNK = 1 << 20


def file_info(info: FileStat) -> dict:
    return {"path": info.path, "is_dir": info.is_dir, "file_size": info.size,
            "modification_time": info.mtime_ms}


def decode_b64(value: str | None, name: str) -> bytes:
    if not value:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"Field {name} is not valid base64.") from None


async def receive_into(request: Request, writer: AtomicFile, max_bytes: int) -> None:
    """Stream the request body into `writer` and commit it; a short or dropped body leaves nothing."""
    expected = request.headers.get("content-length", "")
    try:
        async for chunk in request.stream():
            if chunk:
                writer.write(chunk)
                if writer.size > max_bytes:
                    raise BrickyardError("REQUEST_ENTITY_TOO_LARGE",
                                         f"The request body is larger than {max_bytes} bytes.")
        if expected.isdigit() and int(expected) != writer.size:
            raise BrickyardError("MALFORMED_REQUEST", "The request body is shorter than its Content-Length.")
        await run_in_threadpool(writer.commit)
    except ClientDisconnect:
        raise BrickyardError("MALFORMED_REQUEST", "The client disconnected before the whole body arrived.") from None
    finally:
        writer.abort()  # a no-op once committed


def _copy_and_commit(src, writer: AtomicFile) -> None:  # noqa: ANN001
    with writer:
        while chunk := src.read(COPY_CHUNK):
            writer.write(chunk)
        writer.commit()


@router.post("/api/2.0/dbfs/put")
async def put(request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    """JSON with base64 `contents` (SDK), or multipart with a `file` part (legacy CLI)."""
    svc = ws.services["dbfs"]
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        try:
            form = await request.form()
        except ClientDisconnect:
            raise BrickyardError("MALFORMED_REQUEST", "The client disconnected during the upload.") from None
        try:
            path = req_str(form, "path")
            overwrite = opt_bool(form, "overwrite")
            part = form.get("file")
            if part is None:
                part = form.get("contents")
            if isinstance(part, UploadFile):
                writer = svc.open_writer(path, overwrite)
                await run_in_threadpool(_copy_and_commit, part.file, writer)
            else:
                data = decode_b64(part, "contents")
                await run_in_threadpool(svc.put, path, data, overwrite)
        finally:
            await form.close()
        return {}
    try:
        body = await json_body(request)
    except ClientDisconnect:
        raise BrickyardError("MALFORMED_REQUEST", "The client disconnected during the upload.") from None
    path = req_str(body, "path")
    overwrite = opt_bool(body, "overwrite")
    contents = body.get("contents")
    if contents is not None and not isinstance(contents, str):
        raise invalid("Field contents must be a base64 string.")
    data = decode_b64(contents, "contents")
    await run_in_threadpool(svc.put, path, data, overwrite)
    return {}


@router.post("/api/2.0/dbfs/create")
def create(me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    handle = ws.services["dbfs"].create(me, req_str(body, "path"), opt_bool(body, "overwrite"))
    return {"handle": handle}


def _handle(body: dict) -> int:
    handle = opt_int(body, "handle")
    if handle is None:
        raise invalid("Missing required field: handle")
    return handle


@router.post("/api/2.0/dbfs/add-block")
def add_block(me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    handle = _handle(body)
    data = body.get("data")
    if data is not None and not isinstance(data, str):
        raise invalid("Field data must be a base64 string.")
    ws.services["dbfs"].add_block(me, handle, decode_b64(data, "data"))
    return {}


@router.post("/api/2.0/dbfs/close")
def close(me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    ws.services["dbfs"].close_handle(me, _handle(body))
    return {}


@router.get("/api/2.0/dbfs/read")
def read(request: Request, me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, body)
    data = ws.services["dbfs"].read(req_str(params, "path"), opt_int(params, "offset"), opt_int(params, "length"))
    return {"bytes_read": len(data), "data": base64.b64encode(data).decode("ascii")}


@router.get("/api/2.0/dbfs/list")
def list_files(request: Request, me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, body)
    entries = ws.services["dbfs"].list(req_str(params, "path"))
    # Databricks leaves `files` out for an empty directory; every client copes with that.
    return {"files": [file_info(e) for e in entries]} if entries else {}


@router.get("/api/2.0/dbfs/get-status")
def get_status(request: Request, me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, body)
    return file_info(ws.services["dbfs"].get_status(req_str(params, "path")))


@router.post("/api/2.0/dbfs/mkdirs")
def mkdirs(me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    ws.services["dbfs"].mkdirs(req_str(body, "path"))
    return {}


@router.post("/api/2.0/dbfs/delete")
def delete(me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    ws.services["dbfs"].delete(req_str(body, "path"), opt_bool(body, "recursive"))
    return {}


@router.post("/api/2.0/dbfs/move")
def move(me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    ws.services["dbfs"].move(req_str(body, "source_path"), req_str(body, "destination_path"))
    return {}


@router.post("/dbfs/{path:path}", include_in_schema=False)
async def raw_upload(path: str, request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    """The raw body becomes the file (MLflow's DbfsRestArtifactRepository); overwrites by default."""
    overwrite = opt_bool(dict(request.query_params), "overwrite", default=True)
    writer = ws.services["dbfs"].open_writer("/" + path, overwrite)
    await receive_into(request, writer, ws.settings.max_request_bytes)
    return {}


@router.api_route("/dbfs/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
def raw_download(path: str, me: CurrentUser, ws: WorkspaceDep) -> FileResponse:
    local = ws.services["dbfs"].local_file("/" + path)
    return FileResponse(local, media_type="application/octet-stream")
