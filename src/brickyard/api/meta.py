"""Discovery endpoints the clients call before anything else."""
from __future__ import annotations

from fastapi import APIRouter

from brickyard.api.deps import WorkspaceDep

router = APIRouter()


@router.get("/.well-known/databricks-config", include_in_schema=False)
def databricks_config(ws: WorkspaceDep) -> dict:
    """Host metadata: the SDK and MLflow call this without auth before requests."""
    return {"workspace_id": ws.workspace_id, "cloud": "AWS", "host": ws.settings.base_url}


@router.get("/health")
def health() -> dict:
    return {"status": "ok"}
