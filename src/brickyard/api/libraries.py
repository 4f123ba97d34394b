"""Libraries API 2.0."""
from __future__ import annotations

from fastapi import APIRouter, Request

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, query_or_body

router = APIRouter(tags=["libraries"])


def _svc(ws):  # noqa: ANN001, ANN202
    return ws.services["libraries"]


@router.post("/api/2.0/libraries/install")
def install(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).install(me, body)
    return {}


@router.post("/api/2.0/libraries/uninstall")
def uninstall(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).uninstall(me, body)
    return {}


@router.get("/api/2.0/libraries/cluster-status")
def cluster_status(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return _svc(ws).cluster_status(query_or_body(request, body).get("cluster_id"))


@router.get("/api/2.0/libraries/all-cluster-statuses")
def all_cluster_statuses(me: CurrentUser, ws: WorkspaceDep) -> dict:
    return _svc(ws).all_cluster_statuses()
