"""The embedded MLflow tracking server: stores, artifacts in DBFS, registry history, the gateway."""
from __future__ import annotations


def build(ws) -> dict:  # noqa: ANN001
    """Build the tracking service of a workspace (its MLflow stores open on first use)."""
    from brickyard.tracking.service import TrackingService

    return {"mlflow": TrackingService(ws)}
