"""Sign-in, sign-out and the workspace home (with Databricks' hash routes, see static/ui.js)."""
from __future__ import annotations

import logging
import secrets

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from brickyard.errors import BrickyardError
from brickyard.ui.core import (
    SESSION_COOKIE,
    CsrfProtect,
    UiUser,
    current_user,
    is_https,
    redirect,
    render,
    safe_next,
    session_id,
    ui_router,
    workspace,
)

router = ui_router()
log = logging.getLogger("brickyard.ui")

LOGIN_COOKIE = "by_login"  # a random nonce binding the login form to this browser (login CSRF)


def _login_nonce_ok(request: Request, form_token: str | None) -> bool:
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce or not form_token:
        return False
    return workspace(request).keyring.verify("login\x00" + nonce, form_token)


def _login_page(request: Request, next_url: str, error: str = "", user_name: str = "", status: int = 200,
                tab: str = "password") -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "login.html", status_code=status, next_url=next_url, error=error,
                      user_name=user_name, tab=tab,
                      login_token=workspace(request).keyring.sign("login\x00" + nonce))
    response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="lax", secure=is_https(request),
                        path="/login", max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request, next: str = "/"):  # noqa: A002 - the query parameter's name
    target = safe_next(next)
    if current_user(request) is not None:
        return RedirectResponse(target, status_code=303)
    return _login_page(request, target)


@router.post("/login")
async def login(request: Request):
    form = await request.form()
    field = lambda name: form.get(name) if isinstance(form.get(name), str) else ""  # noqa: E731
    target = safe_next(field("next"))
    method = "token" if field("method") == "token" else "password"
    if not _login_nonce_ok(request, field("login_token")):
        return _login_page(request, target, "The sign-in form expired; please try again.", status=403)
    ws = workspace(request)
    try:
        with ws.store.session() as sess:
            svc = ws.services["web_sessions"]
            if method == "token":
                sid, _ = svc.login_token(sess, field("token"))
            else:
                sid, _ = svc.login_password(sess, field("username").strip(), field("password"))
    except BrickyardError as exc:
        # Who tried and how, for the operator; never the password or the token.
        log.info("web sign-in refused (%s, user %r, from %s): %s", method, field("username")[:256],
                 request.client.host if request.client else "?", exc.error_code)
        message = exc.message
        if method == "token" and exc.error_code == "UNAUTHENTICATED":
            message = "Invalid or expired access token."
        return _login_page(request, target, message, user_name=field("username")[:256],
                           status=exc.http_status, tab=method)
    response = RedirectResponse(target, status_code=303)
    # A fresh id at every sign-in (no fixation); the old session, if any, ends.
    old = session_id(request)
    if old:
        with ws.store.session() as sess:
            ws.services["web_sessions"].logout(sess, old)
    response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="lax", secure=is_https(request), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout", dependencies=[CsrfProtect])
def logout(request: Request, me: UiUser):
    ws = workspace(request)
    with ws.store.session() as sess:
        ws.services["web_sessions"].logout(sess, session_id(request))
    response = redirect(request, "/login", "You are signed out.")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(request: Request, me: UiUser, o: str | None = None):
    ws = workspace(request)
    other_workspace = o is not None and o != ws.workspace_id
    return render(request, "home.html", active="home", other_workspace=other_workspace)
