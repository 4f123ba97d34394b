"""The application factory: one FastAPI app per workspace, nothing built at import time."""
from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from brickyard.context import Workspace, open_workspace
from brickyard.errors import BrickyardError
from brickyard.settings import Settings

log = logging.getLogger("brickyard")


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status, headers=headers)


async def _brickyard_error(request: Request, exc: BrickyardError) -> JSONResponse:
    if exc.http_status >= 500:
        request_id = getattr(request.state, "request_id", uuid.uuid4().hex)
        log.error("request %s %s failed (request id %s): %s %s", request.method, request.url.path, request_id,
                  exc.error_code, exc.message)
        return _error(exc.http_status, exc.error_code, f"{exc.message} (request id {request_id})",
                      {"x-request-id": request_id})
    return _error(exc.http_status, exc.error_code, exc.message)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
    message = f"Invalid value for {field or 'request'}: {first.get('msg', 'invalid')}"
    return _error(400, "INVALID_PARAMETER_VALUE", message)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        from brickyard.ui import not_found_page

        page = await not_found_page(request)  # a browser opening an unknown page gets a page
        if page is not None:
            return page
        return _error(404, "ENDPOINT_NOT_FOUND", f"No API found for '{request.method} {request.url.path}'")
    if exc.status_code == 405:
        return _error(405, "BAD_REQUEST", f"Method {request.method} is not allowed for {request.url.path}")
    return _error(exc.status_code, "BAD_REQUEST", str(exc.detail))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", uuid.uuid4().hex)
    # The stack trace goes to the log, never to the client.
    log.error("request %s %s failed (request id %s)", request.method, request.url.path, request_id,
              exc_info=exc)
    return _error(500, "INTERNAL_ERROR", f"Internal error; request id {request_id}.",
                  {"x-request-id": request_id})


OWN_SIZE_LIMITS = frozenset({"/api/2.0/workspace/import"})

ERROR_HANDLERS = (
    (BrickyardError, _brickyard_error),
    (RequestValidationError, _validation_error),
    (StarletteHTTPException, _http_error),
    (Exception, _unexpected_error),
)


def _collapse_leading_slashes(scope: Scope) -> None:
    """`https://host//api/2.0/clusters/list` (a host ending in '/' joined to '/api/...', as the seed lab's own
    curl calls do) is routed as `/api/2.0/clusters/list`, as Databricks does. Only the leading run of slashes
    is collapsed: slashes inside a path (a DBFS or artifact path) are the route's business."""
    path = scope.get("path", "")
    if path.startswith("//"):
        scope["path"] = "/" + path.lstrip("/")
        raw = scope.get("raw_path")
        if isinstance(raw, bytes) and raw.startswith(b"//"):
            scope["raw_path"] = b"/" + raw.lstrip(b"/")


class RequestContext:
    """A request id on every request and response, the workspace's body limit, the last line of defence;
    repeated leading slashes of the path collapsed before routing.

    Plain ASGI rather than an `http` middleware: no extra task and body streams per request.
    """

    def __init__(self, app, max_bytes: int):  # noqa: ANN001
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            _collapse_leading_slashes(scope)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = length = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")
            elif key == b"content-length":
                length = value
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        # Notebook imports answer an oversized upload themselves (400 MAX_NOTEBOOK_SIZE_EXCEEDED).
        if length and length.isdigit() and int(length) > self.max_bytes and scope["path"] not in OWN_SIZE_LIMITS:
            response = _error(413, "REQUEST_ENTITY_TOO_LARGE",
                              f"The request body is larger than {self.max_bytes} bytes.")
            await response(scope, receive, send)
            return
        tag = request_id.encode("latin-1")
        started = False

        async def send_tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers + [(b"x-request-id", tag)]}
            await send(message)

        try:
            await self.app(scope, receive, send_tagged)
        except Exception as exc:  # noqa: BLE001 - last line of defence, see _unexpected_error
            if started:
                raise
            response = await _unexpected_error(Request(scope), exc)
            await response(scope, receive, send_tagged)


def create_app(settings: Settings | None = None, workspace: Workspace | None = None) -> FastAPI:
    """Build the app for a workspace (opened from the settings when not given)."""
    ws = workspace or open_workspace(settings or Settings())
    app = FastAPI(
        title="Brickyard workspace",
        version="0.1.0",
        description="Databricks-compatible REST API (2.0/2.1) served by Brickyard.",
        docs_url="/api-docs",
        redoc_url=None,
    )
    app.state.workspace = ws
    for exc_type, handler in ERROR_HANDLERS:
        app.add_exception_handler(exc_type, handler)

    app.add_middleware(RequestContext, max_bytes=ws.settings.max_request_bytes)

    from brickyard.api import routers

    for router in routers():
        app.include_router(router)
    from brickyard import ui

    ui.mount(app)  # the web UI's pages and static files (before MLflow's catch-all route)
    from brickyard.tracking.gateway import mount as mount_mlflow

    mount_mlflow(app)  # after every router: the workspace's own MLflow routes win

    @app.on_event("shutdown")
    def _close() -> None:  # pragma: no cover - exercised by process exit
        ws.close()

    return app
