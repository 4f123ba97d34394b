"""Secret scopes: create (Databricks- or Azure Key Vault-backed, as /#secrets/createScope), list,
a scope's keys (never values) and ACLs."""
from __future__ import annotations

from fastapi import Form, Request

from brickyard.errors import BrickyardError, invalid
from brickyard.services.secrets import LEVELS
from brickyard.ui.core import CsrfProtect, UiUser, redirect, render, ui_router, workspace

router = ui_router()


@router.get("/secrets")
def scopes(request: Request, me: UiUser):
    ws = workspace(request)
    svc = ws.services["secrets"]
    with ws.store.session() as sess:
        rows = [{"name": s.name, "backend": s.backend_type, "dns_name": s.keyvault_dns_name or "",
                 "level": next((k for k, v in LEVELS.items() if v == svc.level(sess, me, s)), "")}
                for s in svc.list_scopes(sess, me)]
    return render(request, "secrets/list.html", active="secrets", scopes=rows)


def _create_form(request: Request, status: int = 200, error: str = "", **values: str):
    form = {"scope": "", "manage": "creator", "dns_name": "", "resource_id": ""}
    form.update(values)
    return render(request, "secrets/create.html", status_code=status, active="secrets", form=form, error=error)


@router.get("/secrets/createScope")
def create_scope_form(request: Request, me: UiUser):
    return _create_form(request)


@router.post("/secrets/createScope", dependencies=[CsrfProtect])
def create_scope(request: Request, me: UiUser, scope: str = Form(""), manage: str = Form("creator"),
                 dns_name: str = Form(""), resource_id: str = Form("")):
    values = {"scope": scope, "manage": manage, "dns_name": dns_name, "resource_id": resource_id}
    ws = workspace(request)
    try:
        if manage not in ("creator", "users"):
            raise invalid("Manage Principal must be Creator or All Users.")
        dns_name, resource_id = dns_name.strip(), resource_id.strip()
        if bool(dns_name) != bool(resource_id):
            raise invalid("An Azure Key Vault-backed scope needs both the DNS name and the resource ID "
                          "(leave both empty for a Databricks-backed scope).")
        keyvault = {"dns_name": dns_name, "resource_id": resource_id} if dns_name else None
        with ws.store.session() as sess:
            row = ws.services["secrets"].create_scope(
                sess, me, scope.strip(), "AZURE_KEYVAULT" if keyvault else "DATABRICKS", keyvault,
                "users" if manage == "users" else None)
            name = row.name
    except BrickyardError as exc:
        # The form again, filled in, with the reason.
        return _create_form(request, exc.http_status if exc.http_status < 500 else 500, exc.message, **values)
    # Back to the list (as Databricks confirms and stays): an Azure Key Vault scope's page would
    # ask the vault for its keys at once.
    return redirect(request, "/secrets", f"Secret scope {name} created.")


@router.get("/secrets/scopes/{scope}")
def scope_page(request: Request, scope: str, me: UiUser):
    ws = workspace(request)
    svc = ws.services["secrets"]
    keys = acls = None
    keys_error = acls_error = ""
    with ws.store.session() as sess:
        row = next((s for s in svc.list_scopes(sess, me) if s.name == scope), None)
        if row is None:
            raise BrickyardError("RESOURCE_DOES_NOT_EXIST", f"Scope {scope} does not exist.")
        level = svc.level(sess, me, row)
        info = {"name": row.name, "backend": row.backend_type, "dns_name": row.keyvault_dns_name or "",
                "resource_id": row.keyvault_resource_id or ""}
    # Keys and ACLs each need their own permission (READ, MANAGE); a refusal shows in its section.
    try:
        with ws.store.session() as sess:
            keys = [{"key": k.key, "updated": k.last_updated_timestamp} for k in svc.list_secrets(sess, me, scope)]
    except BrickyardError as exc:
        keys_error = exc.message
    try:
        with ws.store.session() as sess:
            acls = [{"principal": a.principal, "permission": a.permission} for a in svc.list_acls(sess, me, scope)]
    except BrickyardError as exc:
        acls_error = exc.message
    return render(request, "secrets/scope.html", active="secrets", scope=info, keys=keys, acls=acls,
                  keys_error=keys_error, acls_error=acls_error, can_manage=level >= LEVELS["MANAGE"])


@router.post("/secrets/scopes/{scope}/acls", dependencies=[CsrfProtect])
def put_acl(request: Request, scope: str, me: UiUser, principal: str = Form(""), permission: str = Form("READ")):
    ws = workspace(request)
    with ws.store.session() as sess:
        ws.services["secrets"].put_acl(sess, me, scope, principal.strip(), permission)
    return redirect(request, f"/secrets/scopes/{scope}", f"{permission.upper()} granted to {principal.strip()}.")


@router.post("/secrets/scopes/{scope}/acls/delete", dependencies=[CsrfProtect])
def delete_acl(request: Request, scope: str, me: UiUser, principal: str = Form("")):
    ws = workspace(request)
    with ws.store.session() as sess:
        ws.services["secrets"].delete_acl(sess, me, scope, principal)
    return redirect(request, f"/secrets/scopes/{scope}", f"ACL of {principal} removed.")


@router.post("/secrets/scopes/{scope}/delete", dependencies=[CsrfProtect])
def delete_scope(request: Request, scope: str, me: UiUser):
    ws = workspace(request)
    with ws.store.session() as sess:
        ws.services["secrets"].delete_scope(sess, me, scope)
    return redirect(request, "/secrets", f"Secret scope {scope} deleted.")
