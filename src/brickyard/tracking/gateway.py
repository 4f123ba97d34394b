"""The route in front of MLflow: our token authentication, refusals, and the two URI dialects.

Every MLflow path family (/api/2.0/mlflow, /api/3.0/mlflow, /ajax-api, /api/2.0/mlflow-artifacts
and the UI under /ml/) reaches MLflow only through here, after the caller's bearer token (or,
for the MLflow UI in a browser, the web UI's session cookie: see COOKIE_PREFIXES) has been
checked. Clients that do not speak through the Databricks SDK see artifact locations as
`mlflow-artifacts:/...` (served by MLflow's proxy); Databricks clients see the stored `dbfs:/...`.
"""
from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

from brickyard.api.deps import bearer_token, get_principal
from brickyard.errors import BrickyardError
from brickyard.tracking import embed
from brickyard.tracking.artifacts import PROXY_ROUTE, canonical_uri, check_artifact_path, proxied_uri

UI_PREFIX = "/ml"
API_PREFIXES = ("/api/2.0/mlflow/", "/api/3.0/mlflow/", "/ajax-api/", "/api/2.0/mlflow-artifacts/")
# Features that make the server call out to other hosts (gateway, webhooks), run code or jobs
# on it (assistant, evaluation, scorers), or manage MLflow workspaces: not offered here.
REFUSED = re.compile(
    r"/(gateway|gateway-proxy|webhooks|jobs|assistant|prompt-optimization|demo|workspaces|mcp)(/|$)"
    r"|/genai/evaluate|/issues/invoke|/scorer/invoke|/scorers/online-config|/create-promptlab-run"
)
PATH_PARAMS = ("path", "artifact_path", "artifact_file_path", "artifact_directory_path")
URI_FIELDS = frozenset({"artifact_uri", "artifact_location", "source", "root_uri", "storage_location"})
STORE_MARKER = b"dbfs:/databricks/mlflow-tracking"
MAX_JSON_BODY = 16 << 20
# The MLflow UI at /ml/ runs in the browser on the web UI's login: its page, its relative
# ajax-api/graphql/artifact calls (all under /ml/) and MLflow's absolute /ajax-api/ calls accept
# the UI's session cookie. The REST families (/api/...) never do: they need a bearer token.
COOKIE_PREFIXES = (UI_PREFIX + "/", "/ajax-api/")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _cookie_principal(request: Request):  # noqa: ANN202
    """The web UI session's user for a browser call to the MLflow UI, or None."""
    if not request.url.path.startswith(COOKIE_PREFIXES):
        return None
    from brickyard.ui.core import current_user

    principal = current_user(request)
    if principal is not None and request.method not in SAFE_METHODS and not _same_origin_browser(request):
        raise BrickyardError("PERMISSION_DENIED", "Cross-site request refused: a state-changing call with the "
                             "web session must come from this workspace's own pages.")
    return principal


def _same_origin_browser(request: Request) -> bool:
    """A state-changing cookie call must prove it comes from our origin: the browser's
    Sec-Fetch-Site says same-origin, or its Origin header is this host (MLflow's fetches send both)."""
    from brickyard.ui.core import same_origin

    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is None and origin is None:
        return False
    return same_origin(request)


def _wants_login_page(request: Request) -> bool:
    """A browser opening an MLflow UI page (not an API call) is sent to the sign-in page instead of a 401."""
    if request.method != "GET" or not request.url.path.startswith(UI_PREFIX + "/"):
        return False
    if request.headers.get("sec-fetch-mode") == "navigate":
        return True
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "/ajax-api/" not in request.url.path


async def _authenticate(request: Request):  # noqa: ANN202
    token = bearer_token(request)
    if not token:
        principal = await run_in_threadpool(_cookie_principal, request)
        if principal is not None:
            return principal
    ws = request.app.state.workspace
    cache = ws.services["mlflow"].auth_cache
    key = hashlib.sha256(token.encode()).digest() if token else b""
    principal = cache.get(key) if token else None
    if principal is None:
        principal = await run_in_threadpool(get_principal, request)
        cache.put(key, principal)
    return principal


def mlflow_target(path: str) -> str | None:
    """The path MLflow serves for a workspace path, or None when it is not MLflow's."""
    if path.startswith(UI_PREFIX + "/"):
        return path[len(UI_PREFIX):]
    if path.startswith(API_PREFIXES):
        return path
    return None


def is_databricks_client(scope: Scope) -> bool:
    """MLflow with tracking URI `databricks` talks through the Databricks SDK."""
    for key, value in scope.get("headers", ()):
        if key == b"user-agent":
            return b"databricks-sdk" in value or b"databricks-cli" in value
    return False


def _check_paths(scope: Scope, target: str, ui: bool) -> None:
    raw = scope.get("raw_path") or scope["path"].encode()
    raw_text = raw.decode("latin-1")
    if ui:
        raw_text = raw_text[len(UI_PREFIX):]
    marker = "/mlflow-artifacts/"
    if marker in raw_text:
        check_artifact_path(raw_text.split(marker, 1)[1])
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in PATH_PARAMS and value:
            check_artifact_path(value)


def _rewrite_uris(node, fn):  # noqa: ANN001, ANN202
    if isinstance(node, dict):
        return {k: fn(v) if k in URI_FIELDS and isinstance(v, str) else _rewrite_uris(v, fn)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_uris(v, fn) for v in node]
    return node


async def _read_body(receive: Receive) -> bytes:
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BrickyardError("MALFORMED_REQUEST", "The client disconnected before the whole body arrived.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_JSON_BODY:
            raise BrickyardError("REQUEST_ENTITY_TOO_LARGE", "The request body is too large.")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _with_length(headers: list, length: int) -> list:
    return [(k, v) for k, v in headers if k != b"content-length"] + [(b"content-length", str(length).encode())]


async def _canonical_source(scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
    """A model version source given as mlflow-artifacts:/ or an http proxy URL is stored as dbfs:/."""
    raw = await _read_body(receive)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return scope, _replay(raw)  # MLflow answers malformed JSON itself
    source = body.get("source") if isinstance(body, dict) else None
    if isinstance(source, str) and (source.lower().startswith("mlflow-artifacts:")
                                    or (source.lower().startswith(("http:", "https:")) and PROXY_ROUTE in source)):
        body["source"] = canonical_uri(source)
        raw = json.dumps(body).encode()
        scope = dict(scope, headers=_with_length(scope["headers"], len(raw)))
    return scope, _replay(raw)


class _ResponseRewriter:
    """Buffers JSON answers to turn dbfs:/ store URIs into mlflow-artifacts:/ ones, and MLflow's
    HTML 404/405 pages into our JSON errors."""

    def __init__(self, send: Send, scope: Scope, rewrite_uris: bool):
        self.send = send
        self.scope = scope
        self.rewrite_uris = rewrite_uris
        self.start: dict | None = None
        self.chunks: list[bytes] = []
        self.mode = "pass"

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", ()))
            ctype = headers.get(b"content-type", b"")
            status = message["status"]
            if status in (404, 405) and not ctype.startswith(b"application/json"):
                self.mode = "error"
            elif self.rewrite_uris and ctype.startswith(b"application/json"):
                self.mode = "json"
            if self.mode == "pass":
                await self.send(message)
            else:
                self.start = message
            return
        if message["type"] != "http.response.body" or self.mode == "pass":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.chunks)
        if self.mode == "error":
            status = self.start["status"]
            code = "ENDPOINT_NOT_FOUND" if status == 404 else "BAD_REQUEST"
            what = "No API found for" if status == 404 else "Method not allowed:"
            body = json.dumps({"error_code": code, "message": f"{what} '{self.scope['method']} "
                               f"{self.scope['path']}'"}).encode()
            headers = [(k, v) for k, v in self.start.get("headers", ()) if k != b"content-type"]
            self.start = dict(self.start, headers=headers + [(b"content-type", b"application/json")])
        elif STORE_MARKER in body:
            try:
                body = json.dumps(_rewrite_uris(json.loads(body), proxied_uri)).encode()
            except (UnicodeDecodeError, json.JSONDecodeError):
                pass
        await self.send(dict(self.start, headers=_with_length(self.start.get("headers", []), len(body))))
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


async def serve(scope: Scope, receive: Receive, send: Send) -> None:
    """Authenticate, screen and forward one request to MLflow, bound to the request's workspace."""
    path = scope["path"]
    if path == UI_PREFIX:
        await RedirectResponse(UI_PREFIX + "/")(scope, receive, send)
        return
    target = mlflow_target(path)
    request = Request(scope, receive)
    if not bearer_token(request) and _wants_login_page(request):
        from brickyard.ui.core import current_user, login_url

        if await run_in_threadpool(current_user, request) is None:
            await RedirectResponse(login_url(request), status_code=303)(scope, receive, send)
            return
    principal = await _authenticate(request)
    if REFUSED.search(target):
        raise BrickyardError("ENDPOINT_NOT_FOUND", f"'{path}' is not offered by this workspace's MLflow server.")
    _check_paths(scope, target, ui=path.startswith(UI_PREFIX + "/"))
    inner = dict(scope, path=target, raw_path=target.encode(), root_path="")
    if scope["method"] == "POST" and target.endswith("/mlflow/model-versions/create"):
        inner, receive = await _canonical_source(inner, receive)
    service = request.app.state.workspace.services["mlflow"]
    bound, caller = embed.CURRENT.set(service), embed.CALLER.set(principal)
    try:
        await embed.mlflow_app()(inner, receive, _ResponseRewriter(send, scope, not is_databricks_client(scope)))
    finally:
        embed.CURRENT.reset(bound)
        embed.CALLER.reset(caller)


class MlflowRoute(BaseRoute):
    """Matches every MLflow path; added after the workspace's own routes, which win."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and (scope["path"] == UI_PREFIX or mlflow_target(scope["path"]) is not None):
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params):  # noqa: ANN003, ANN201
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve(scope, receive, send)


def mount(app) -> None:  # noqa: ANN001
    """Serve MLflow from `app` (call after every router is included)."""
    app.router.routes.append(MlflowRoute())
