"""MLflow routes that only Databricks serves (registry files for Databricks clients, the Unity
Catalog refusal) and Brickyard's registry history; MLflow's own routes are in tracking/gateway.py."""
from __future__ import annotations

from fastapi import APIRouter, Request

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, opt_str, query_or_body, req_str
from brickyard.errors import BrickyardError

router = APIRouter(tags=["mlflow"])

UC_MESSAGE = (
    "The Unity Catalog model registry (registry URI 'databricks-uc') is not available in this "
    "workspace. Use the workspace model registry instead: mlflow.set_registry_uri('databricks') "
    "(or the tracking server's http URI), with a model name without catalog and schema."
)


def _version_params(request: Request, body: dict) -> tuple[str, str, str | None]:
    params = query_or_body(request, body)
    version = params.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        params["version"] = str(version)
    return req_str(params, "name"), req_str(params, "version"), opt_str(params, "path")


@router.get("/api/2.0/mlflow/model-versions/list-artifacts")
def list_version_artifacts(request: Request, me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    """The files of a registered model version (what DatabricksModelsArtifactRepository lists)."""
    name, version, path = _version_params(request, body)
    return {"files": ws.services["mlflow"].list_version_files(name, version, path)}


@router.get("/api/2.0/mlflow/model-versions/get-signed-download-uri")
def signed_version_download(request: Request, me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    name, version, path = _version_params(request, body)
    base_url = ws.settings.public_url or str(request.base_url)
    return ws.services["mlflow"].version_download_url(base_url, name, version, path)


@router.get("/api/2.0/mlflow/brickyard/model-versions/history")
def version_history(request: Request, me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    """Every stage change of a version and every alias move to or from it: who, when, from, to."""
    name, version, _ = _version_params(request, body)
    return {"events": ws.services["mlflow"].history_of(name, version)}


@router.get("/api/2.0/mlflow/brickyard/registered-models/history")
def model_history(request: Request, me: CurrentUser, body: Body, ws: WorkspaceDep) -> dict:
    name = req_str(query_or_body(request, body), "name")
    return {"events": ws.services["mlflow"].history_of(name, None)}


@router.api_route("/api/2.0/mlflow/unity-catalog/{rest:path}", methods=["GET", "POST", "PATCH", "DELETE"],
                  include_in_schema=False)
@router.api_route("/api/2.1/unity-catalog/models{rest:path}", methods=["GET", "POST", "PATCH", "DELETE"],
                  include_in_schema=False)
def unity_catalog_registry(rest: str, me: CurrentUser) -> dict:
    raise BrickyardError("FEATURE_DISABLED", UC_MESSAGE, 400)
