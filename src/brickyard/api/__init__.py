"""FastAPI routers, one module per Databricks API group: wire format only."""
from __future__ import annotations

import importlib

# Each module exposes `router`; the order only matters for overlapping paths.
ROUTER_MODULES = (
    "serving",  # first: model invocations are the hot path, and routes are tried in this order
    "meta",
    "scim",
    "tokens",
    "workspace",
    "secrets",
    "dbfs",
    "files",
    "clusters",
    "instance_pools",
    "libraries",
    "commands",
    "mlflow_extra",
    "jobs",
    "kernels",
    "mounts",
)


def routers() -> list:
    return [importlib.import_module(f"brickyard.api.{name}").router for name in ROUTER_MODULES]
