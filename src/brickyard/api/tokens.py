"""Tokens API 2.0 and Token Management (admin)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, opt_int, opt_str, query_or_body, req_str
from brickyard.services.tokens import token_info

router = APIRouter(tags=["tokens"])


@router.post("/api/2.0/token/create")
def create_token(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    svc = ws.services["tokens"]
    with ws.store.session() as sess:
        owner = ws.services["users"].get(sess, me.id)
        value, tok = svc.create(sess, owner, me, opt_str(body, "comment"), opt_int(body, "lifetime_seconds"))
        return {"token_value": value, "token_info": token_info(tok)}


@router.get("/api/2.0/token/list")
def list_tokens(me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        return {"token_infos": [token_info(t) for t in ws.services["tokens"].list_own(sess, me)]}


@router.post("/api/2.0/token/delete")
def delete_token(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["tokens"].delete_own(sess, me, req_str(body, "token_id"))
    return {}


@router.get("/api/2.0/token-management/tokens")
def admin_list_tokens(request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, {})
    created_by_id = opt_int(params, "created_by_id")
    with ws.store.session() as sess:
        rows = ws.services["tokens"].list_all(
            sess, me, created_by_id=created_by_id, created_by_username=opt_str(params, "created_by_username")
        )
        return {"token_infos": [token_info(t, u) for t, u in rows]}


@router.get("/api/2.0/token-management/tokens/{token_id}")
def admin_get_token(token_id: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        tok, owner = ws.services["tokens"].get_any(sess, me, token_id)
        return {"token_info": token_info(tok, owner)}


@router.delete("/api/2.0/token-management/tokens/{token_id}")
def admin_delete_token(token_id: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["tokens"].delete_any(sess, me, token_id)
    return {}


@router.post("/api/2.0/token-management/on-behalf-of/tokens")
def admin_create_obo_token(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        value, tok, owner = ws.services["tokens"].create_on_behalf(
            sess, me, body.get("application_id"), opt_int(body, "lifetime_seconds"), opt_str(body, "comment")
        )
        return {"token_value": value, "token_info": token_info(tok, owner)}
