"""Command Execution API 1.2: execution contexts and commands on a running cluster."""
from __future__ import annotations

from fastapi import APIRouter, Request

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, query_or_body

router = APIRouter(tags=["command-execution"])


def _svc(ws):  # noqa: ANN001, ANN202
    return ws.services["contexts"]


@router.post("/api/1.2/contexts/create")
def create_context(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return {"id": _svc(ws).create(me, body.get("clusterId"), body.get("language"))}


@router.get("/api/1.2/contexts/status")
def context_status(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    p = query_or_body(request, body)
    return _svc(ws).status(me, p.get("clusterId"), p.get("contextId"))


@router.post("/api/1.2/contexts/destroy")
def destroy_context(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).destroy(me, body.get("clusterId"), body.get("contextId"))
    return {"id": body.get("contextId")}


@router.post("/api/1.2/commands/execute")
def execute(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return {"id": _svc(ws).execute(me, body)}


@router.get("/api/1.2/commands/status")
def command_status(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    p = query_or_body(request, body)
    return _svc(ws).command_status(me, p.get("clusterId"), p.get("contextId"), p.get("commandId"))


@router.post("/api/1.2/commands/cancel")
def cancel(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).cancel(me, body)
    return {"id": body.get("commandId")}
