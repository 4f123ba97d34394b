"""DBFS mounts (wire format only).

Databricks has no public REST API for mounts (dbutils.fs.mount talks to the driver), so
Brickyard serves an internal one that its notebook runtime calls with the user's token:

  POST /api/2.0/brickyard/mounts/create   {source, mount_point, extra_configs?, encryption_type?} -> {mount}
  GET  /api/2.0/brickyard/mounts/list                                     -> {mounts: [mount]}
  GET  /api/2.0/brickyard/mounts/get      ?mount_point=                   -> {mount}
  POST /api/2.0/brickyard/mounts/update   {source, mount_point, extra_configs?, encryption_type?} -> {mount}
  POST /api/2.0/brickyard/mounts/delete   {mount_point}                   -> {}
  POST /api/2.0/brickyard/mounts/refresh  {cluster_id?}  -> {refreshed, needs_restart, failed} (cluster ids)

A mount is {mount_point, source, encryption_type, extra_config_keys, creator_user_name,
created_time, updated_time}: the values of extra_configs are never answered.
"""
from __future__ import annotations

import json

from fastapi import APIRouter, Request

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, query_or_body, req_str

router = APIRouter(tags=["mounts"])
PREFIX = "/api/2.0/brickyard/mounts"


def mount_info(row) -> dict:  # noqa: ANN001
    return {"mount_point": row.mount_point, "source": row.source, "encryption_type": row.encryption_type,
            "extra_config_keys": json.loads(row.config_keys), "creator_user_name": row.creator_user_name,
            "created_time": row.created_at, "updated_time": row.updated_at}


@router.post(f"{PREFIX}/create")
def create(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    row = ws.services["mounts"].create(me, body.get("source"), body.get("mount_point"),
                                       body.get("extra_configs"), body.get("encryption_type"))
    return {"mount": mount_info(row)}


@router.get(f"{PREFIX}/list")
def list_mounts(me: CurrentUser, ws: WorkspaceDep) -> dict:  # noqa: ARG001 - every user sees the table
    svc = ws.services["mounts"]
    svc.reload_if_changed()
    return {"mounts": [mount_info(r) for r in svc.rows()]}


@router.get(f"{PREFIX}/get")
def get(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:  # noqa: ARG001
    point = req_str(query_or_body(request, body), "mount_point")
    return {"mount": mount_info(ws.services["mounts"].find(point))}


@router.post(f"{PREFIX}/update")
def update(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    row = ws.services["mounts"].update(me, body.get("source"), body.get("mount_point"),
                                       body.get("extra_configs"), body.get("encryption_type"))
    return {"mount": mount_info(row)}


@router.post(f"{PREFIX}/delete")
def delete(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    ws.services["mounts"].delete(me, body.get("mount_point"))
    return {}


@router.post(f"{PREFIX}/refresh")
def refresh(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return ws.services["mounts"].refresh(me, body.get("cluster_id"))
