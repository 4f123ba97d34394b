"""Files API subset (/api/2.0/fs/...), signed URLs, and /files/<path> for FileStore."""
from __future__ import annotations

import mimetypes
from datetime import datetime, timezone
from email.utils import formatdate
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from brickyard.api.dbfs import receive_into
from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, opt_bool, opt_int, opt_str, query_or_body, req_str
from brickyard.errors import invalid, not_found
from brickyard.services.dbfs import SIGNED_ROUTE, ObjectFile, SignedUrlRejected
from brickyard.storage.dbfs import normalize

router = APIRouter(tags=["files"])
OCTETS = "application/octet-stream"


def _query(request: Request) -> dict:
    return dict(request.query_params)


def _base_url(request: Request, ws) -> str:  # noqa: ANN001
    """Links point where the client reached us, unless a public URL is configured."""
    return ws.settings.public_url or str(request.base_url)


def _expire_epoch(value: object) -> int | None:
    """Parse `expire_time`: RFC 3339 (what the SDK sends) or epoch seconds/milliseconds."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if text.isdigit():
        number = int(text)
        return number // 1000 if number > 10**11 else number
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise invalid(f"expire_time is not an RFC 3339 timestamp: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


# -- files -----------------------------------------------------------------------------------
@router.head("/api/2.0/fs/files/{path:path}", include_in_schema=False)
@router.get("/api/2.0/fs/files/{path:path}")
def download_file(path: str, request: Request, me: CurrentUser, ws: WorkspaceDep) -> Response:
    """Raw bytes; Range requests and HEAD (content-length, last-modified) come with FileResponse for local
    files, and are answered alike for files on object-store mounts (streamed from the store)."""
    target = ws.services["dbfs"].files_download("/" + path)
    if isinstance(target, ObjectFile):
        return _object_response(request, target)
    return FileResponse(target, media_type=OCTETS)


def _object_response(request: Request, obj: ObjectFile) -> Response:
    """A file on an object-store mount, as FileResponse answers for a local one: one byte range (206 with
    Content-Range; 416 past the end; 400 for a malformed Range), or the whole file; HEAD sends no body."""
    size = obj.stat.size
    modified = formatdate(obj.stat.mtime_ms / 1000, usegmt=True)
    headers = {"accept-ranges": "bytes", "last-modified": modified}
    status, start, end = 200, 0, size
    wanted, if_range = request.headers.get("range"), request.headers.get("if-range")
    if wanted is not None and (if_range is None or if_range == modified):
        try:
            # Starlette's own parser, so that both kinds of file accept and refuse the same Range headers.
            ranges = FileResponse._parse_range_header(wanted, size)
        except MalformedRangeHeader as exc:
            return PlainTextResponse(exc.content, status_code=400)
        except RangeNotSatisfiable:
            return PlainTextResponse("", status_code=416, headers={"Content-Range": f"bytes */{size}"})
        if len(ranges) == 1:  # several ranges: the whole file (a server may ignore Range)
            status, (start, end) = 206, ranges[0]
            headers["content-range"] = f"bytes {start}-{end - 1}/{size}"
    headers["content-length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=OCTETS)
    chunks = obj.chunks(start, end)
    first = next(chunks, b"")  # the store's request is made here: its error is answered as an API error
    return StreamingResponse(_chain(first, chunks), status_code=status, headers=headers, media_type=OCTETS)


def _chain(first: bytes, rest):  # noqa: ANN001, ANN202
    if first:
        yield first
    yield from rest


@router.put("/api/2.0/fs/files/{path:path}")
async def upload_file(path: str, request: Request, me: CurrentUser, ws: WorkspaceDep) -> Response:
    overwrite = opt_bool(_query(request), "overwrite", default=True)
    writer = ws.services["dbfs"].open_files_writer("/" + path, overwrite)
    await receive_into(request, writer, ws.settings.max_request_bytes)
    return Response(status_code=204)


@router.post("/api/2.0/fs/files/{path:path}")
def file_action(path: str, request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    """Multipart uploads are not offered: an empty answer makes the SDK fall back to one PUT."""
    action = _query(request).get("action", "")
    normalize("/" + path)
    if action == "initiate-upload":
        return {}
    raise invalid(f"Unsupported action {action!r}; upload the file with a single PUT.")


@router.delete("/api/2.0/fs/files/{path:path}")
def delete_file(path: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    ws.services["dbfs"].delete_file("/" + path)
    return {}


# -- directories -----------------------------------------------------------------------------
@router.put("/api/2.0/fs/directories/{path:path}")
def create_directory(path: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    ws.services["dbfs"].create_directory("/" + path)
    return {}


@router.head("/api/2.0/fs/directories/{path:path}")
def directory_metadata(path: str, me: CurrentUser, ws: WorkspaceDep) -> Response:
    ws.services["dbfs"].directory_stat("/" + path)
    return Response(status_code=200)


@router.get("/api/2.0/fs/directories/{path:path}")
def list_directory(path: str, request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = _query(request)
    entries, token = ws.services["dbfs"].list_directory(
        "/" + path, opt_int(params, "page_size"), opt_str(params, "page_token"))
    contents = []
    for files_path, info in entries:
        item = {"path": files_path + ("/" if info.is_dir else ""), "name": files_path.rsplit("/", 1)[-1],
                "is_directory": info.is_dir, "last_modified": info.mtime_ms}
        if not info.is_dir:
            item["file_size"] = info.size
        contents.append(item)
    out: dict = {"contents": contents}
    if token:
        out["next_page_token"] = token
    return out


@router.delete("/api/2.0/fs/directories/{path:path}")
def delete_directory(path: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    ws.services["dbfs"].delete_directory("/" + path)
    return {}


# -- signed URLs -----------------------------------------------------------------------------
@router.post("/api/2.0/fs/create-download-url")
def create_download_url(request: Request, me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    """Path and expire_time come as query parameters (SDK) or a JSON body (MLflow)."""
    params = query_or_body(request, body)
    svc = ws.services["dbfs"]
    path = req_str(params, "path")
    svc.file_stat(path)
    return svc.signed_url(_base_url(request, ws), "GET", path, _expire_epoch(params.get("expire_time")))


@router.post("/api/2.0/fs/create-upload-url")
def create_upload_url(request: Request, me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, body)
    return ws.services["dbfs"].signed_url(
        _base_url(request, ws), "PUT", req_str(params, "path"), _expire_epoch(params.get("expire_time")))


def _rejected(exc: SignedUrlRejected) -> Response:
    """Answer like S3 does, so that the SDK recognises an expired URL and asks for a new one."""
    code = "AccessDenied" if exc.expired else "SignatureDoesNotMatch"
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{escape(exc.message)}</Message></Error>")
    return Response(body, status_code=403, media_type="application/xml")


@router.api_route(SIGNED_ROUTE + "/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
def signed_download(path: str, request: Request, ws: WorkspaceDep) -> Response:
    svc = ws.services["dbfs"]
    q = _query(request)
    try:
        canon = svc.check_signed(request.method, "/" + path, q.get("expires"), q.get("signature"))
    except SignedUrlRejected as exc:
        return _rejected(exc)
    return FileResponse(svc.local_files_file(canon), media_type=OCTETS)


@router.put(SIGNED_ROUTE + "/{path:path}", include_in_schema=False)
async def signed_upload(path: str, request: Request, ws: WorkspaceDep) -> Response:
    svc = ws.services["dbfs"]
    q = _query(request)
    try:
        canon = svc.check_signed("PUT", "/" + path, q.get("expires"), q.get("signature"))
    except SignedUrlRejected as exc:
        return _rejected(exc)
    await receive_into(request, svc.open_files_writer(canon, overwrite=True), ws.settings.max_request_bytes)
    return Response(status_code=200)


# -- FileStore over HTTP ---------------------------------------------------------------------
@router.api_route("/files/{path:path}", methods=["GET", "HEAD"], include_in_schema=False)
def filestore(path: str, me: CurrentUser, ws: WorkspaceDep) -> FileResponse:
    """dbfs:/FileStore/<path>, read-only, for the caller's browser or scripts."""
    svc = ws.services["dbfs"]
    info = svc.get_status("/FileStore/" + path)
    if info.is_dir:
        raise not_found(f"No file exists at /files/{path}.")
    media = mimetypes.guess_type(info.path)[0] or OCTETS
    return FileResponse(svc.local_file(info.path), media_type=media)
