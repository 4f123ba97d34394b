"""What every page module uses: templates, the signed-in user, CSRF, flash messages, errors as pages.

A page module does:

    from brickyard.ui.core import UiUser, csrf_protect, redirect, render, ui_router
    router = ui_router()

    @router.get("/things")
    def things(request: Request, me: UiUser):
        ws = workspace(request)
        with ws.store.session() as sess:
            rows = ws.services["things"].list(sess, me)
        return render(request, "things/list.html", rows=rows)

Routes of `ui_router()` render a BrickyardError as a page with the error's message and status,
redirect to the login page when nobody is signed in, and carry the security headers.
"""
from __future__ import annotations

import base64
import json
import logging
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import HTMLResponse, RedirectResponse, Response

from brickyard.context import Workspace
from brickyard.errors import BrickyardError
from brickyard.services.users import Principal

log = logging.getLogger("brickyard.ui")

UI_DIR = Path(__file__).parent
TEMPLATES_DIR = UI_DIR / "templates"
STATIC_DIR = UI_DIR / "static"
STATIC_PREFIX = "/static"

SESSION_COOKIE = "by_session"
FLASH_COOKIE = "by_flash"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

# Pages load scripts, styles and frames from this origin only; notebook HTML outputs go in
# sandboxed iframes served by the workspace (a page may set its own policy with `csp=`).
DEFAULT_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
               "font-src 'self'; connect-src 'self'; frame-src 'self'; frame-ancestors 'self'; "
               "form-action 'self'; base-uri 'self'; object-src 'none'")

env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _fmt_ms(value: Any) -> str:
    """Epoch milliseconds as 'YYYY-MM-DD HH:MM' UTC ('' for none, 'never' for -1)."""
    import datetime as dt

    if value in (None, "", 0):
        return ""
    if value == -1:
        return "never"
    return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


env.filters["ms_time"] = _fmt_ms


# -- the workspace and the signed-in user -----------------------------------------------------

def workspace(request: Request) -> Workspace:
    return request.app.state.workspace


class LoginRequired(Exception):
    """Raised by UiUser when the request has no valid session."""


class CsrfRefused(Exception):
    """Raised by csrf_protect when a form or htmx request has no valid CSRF token."""


def session_id(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


def current_user(request: Request) -> Principal | None:
    """The user of the request's session cookie (None when not signed in); cached on the request."""
    if hasattr(request.state, "ui_principal"):
        return request.state.ui_principal
    ws = workspace(request)
    principal = None
    sid = session_id(request)
    if sid:
        with ws.store.session() as sess:
            principal = ws.services["web_sessions"].lookup(sess, sid)
    request.state.ui_principal = principal
    return principal


def ui_user(request: Request) -> Principal:
    principal = current_user(request)
    if principal is None:
        raise LoginRequired()
    return principal


UiUser = Annotated[Principal, Depends(ui_user)]


def csrf_token(request: Request) -> str:
    sid = session_id(request)
    return workspace(request).services["web_sessions"].csrf_token(sid) if sid else ""


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (Origin / Sec-Fetch-Site)."""
    site = request.headers.get("sec-fetch-site")
    if site and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null":
        parts = urlsplit(origin)
        host = request.headers.get("host", "")
        if parts.netloc != host:
            return False
    elif origin == "null":
        return False
    return True


async def csrf_protect(request: Request) -> None:
    """Dependency for every state-changing page route: a valid CSRF token for this session
    (form field `csrf_token` or header X-CSRF-Token, which htmx requests send) and no
    cross-site Origin."""
    token = request.headers.get(CSRF_HEADER)
    if not token:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
    ws = workspace(request)
    if not same_origin(request) or not ws.services["web_sessions"].check_csrf(session_id(request), token):
        raise CsrfRefused()


CsrfProtect = Depends(csrf_protect)


# -- flash messages ---------------------------------------------------------------------------

def flash(request: Request, message: str, kind: str = "success") -> None:
    """Show `message` on the next page rendered for this user (this one or after a redirect)."""
    if not hasattr(request.state, "flashes"):
        request.state.flashes = []
    request.state.flashes.append({"kind": kind, "message": message})


def _read_flash_cookie(request: Request) -> list[dict]:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or "." not in raw:
        return []
    payload, sig = raw.rsplit(".", 1)
    if not workspace(request).keyring.verify("flash\x00" + payload, sig):
        return []
    try:
        items = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError):
        return []
    return [i for i in items if isinstance(i, dict) and "message" in i][:10] if isinstance(items, list) else []


def _write_flash_cookie(request: Request, response: Response, items: list[dict]) -> None:
    payload = base64.urlsafe_b64encode(json.dumps(items[:10]).encode()).decode().rstrip("=")
    sig = workspace(request).keyring.sign("flash\x00" + payload)
    response.set_cookie(FLASH_COOKIE, f"{payload}.{sig}", httponly=True, samesite="lax",
                        secure=is_https(request), path="/")


def is_https(request: Request) -> bool:
    public = workspace(request).settings.public_url
    return request.url.scheme == "https" or public.startswith("https:")


def redirect(request: Request, url: str, message: str | None = None, kind: str = "success") -> Response:
    """303 to `url` (a local path), carrying the flash messages queued on the request."""
    if message:
        flash(request, message, kind)
    if request.headers.get("hx-request"):
        response: Response = Response(status_code=204, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    items = getattr(request.state, "flashes", [])
    if items:
        _write_flash_cookie(request, response, items)
    return response


# -- rendering --------------------------------------------------------------------------------

def nav_items(user: Principal | None) -> list[dict]:
    items = [
        {"key": "workspace", "label": "Workspace", "href": "/workspace"},
        {"key": "data", "label": "Data", "href": "/data"},
        {"key": "compute", "label": "Compute", "href": "/compute"},
        {"key": "jobs", "label": "Jobs", "href": "/jobs"},
        {"key": "experiments", "label": "Experiments", "href": "/ml/#/experiments"},
        {"key": "models", "label": "Models", "href": "/ml/#/models"},
        {"key": "serving", "label": "Serving", "href": "/serving"},
        {"key": "secrets", "label": "Secrets", "href": "/secrets"},
    ]
    bottom = [{"key": "settings", "label": "User Settings", "href": "/settings/tokens"}]
    if user is not None and user.is_admin:
        bottom.append({"key": "admin", "label": "Admin", "href": "/admin/users"})
    return [dict(i, bottom=False) for i in items] + [dict(i, bottom=True) for i in bottom]


def security_headers(response: Response, csp: str | None = None) -> Response:
    response.headers.setdefault("Content-Security-Policy", csp or DEFAULT_CSP)
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def render(request: Request, template: str, status_code: int = 200, csp: str | None = None,
           **ctx: Any) -> HTMLResponse:
    """Render `template` (a path under ui/templates) into a page response.

    The template sees `request`, `user` (the Principal or None), `csrf_token`, `flashes`,
    `nav`, `active` (the sidebar key; pass active="compute"), `workspace_id` and `ctx`.
    """
    user = getattr(request.state, "ui_principal", None)
    pending = _read_flash_cookie(request) + getattr(request.state, "flashes", [])
    request.state.flashes = []
    ws = workspace(request)
    context = {
        "request": request,
        "user": user,
        "csrf_token": csrf_token(request) if user is not None else "",
        "flashes": pending,
        "nav": nav_items(user),
        "active": ctx.pop("active", ""),
        "workspace_id": ws.workspace_id,
        "static": STATIC_PREFIX,
    }
    context.update(ctx)
    html = env.get_template(template).render(context)
    response = HTMLResponse(html, status_code=status_code)
    if request.cookies.get(FLASH_COOKIE):
        response.delete_cookie(FLASH_COOKIE, path="/")
    return security_headers(response, csp)


def error_page(request: Request, status: int, title: str, message: str, error_code: str = "") -> HTMLResponse:
    try:
        current_user(request)
    except BrickyardError:
        request.state.ui_principal = None
    return render(request, "error.html", status_code=status, title=title, message=message,
                  error_code=error_code)


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(target, safe="")


class UiRoute(APIRoute):
    """A page route: domain errors, missing login and CSRF refusals become pages, not JSON."""

    def get_route_handler(self):  # noqa: ANN201
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await inner(request)
            except LoginRequired:
                url = login_url(request)
                if request.headers.get("hx-request"):
                    return Response(status_code=204, headers={"HX-Redirect": url})
                return security_headers(RedirectResponse(url, status_code=303))
            except CsrfRefused:
                return error_page(request, 403, "Request refused",
                                  "This form was not sent from this workspace's own page, or your session "
                                  "changed since the page was loaded. Reload the page and try again.",
                                  "CSRF")
            except BrickyardError as exc:
                status = exc.http_status
                if status >= 500:
                    rid = getattr(request.state, "request_id", uuid.uuid4().hex)
                    log.error("page %s %s failed (request id %s): %s %s", request.method, request.url.path,
                              rid, exc.error_code, exc.message)
                return error_page(request, status, _title(status), exc.message, exc.error_code)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
                return error_page(request, 400, "Invalid request",
                                  f"Invalid value for {field or 'the form'}: {first.get('msg', 'invalid')}",
                                  "INVALID_PARAMETER_VALUE")
            except Exception as exc:  # noqa: BLE001 - the trace goes to the log, never to the page
                rid = getattr(request.state, "request_id", uuid.uuid4().hex)
                log.error("page %s %s failed (request id %s)", request.method, request.url.path, rid,
                          exc_info=exc)
                return error_page(request, 500, "Something went wrong",
                                  f"An internal error occurred (request id {rid}).", "INTERNAL_ERROR")
            return security_headers(response)

        return handler


def _title(status: int) -> str:
    return {400: "Invalid request", 401: "Not signed in", 403: "Permission denied", 404: "Not found",
            409: "Already exists", 413: "Too large", 429: "Too many requests",
            503: "Temporarily unavailable"}.get(status, "Error")


def ui_router(**kwargs: Any) -> APIRouter:
    """The router a page module exports as `router`: UiRoute routes, hidden from the OpenAPI schema."""
    return APIRouter(route_class=UiRoute, include_in_schema=False, **kwargs)


def safe_next(target: str | None, default: str = "/") -> str:
    """A redirect target after login: a local absolute path only (no scheme, host or //)."""
    if not target or not isinstance(target, str) or len(target) > 2048:
        return default
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(ord(c) < 0x20 or c in "\\" for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
