"""Services: one module per resource; rules, permissions and state live here."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from brickyard.context import Workspace


def build_services(ws: "Workspace") -> dict:
    """Construct every service of a workspace (called once per app)."""
    from brickyard.services.tokens import TokenService
    from brickyard.services.users import UserService
    from brickyard.services.workspace import WorkspaceTree

    tree = WorkspaceTree()
    users = UserService(ws.store, tree)
    services = {
        "tree": tree,
        "users": users,
        "tokens": TokenService(ws.keyring, users),
    }
    # Each resource module builds its own service(s) from the workspace.
    from brickyard.services import dbfs, secrets

    services.update(secrets.build(ws, services))
    services.update(dbfs.build(ws, services))
    from brickyard.services.clusters import ClusterService

    from brickyard.services.contexts import ContextService

    from brickyard.services.jobs import JobService

    # Before clusters: on close, jobs stop first, so runs are not failed by their clusters going away.
    services["jobs"] = JobService(ws)
    services["clusters"] = ClusterService(ws)
    services["pools"] = services["clusters"].pools
    from brickyard.services.libraries import LibraryService

    services["libraries"] = LibraryService(ws, services["clusters"])
    services["contexts"] = ContextService(ws, services["clusters"])
    from brickyard.services import mounts

    services.update(mounts.build(ws, services))
    from brickyard.services import notebook_runner

    services.update(notebook_runner.build(ws, services))
    from brickyard.jupyter import kernels

    services.update(kernels.build(ws, services))
    from brickyard import tracking

    services.update(tracking.build(ws))
    from brickyard import serving

    services.update(serving.build(ws))
    from brickyard.services.web_sessions import WebSessionService

    services["web_sessions"] = WebSessionService(ws.keyring, users, services["tokens"])
    return services
