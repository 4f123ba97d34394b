"""Instance Pools API 2.0."""
from __future__ import annotations

from fastapi import APIRouter, Request

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, query_or_body

router = APIRouter(tags=["instance-pools"])


def _svc(ws):  # noqa: ANN001, ANN202
    return ws.services["pools"]


@router.post("/api/2.0/instance-pools/create")
def create(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return {"instance_pool_id": _svc(ws).create(me, body)}


@router.post("/api/2.0/instance-pools/edit")
def edit(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).edit(me, body)
    return {}


@router.post("/api/2.0/instance-pools/delete")
def delete(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).delete(me, body.get("instance_pool_id"))
    return {}


@router.get("/api/2.0/instance-pools/get")
def get(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return _svc(ws).get(query_or_body(request, body).get("instance_pool_id"))


@router.get("/api/2.0/instance-pools/list")
def list_pools(me: CurrentUser, ws: WorkspaceDep) -> dict:
    pools = _svc(ws).list()
    return {"instance_pools": pools} if pools else {}
