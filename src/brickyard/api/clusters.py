"""Clusters API: 2.1 for the SDK, 2.0 for the legacy CLI (same handlers)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, query_or_body
from brickyard.compute import catalog
from brickyard.errors import invalid

router = APIRouter(tags=["clusters"])


def _svc(ws):  # noqa: ANN001, ANN202
    return ws.services["clusters"]


def create(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return {"cluster_id": _svc(ws).create(me, body)}


def edit(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).edit(me, body)
    return {}


def start(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).start(me, body.get("cluster_id"))
    return {}


def restart(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).restart(me, body.get("cluster_id"))
    return {}


def delete(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).terminate(me, body.get("cluster_id"))
    return {}


def permanent_delete(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).permanent_delete(me, body.get("cluster_id"))
    return {}


def resize(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).resize(me, body)
    return {}


def pin(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).set_pinned(me, body.get("cluster_id"), True)
    return {}


def unpin(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).set_pinned(me, body.get("cluster_id"), False)
    return {}


def get(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return _svc(ws).get(query_or_body(request, body).get("cluster_id"))


def list_clusters(request: Request, me: CurrentUser, ws: WorkspaceDep) -> dict:
    """`filter_by.cluster_states`, `filter_by.cluster_sources` (repeated) and `filter_by.is_pinned` as the SDK
    sends them (nested query fields flattened with dots)."""
    params = request.query_params
    pinned = params.get("filter_by.is_pinned")
    if pinned is not None and pinned.lower() not in ("true", "false"):
        raise invalid("filter_by.is_pinned must be true or false.")
    return {"clusters": _svc(ws).list(states=params.getlist("filter_by.cluster_states"),
                                      sources=params.getlist("filter_by.cluster_sources"),
                                      pinned=None if pinned is None else pinned.lower() == "true")}


def events(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return _svc(ws).events(body)


def spark_versions(me: CurrentUser) -> dict:
    return catalog.spark_versions_response()


def list_node_types(me: CurrentUser) -> dict:
    return catalog.node_types_response()


def list_zones(me: CurrentUser) -> dict:
    return {"zones": ["local"], "default_zone": "local"}


ROUTES = (
    ("POST", "create", create), ("POST", "edit", edit), ("POST", "start", start),
    ("POST", "restart", restart), ("POST", "delete", delete), ("POST", "permanent-delete", permanent_delete),
    ("POST", "resize", resize), ("POST", "pin", pin), ("POST", "unpin", unpin), ("GET", "get", get),
    ("GET", "list", list_clusters), ("POST", "events", events), ("GET", "spark-versions", spark_versions),
    ("GET", "list-node-types", list_node_types), ("GET", "list-zones", list_zones),
)
for version in ("2.1", "2.0"):
    for method, name, handler in ROUTES:
        router.add_api_route(f"/api/{version}/clusters/{name}", handler, methods=[method],
                             include_in_schema=version == "2.1",
                             operation_id=f"clusters_{name.replace('-', '_')}_{version.replace('.', '_')}")
