"""Jobs API: 2.2 for the SDK, 2.1 and 2.0 (the legacy CLI) on the same handlers."""
from __future__ import annotations

from fastapi import APIRouter, Request

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, query_or_body

router = APIRouter(tags=["jobs"])


def _svc(ws):  # noqa: ANN001, ANN202
    return ws.services["jobs"]


def _handlers(api: str) -> tuple:
    def create(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        return {"job_id": _svc(ws).create(me, body)}

    def get(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        return _svc(ws).get(me, query_or_body(request, body).get("job_id"), api)

    def list_jobs(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        return _svc(ws).list(me, query_or_body(request, body), api)

    def update(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        _svc(ws).update(me, body)
        return {}

    def reset(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        _svc(ws).reset(me, body)
        return {}

    def delete(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        _svc(ws).delete(me, body)
        return {}

    def run_now(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        run_id = _svc(ws).run_now(me, body)
        return {"run_id": run_id, "number_in_job": run_id}

    def submit(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        return {"run_id": _svc(ws).submit(me, body)}

    def get_run(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        return _svc(ws).get_run(me, query_or_body(request, body).get("run_id"))

    def get_output(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        return _svc(ws).get_output(me, query_or_body(request, body).get("run_id"))

    def list_runs(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        return _svc(ws).list_runs(me, query_or_body(request, body))

    def cancel(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        _svc(ws).cancel(me, body.get("run_id"))
        return {}

    def cancel_all(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        _svc(ws).cancel_all(me, body)
        return {}

    def delete_run(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        _svc(ws).delete_run(me, body.get("run_id"))
        return {}

    def export(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
        params = query_or_body(request, body)
        return _svc(ws).export(me, params.get("run_id"), params.get("views_to_export"))

    return (
        ("POST", "create", create), ("GET", "get", get), ("GET", "list", list_jobs), ("POST", "update", update),
        ("POST", "reset", reset), ("POST", "delete", delete), ("POST", "run-now", run_now),
        ("POST", "runs/submit", submit), ("GET", "runs/get", get_run), ("GET", "runs/get-output", get_output),
        ("GET", "runs/list", list_runs), ("POST", "runs/cancel", cancel), ("POST", "runs/cancel-all", cancel_all),
        ("POST", "runs/delete", delete_run), ("GET", "runs/export", export),
    )


def set_task_value(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    """dbutils.jobs.taskValues.set from a running task (the workspace's internal API)."""
    _svc(ws).set_task_value(me, body.get("task_run_id"), body.get("key"), body.get("value"))
    return {}


def get_task_value(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    """dbutils.jobs.taskValues.get: {"value": JSON text}, or {} when the task did not set the key."""
    params = query_or_body(request, body)
    return _svc(ws).get_task_value(me, params.get("task_run_id"), params.get("task_key"), params.get("key"))


router.add_api_route("/api/2.0/brickyard/jobs/task-values/set", set_task_value, methods=["POST"],
                     include_in_schema=False)
router.add_api_route("/api/2.0/brickyard/jobs/task-values/get", get_task_value, methods=["GET"],
                     include_in_schema=False)

for version in ("2.2", "2.1", "2.0"):
    for method, name, handler in _handlers(version):
        router.add_api_route(f"/api/{version}/jobs/{name}", handler, methods=[method],
                             include_in_schema=version == "2.2",
                             operation_id=f"jobs_{name.replace('/', '_').replace('-', '_')}_{version.replace('.', '_')}")
