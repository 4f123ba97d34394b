"""SCIM 2.0 users (preview API path, as the SDK uses it)."""
from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, opt_int, query_or_body
from brickyard.errors import invalid
from brickyard.services.users import scim_user

router = APIRouter(tags=["scim"])
PREFIX = "/api/2.0/preview/scim/v2"
FILTER_RE = re.compile(r'^\s*(userName|id|displayName)\s+(eq|co|sw|ne)\s+"([^"]*)"\s*$', re.I)


def _groups_admin(body: dict) -> bool:
    groups = body.get("groups") or []
    if not isinstance(groups, list):
        raise invalid("groups must be a list of {value} objects.")
    names = {(g.get("value") or g.get("display")) for g in groups if isinstance(g, dict)}
    return "admins" in names


def _emails(body: dict) -> list[str] | None:
    emails = body.get("emails")
    if emails is None:
        return None
    if not isinstance(emails, list):
        raise invalid("emails must be a list of {value} objects.")
    return [e["value"] for e in emails if isinstance(e, dict) and isinstance(e.get("value"), str)]


@router.get(f"{PREFIX}/Me")
def me(me: CurrentUser, ws: WorkspaceDep) -> JSONResponse:
    with ws.store.session() as sess:
        user = ws.services["users"].get(sess, me.id)
        body = scim_user(user)
    # The SDK's get_workspace_id() reads this header.
    return JSONResponse(body, headers={"X-Databricks-Org-Id": ws.workspace_id})


@router.post(f"{PREFIX}/Users", status_code=201)
def create_user(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    me.require_admin()
    active = body.get("active", True)
    if not isinstance(active, bool):
        raise invalid("active must be a boolean.")
    display = body.get("displayName") or ""
    if not isinstance(display, str):
        raise invalid("displayName must be a string.")
    with ws.store.session() as sess:
        user = ws.services["users"].create(
            sess, body.get("userName"), display, _emails(body), _groups_admin(body), active,
            body.get("password") if isinstance(body.get("password"), str) else None,
        )
        return scim_user(user)


@router.get(f"{PREFIX}/Users")
def list_users(request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, {})
    start = opt_int(params, "startIndex", 1) or 1
    count = opt_int(params, "count")
    flt = params.get("filter")
    with ws.store.session() as sess:
        total, users = ws.services["users"].list(sess)
        resources = [scim_user(u) for u in users]
    if flt:
        m = FILTER_RE.match(flt)
        if not m:
            raise invalid(f'Unsupported filter {flt!r}: use e.g. userName eq "someone@example.com".')
        attr, op, val = m.group(1), m.group(2).lower(), m.group(3)
        key = {"username": "userName", "id": "id", "displayname": "displayName"}[attr.lower()]
        tests = {
            "eq": lambda v: v.lower() == val.lower(),
            "ne": lambda v: v.lower() != val.lower(),
            "co": lambda v: val.lower() in v.lower(),
            "sw": lambda v: v.lower().startswith(val.lower()),
        }
        resources = [r for r in resources if tests[op](str(r[key]))]
    total = len(resources)
    page = resources[start - 1:] if count is None else resources[start - 1:start - 1 + max(count, 0)]
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(page),
        "Resources": page,
    }


@router.get(f"{PREFIX}/Users/{{user_id}}")
def get_user(user_id: str, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        user = ws.services["users"].get(sess, user_id)
        if user.id != me.id:
            me.require_admin()
        return scim_user(user)


@router.delete(f"{PREFIX}/Users/{{user_id}}", status_code=204)
def delete_user(user_id: str, me: CurrentUser, ws: WorkspaceDep) -> None:
    me.require_admin()
    with ws.store.session() as sess:
        ws.services["users"].delete(sess, me, user_id)


@router.patch(f"{PREFIX}/Users/{{user_id}}")
def patch_user(user_id: str, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    """Supported operations: replace active/displayName, add/remove the admins group."""
    me.require_admin()
    ops = body.get("Operations") or body.get("operations") or []
    if not isinstance(ops, list):
        raise invalid("Operations must be a list.")
    with ws.store.session() as sess:
        user = ws.services["users"].get(sess, user_id)
        for op in ops:
            if not isinstance(op, dict):
                raise invalid("Each operation must be an object.")
            kind = str(op.get("op", "")).lower()
            path = op.get("path")
            value = op.get("value")
            if path == "active" and isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if kind in ("replace", "add") and path == "active" and isinstance(value, bool):
                user.active = value
            elif kind in ("replace", "add") and path == "displayName" and isinstance(value, str):
                user.display_name = value
            elif path == "groups" and kind in ("add", "remove"):
                names = {g.get("value") for g in (value or []) if isinstance(g, dict)}
                if "admins" in names:
                    user.is_admin = kind == "add"
            elif kind == "replace" and path is None and isinstance(value, dict):
                if isinstance(value.get("active"), bool):
                    user.active = value["active"]
                if isinstance(value.get("displayName"), str):
                    user.display_name = value["displayName"]
            else:
                raise invalid(f"Unsupported SCIM operation {kind} on {path!r}.")
        sess.flush()
        return scim_user(user)
