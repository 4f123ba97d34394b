"""Workspace API 2.0: the folder tree, notebooks and files."""
from __future__ import annotations

import base64
import binascii
import json
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, opt_bool, opt_int, query_or_body
from brickyard.errors import BrickyardError, invalid
from brickyard.services.workspace import MAX_NOTEBOOK_BYTES, object_info, too_large

router = APIRouter(tags=["workspace"])
# Base64 of the largest allowed content plus room for the other fields and multipart framing.
MAX_IMPORT_REQUEST = MAX_NOTEBOOK_BYTES * 4 // 3 + 64 * 1024


@router.post("/api/2.0/workspace/mkdirs")
def mkdirs(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["tree"].mkdirs_as(sess, me, body.get("path"))
    return {}


@router.get("/api/2.0/workspace/list")
def list_objects(request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, {})
    after = opt_int(params, "notebooks_modified_after")
    with ws.store.session() as sess:
        objects = ws.services["tree"].list_as(sess, me, params.get("path"), after)
        return {"objects": [object_info(o) for o in objects]}


@router.get("/api/2.0/workspace/get-status")
def get_status(request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, {})
    with ws.store.session() as sess:
        obj = ws.services["tree"].status_as(sess, me, params.get("path"))
        if obj is None:
            return {"object_type": "DIRECTORY", "object_id": 0, "path": "/"}
        return object_info(obj)


@router.post("/api/2.0/workspace/delete")
def delete(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["tree"].delete_as(sess, me, body.get("path"), opt_bool(body, "recursive"))
    return {}


async def _read_capped(request: Request) -> bytes:
    """The request body, refused once it passes the import limit (declared or actual)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_IMPORT_REQUEST:
        raise too_large(f"The import request is larger than the {MAX_NOTEBOOK_BYTES} bytes content limit.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_IMPORT_REQUEST:
            raise too_large(f"The import request is larger than the {MAX_NOTEBOOK_BYTES} bytes content limit.")
    return bytes(body)


async def _import_fields(request: Request) -> tuple[dict, bytes]:
    """The import fields and the raw content, from a JSON body or a multipart form."""
    raw = await _read_capped(request)
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        async def stream():
            yield raw

        try:
            form = await MultiPartParser(request.headers, stream(), max_files=2, max_fields=16,
                                         max_part_size=MAX_IMPORT_REQUEST).parse()
        except MultiPartException as exc:
            raise BrickyardError("MALFORMED_REQUEST", f"Could not parse the multipart body: {exc.message}") from None
        fields = {k: v for k, v in form.items() if not isinstance(v, UploadFile)}
        part = form.get("content")
        if isinstance(part, UploadFile):
            content = await part.read()
        else:
            content = (part or "").encode()
        await form.close()
        return fields, content
    try:
        fields = json.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BrickyardError("MALFORMED_REQUEST", f"Could not parse request body as JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise BrickyardError("MALFORMED_REQUEST", "The request body must be a JSON object.")
    encoded = fields.get("content") or ""
    if not isinstance(encoded, str):
        raise invalid("Field content must be a base64 string.")
    encoded = "".join(encoded.split())
    if len(encoded) // 4 * 3 > MAX_NOTEBOOK_BYTES + 2:
        raise too_large(f"The content is larger than the {MAX_NOTEBOOK_BYTES} bytes import limit.")
    try:
        content = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("Field content is not valid base64.") from None
    return fields, content


@router.post("/api/2.0/workspace/import")
async def import_object(request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    fields, content = await _import_fields(request)
    overwrite = opt_bool(fields, "overwrite")

    def run() -> None:
        with ws.store.session() as sess:
            ws.services["tree"].import_object(
                sess, me, fields.get("path"), content, fields.get("format"), fields.get("language"), overwrite
            )

    await run_in_threadpool(run)
    return {}


@router.get("/api/2.0/workspace/export")
def export_object(request: Request, me: CurrentUser, ws: WorkspaceDep):  # noqa: ANN201
    params = query_or_body(request, {})
    direct = opt_bool(params, "direct_download")
    with ws.store.session() as sess:
        out = ws.services["tree"].export_object(sess, me, params.get("path"), params.get("format"))
    if direct:
        ascii_name = out.filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
        disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(out.filename)}"
        return Response(out.content, media_type=out.media_type, headers={"Content-Disposition": disposition})
    return {"content": base64.b64encode(out.content).decode("ascii"), "file_type": out.file_type}
