"""Serving Endpoints API (2.0) and the invocations route (no /api prefix, as on Databricks)."""
from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

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
    return {"logs": _svc(ws).logs(me, name, served)}


@router.get(PREFIX + "/{name}/served-models/{served}/build-logs")
def build_logs(name: str, served: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return {"logs": _svc(ws).logs(me, name, served, build=True)}


@router.get(PREFIX + "/{name}/metrics")
def metrics(name: str, me: CurrentUser, ws: WorkspaceDep) -> PlainTextResponse:
    return PlainTextResponse(_svc(ws).export_metrics(me, name), media_type="text/plain; version=0.0.4")


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


async def _body(receive: Receive, limit: int) -> bytes | None:
    """The request body (None if the client left), or 413 past the limit (the rest is read and dropped
    so that the client sees the answer)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if size > limit:
        raise BrickyardError("REQUEST_ENTITY_TOO_LARGE",
                             f"The request payload is larger than the {limit >> 20} MB limit of model serving.")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Invocations:
    """POST /serving-endpoints/{name}/invocations as a plain ASGI app: the hot path of serving.

    Same checks as every route (the workspace token, the payload limit), without the per-request
    dependency solving and response objects of a FastAPI route.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _caller(Request(scope, receive))
        svc = _svc(scope["app"].state.workspace)
        body = await _body(receive, svc.settings.max_payload_bytes)
        if body is None:
            return
        status, headers, payload = await svc.invoke(scope["path_params"]["name"], body)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


router.routes.append(Route("/serving-endpoints/{name}/invocations", Invocations(), methods=["POST"],
                           include_in_schema=False))
