"""The web UI: server-rendered pages (Jinja2 + htmx) served by the workspace's own process.

Each page module exports `router` (made with `brickyard.ui.core.ui_router()`); add yours to
PAGE_MODULES. See README.md in this folder.
"""
from __future__ import annotations

import importlib

PAGE_MODULES = (
    "pages_home",  # /, /login, /logout
    "pages_compute",  # /compute, /compute/create, /compute/<id>, /compute/pools
    "pages_secrets",  # /secrets, /secrets/createScope, /secrets/scopes/<scope>
    "pages_settings",  # /settings/tokens, /settings/password
    "pages_admin",  # /admin/users
    "pages_workspace",  # /workspace, /workspace/notebook, import/export/move/delete, Run on cluster
    "pages_data",  # /data (DBFS browser), /data/upload (Upload Data)
    "pages_jobs",  # /jobs, /jobs/create, /jobs/<id>, /jobs/<id>/runs/<run>
)


def routers() -> list:
    return [importlib.import_module(f"brickyard.ui.{name}").router for name in PAGE_MODULES]


def mount(app) -> None:  # noqa: ANN001
    """Serve the pages and their static files from `app` (before MLflow's catch-all route)."""
    from starlette.staticfiles import StaticFiles

    from brickyard.ui.core import STATIC_DIR, STATIC_PREFIX

    for router in routers():
        app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=str(STATIC_DIR)), name="ui-static")
