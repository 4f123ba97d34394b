"""Workspace API 2.0: the folder tree, notebooks and files."""
from __future__ import annotations

from fastapi import APIRouter, Request

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, opt_bool, query_or_body, req_str
from brickyard.services.workspace import normalize_path, object_info

router = APIRouter(tags=["workspace"])


@router.post("/api/2.0/workspace/mkdirs")
def mkdirs(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["tree"].mkdirs(sess, req_str(body, "path"), owner_id=me.id)
    return {}


@router.get("/api/2.0/workspace/list")
def list_objects(request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, {})
    with ws.store.session() as sess:
        objects = ws.services["tree"].list(sess, params.get("path"))
        return {"objects": [object_info(o) for o in objects]}


@router.get("/api/2.0/workspace/get-status")
def get_status(request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    params = query_or_body(request, {})
    path = normalize_path(params.get("path"))
    with ws.store.session() as sess:
        if path == "/":
            return {"object_type": "DIRECTORY", "object_id": 0, "path": "/"}
        return object_info(ws.services["tree"].require(sess, path))


@router.post("/api/2.0/workspace/delete")
def delete(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    with ws.store.session() as sess:
        ws.services["tree"].delete(sess, body.get("path"), opt_bool(body, "recursive"))
    return {}
