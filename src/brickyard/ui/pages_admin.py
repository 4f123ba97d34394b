"""Admin: the workspace's users (list, create with a password, reset a password, delete)."""
from __future__ import annotations

from fastapi import Form, Request
from starlette.responses import RedirectResponse

from brickyard.errors import BrickyardError
from brickyard.ui.core import CsrfProtect, UiUser, redirect, render, ui_router, workspace

router = ui_router()


@router.get("/admin")
def admin_home(request: Request, me: UiUser):
    return RedirectResponse("/admin/users", status_code=303)


def _users_page(request: Request, me, status: int = 200, **ctx):  # noqa: ANN001
    me.require_admin()
    ws = workspace(request)
    with ws.store.session() as sess:
        _, users = ws.services["users"].list(sess)
        rows = [{"id": u.id, "user_name": u.user_name, "display_name": u.display_name, "is_admin": u.is_admin,
                 "active": u.active, "has_password": bool(u.password_hash), "created": u.created_at}
                for u in users]
    ctx.setdefault("error", "")
    ctx.setdefault("form", {"user_name": "", "is_admin": False})
    return render(request, "admin/users.html", status_code=status, active="admin", users=rows, **ctx)


@router.get("/admin/users")
def users(request: Request, me: UiUser):
    return _users_page(request, me)


@router.post("/admin/users", dependencies=[CsrfProtect])
def create_user(request: Request, me: UiUser, user_name: str = Form(""), password: str = Form(""),
                is_admin: str = Form("")):
    me.require_admin()
    ws = workspace(request)
    form = {"user_name": user_name, "is_admin": bool(is_admin)}
    try:
        with ws.store.session() as sess:
            if password and len(password) < 8:
                raise BrickyardError("INVALID_PARAMETER_VALUE", "A password needs at least 8 characters.")
            user = ws.services["users"].create(sess, user_name.strip(), is_admin=bool(is_admin),
                                               password=password or None)
            name = user.user_name
    except BrickyardError as exc:
        return _users_page(request, me, status=exc.http_status, error=exc.message, form=form)
    return redirect(request, "/admin/users", f"User {name} created.")


@router.post("/admin/users/{user_id}/password", dependencies=[CsrfProtect])
def reset_password(request: Request, user_id: str, me: UiUser, password: str = Form("")):
    me.require_admin()
    ws = workspace(request)
    with ws.store.session() as sess:
        user = ws.services["web_sessions"].set_password(sess, me, user_id, password)
        name = user.user_name
    response = redirect(request, "/admin/users", f"Password of {name} set; their sessions were ended.")
    if str(me.id) == user_id:
        response = redirect(request, "/login", "Your password changed; sign in again.")
        response.delete_cookie("by_session", path="/")
    return response


@router.post("/admin/users/{user_id}/delete", dependencies=[CsrfProtect])
def delete_user(request: Request, user_id: str, me: UiUser):
    me.require_admin()
    ws = workspace(request)
    with ws.store.session() as sess:
        name = ws.services["users"].find(sess, user_id).user_name
        ws.services["users"].delete(sess, me, user_id)
    return redirect(request, "/admin/users", f"User {name} deleted.")
