"""Secrets API 2.0: scopes, secrets and ACLs (wire format only)."""
from __future__ import annotations

import base64

from fastapi import APIRouter, Request

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, query_or_body
from brickyard.services.secrets import scope_info

router = APIRouter(tags=["secrets"])


def _acl(row) -> dict:  # noqa: ANN001
    return {"principal": row.principal, "permission": row.permission}


@router.post("/api/2.0/secrets/scopes/create")
def create_scope(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["secrets"].create_scope(
            sess, me, body.get("scope"), body.get("scope_backend_type"),
            body.get("backend_azure_keyvault"), body.get("initial_manage_principal"),
        )
    return {}


@router.get("/api/2.0/secrets/scopes/list")
def list_scopes(me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        return {"scopes": [scope_info(s) for s in ws.services["secrets"].list_scopes(sess, me)]}


@router.post("/api/2.0/secrets/scopes/delete")
def delete_scope(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["secrets"].delete_scope(sess, me, body.get("scope"))
    return {}


@router.post("/api/2.0/secrets/put")
def put_secret(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["secrets"].put_secret(
            sess, me, body.get("scope"), body.get("key"), body.get("string_value"), body.get("bytes_value")
        )
    return {}


@router.post("/api/2.0/secrets/delete")
def delete_secret(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["secrets"].delete_secret(sess, me, body.get("scope"), body.get("key"))
    return {}


@router.get("/api/2.0/secrets/list")
def list_secrets(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, body)
    with ws.store.session() as sess:
        keys = ws.services["secrets"].list_secrets(sess, me, params.get("scope"))
    return {"secrets": [{"key": k.key, "last_updated_timestamp": k.last_updated_timestamp} for k in keys]}


@router.get("/api/2.0/secrets/get")
def get_secret(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, body)
    with ws.store.session() as sess:
        value = ws.services["secrets"].get_secret(sess, me, params.get("scope"), params.get("key"))
    return {"key": params.get("key"), "value": base64.b64encode(value).decode("ascii")}


@router.post("/api/2.0/secrets/acls/put")
def put_acl(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["secrets"].put_acl(sess, me, body.get("scope"), body.get("principal"), body.get("permission"))
    return {}


@router.post("/api/2.0/secrets/acls/delete")
def delete_acl(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["secrets"].delete_acl(sess, me, body.get("scope"), body.get("principal"))
    return {}


@router.get("/api/2.0/secrets/acls/get")
def get_acl(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, body)
    with ws.store.session() as sess:
        return _acl(ws.services["secrets"].get_acl(sess, me, params.get("scope"), params.get("principal")))


@router.get("/api/2.0/secrets/acls/list")
def list_acls(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, body)
    with ws.store.session() as sess:
        return {"items": [_acl(a) for a in ws.services["secrets"].list_acls(sess, me, params.get("scope"))]}
