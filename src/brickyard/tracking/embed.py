"""Load MLflow's server once per process and make it serve the workspace of each request.

MLflow's handlers keep their stores in module globals and read them through a handful of
functions; those functions are pointed at the TrackingService bound to the current request
(a context variable), so several workspaces can share one process (tests do) and no
`_MLFLOW_SERVER_*` variable leaks into the notebook and driver processes we start.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from brickyard.services.users import Principal
    from brickyard.tracking.service import TrackingService

CURRENT: contextvars.ContextVar[TrackingService | None] = contextvars.ContextVar("brickyard_mlflow", default=None)
CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("brickyard_mlflow_caller", default=None)

_lock = threading.Lock()
_app = None


def current() -> TrackingService:
    from mlflow.exceptions import MlflowException

    svc = CURRENT.get()
    if svc is None:
        raise MlflowException("No workspace is bound to this MLflow request.")
    return svc


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Set variables only while MLflow's server module is imported (it reads them once)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def mlflow_app():
    """The ASGI app serving MLflow's REST API, artifact proxy and UI (built once per process)."""
    global _app
    with _lock:
        if _app is None:
            _app = _build()
        return _app


def _bind_registry_lookups() -> None:
    """MLflow's SQL registry looks logged models up with `MlflowClient()`, i.e. through the
    process-wide tracking URI; inside a request it must ask the request's workspace instead."""
    from mlflow.store.model_registry import sqlalchemy_store as registry_module

    real = registry_module.MlflowClient

    def client(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        svc = CURRENT.get()
        return real(*args, **kwargs) if svc is None else svc.tracking_store()

    registry_module.MlflowClient = client


def _build():
    # Our gateway authenticates every request in front of MLflow, and workspace URLs are not
    # always localhost: MLflow's own Host-header check would refuse them.
    with _env({"MLFLOW_SERVER_ALLOWED_HOSTS": os.environ.get("MLFLOW_SERVER_ALLOWED_HOSTS", "*")}):
        import mlflow.server as mlflow_server
    from fastapi import FastAPI
    from mlflow.server import artifact_router as artifact_module
    from mlflow.server import handlers

    with warnings.catch_warnings():  # MLflow imports Starlette's deprecated WSGI module
        warnings.simplefilter("ignore")
        from mlflow.server.fastapi_app import _EfficientWSGIMiddleware
    from mlflow.server.server_info_api import server_info_router

    handlers._get_tracking_store = lambda *a, **k: current().tracking_store()
    handlers._get_model_registry_store = lambda *a, **k: current().registry_store()
    handlers._get_artifact_repo_mlflow_artifacts = lambda: current().artifacts.destination()
    handlers._get_artifact_repository_for_uri = lambda uri: current().artifacts.repository(uri)
    handlers._is_serving_proxied_artifacts = lambda: True
    # The UI's usage telemetry would be relayed to MLflow's servers; a workspace stays offline.
    handlers.is_telemetry_disabled = lambda: True
    artifact_module._is_serving_proxied_artifacts = lambda: True
    artifact_module._get_artifact_repo = lambda: current().artifacts.destination()
    _bind_registry_lookups()

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    # Only the native routers the clients need; MLflow's assistant, gateway, jobs, OTLP and
    # MCP routers are left out (and their Flask twins refused by the gateway).
    app.include_router(artifact_module.artifact_router)
    app.include_router(server_info_router)
    app.mount("/", _EfficientWSGIMiddleware(mlflow_server.app))
    return app
