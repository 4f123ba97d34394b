"""User Settings: personal access tokens (generate, shown once; list; revoke) and the password."""
from __future__ import annotations

from fastapi import Form, Request
from starlette.responses import RedirectResponse

from brickyard.errors import BrickyardError, invalid
from brickyard.services.users import check_password
from brickyard.ui.core import CsrfProtect, UiUser, redirect, render, ui_router, workspace

router = ui_router()
MAX_DAYS = 100 * 365


@router.get("/settings")
def settings_home(request: Request, me: UiUser):
    return RedirectResponse("/settings/tokens", status_code=303)


def _tokens_page(request: Request, me, status: int = 200, **ctx):  # noqa: ANN001
    ws = workspace(request)
    with ws.store.session() as sess:
        rows = [{"token_id": t.token_id, "comment": t.comment, "created": t.creation_time, "expires": t.expiry_time}
                for t in ws.services["tokens"].list_own(sess, me)]
    ctx.setdefault("error", "")
    ctx.setdefault("new_token", None)
    ctx.setdefault("form", {"comment": "", "lifetime_days": "90"})
    return render(request, "settings/tokens.html", status_code=status, active="settings", tokens=rows, **ctx)


@router.get("/settings/tokens")
def tokens(request: Request, me: UiUser):
    return _tokens_page(request, me)


@router.post("/settings/tokens", dependencies=[CsrfProtect])
def generate_token(request: Request, me: UiUser, comment: str = Form(""), lifetime_days: str = Form("")):
    ws = workspace(request)
    form = {"comment": comment, "lifetime_days": lifetime_days}
    try:
        days = lifetime_days.strip()
        if days and (not days.isdigit() or not 0 < int(days) <= MAX_DAYS):
            raise invalid(f"Lifetime must be a whole number of days between 1 and {MAX_DAYS}, or empty for none.")
        lifetime = int(days) * 86400 if days else None
        with ws.store.session() as sess:
            owner = ws.services["users"].get(sess, me.id)
            value, tok = ws.services["tokens"].create(sess, owner, me, comment.strip(), lifetime)
            new = {"value": value, "comment": tok.comment, "expires": tok.expiry_time}
    except BrickyardError as exc:
        return _tokens_page(request, me, status=exc.http_status, error=exc.message, form=form)
    # The value is in this response only: never stored, never in a redirect or a cookie.
    return _tokens_page(request, me, new_token=new)


@router.post("/settings/tokens/{token_id}/revoke", dependencies=[CsrfProtect])
def revoke_token(request: Request, token_id: str, me: UiUser):
    ws = workspace(request)
    with ws.store.session() as sess:
        ws.services["tokens"].delete_own(sess, me, token_id)
    return redirect(request, "/settings/tokens", "Token revoked.")


@router.get("/settings/password")
def password_form(request: Request, me: UiUser):
    return render(request, "settings/password.html", active="settings", error="")


@router.post("/settings/password", dependencies=[CsrfProtect])
def change_password(request: Request, me: UiUser, current: str = Form(""), new: str = Form(""),
                    confirm: str = Form("")):
    ws = workspace(request)
    try:
        if new != confirm:
            raise invalid("The new password and its confirmation differ.")
        with ws.store.session() as sess:
            user = ws.services["users"].get(sess, me.id)
            if user.password_hash and not check_password(current, user.password_hash):
                raise BrickyardError("PERMISSION_DENIED", "The current password is not correct.")
            ws.services["web_sessions"].set_password(sess, me, str(me.id), new)
    except BrickyardError as exc:
        return render(request, "settings/password.html", status_code=exc.http_status, active="settings",
                      error=exc.message)
    # Every session of the user ended with the change, this one too: sign in again.
    response = redirect(request, "/login", "Password changed; sign in with the new password.")
    response.delete_cookie("by_session", path="/")
    return response
