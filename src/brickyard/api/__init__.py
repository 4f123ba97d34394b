"""FastAPI routers, one module per Databricks API group: wire format only."""
from __future__ import annotations

import importlib

# Each module exposes `router`; the order only matters for overlapping paths.
ROUTER_MODULES = (
    "meta",
    "scim",
    "tokens",
    "workspace",
    "secrets",
    "dbfs",
    "files",
    "clusters",
    "commands",
    "mlflow_extra",
    "jobs",
    "kernels",
)


def routers() -> list:
    return [importlib.import_module(f"brickyard.api.{name}").router for name in ROUTER_MODULES]
