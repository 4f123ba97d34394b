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
    "pages_serving",  # /serving, /serving/create, /serving/endpoints/<name>, /serving/models
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


async def not_found_page(request):  # noqa: ANN001, ANN201
    """The 404 page for a browser navigating to an unknown non-API path, else None (JSON 404)."""
    path = request.url.path
    if request.method != "GET" or path.startswith(("/api/", "/ajax-api/", "/ml/", "/static/")):
        return None
    if "text/html" not in request.headers.get("accept", ""):
        return None
    from starlette.concurrency import run_in_threadpool

    from brickyard.ui.core import error_page

    return await run_in_threadpool(error_page, request, 404, "Page not found",
                                   f"There is no page at {path} in this workspace.", "")
