"""Serving Endpoints API (2.0) and the invocations route (no /api prefix, as on Databricks)."""
from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, bearer_token, get_principal
from brickyard.errors import BrickyardError

router = APIRouter(tags=["serving-endpoints"])
PREFIX = "/api/2.0/serving-endpoints"


def _svc(ws):  # noqa: ANN001, ANN202
    return ws.services["serving"]


@router.post(PREFIX)
def create(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return _svc(ws).create(me, body)


@router.get(PREFIX)
def list_endpoints(me: CurrentUser, ws: WorkspaceDep) -> dict:
    return {"endpoints": _svc(ws).list(me)}


@router.get(PREFIX + "/{name}")
def get(name: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return _svc(ws).get(me, name)


@router.delete(PREFIX + "/{name}")
def delete(name: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).delete(me, name)
    return {}


@router.put(PREFIX + "/{name}/config")
def update_config(name: str, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return _svc(ws).update_config(me, name, body)


@router.get(PREFIX + "/{name}/served-models/{served}/logs")
def logs(name: str, served: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return {"logs": _svc(ws).logs(name, served)}


@router.get(PREFIX + "/{name}/served-models/{served}/build-logs")
def build_logs(name: str, served: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return {"logs": _svc(ws).logs(name, served, build=True)}


@router.get(PREFIX + "/{name}/metrics")
def metrics(name: str, me: CurrentUser, ws: WorkspaceDep) -> PlainTextResponse:
    return PlainTextResponse(_svc(ws).metrics_text(name), media_type="text/plain; version=0.0.4")


async def _caller(request: Request):  # noqa: ANN202
    """The token's principal; a token checked in the last seconds is not looked up again."""
    token = bearer_token(request)
    if not token:
        return get_principal(request)  # raises UNAUTHENTICATED
    cache = request.app.state.workspace.services["mlflow"].auth_cache
    key = hashlib.sha256(b"serving:" + token.encode()).digest()
    principal = cache.get(key)
    if principal is None:
        principal = await run_in_threadpool(get_principal, request)
        cache.put(key, principal)
    return principal


async def _body(request: Request, limit: int) -> bytes:
    """The request body, or 413 past the limit (the rest is read and dropped so the client sees the answer)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) <= limit:
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise BrickyardError("REQUEST_ENTITY_TOO_LARGE",
                             f"The request payload is larger than the {limit >> 20} MB limit of model serving.")
    return b"".join(chunks)


@router.post("/serving-endpoints/{name}/invocations")
async def invocations(name: str, request: Request) -> Response:
    await _caller(request)
    svc = _svc(request.app.state.workspace)
    body = await _body(request, svc.settings.max_payload_bytes)
    status, headers, payload = await svc.invoke(name, body)
    return Response(payload, status_code=status, headers=headers, media_type="application/json")

