"""Model serving: endpoints that serve registered model versions from worker processes, and K8s export."""
from __future__ import annotations


def build(ws) -> dict:  # noqa: ANN001
    """Build the serving service of a workspace (worker processes start only when endpoints exist)."""
    from brickyard.serving.service import ServingService

    return {"serving": ServingService(ws)}
