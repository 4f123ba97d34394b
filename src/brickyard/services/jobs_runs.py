"""The runs half of the Jobs API: get, get-output, list, cancel, cancel-all, delete, export."""
from __future__ import annotations

import base64
import json

from sqlalchemy import select

from brickyard.errors import BrickyardError, invalid, not_found
from brickyard.services import jobs_spec, jobs_view
from brickyard.services.common import now_ms
from brickyard.services.jobs_exec import ACTIVE
from brickyard.services.users import Principal
from brickyard.store.models import JobRun, JobTaskRun


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def page_offset(body: dict) -> int:
    token = body.get("page_token")
    if token:
        try:
            kind, _, value = base64.urlsafe_b64decode(str(token).encode()).decode().partition(":")
            if kind == "offset" and value.isdigit():
                return int(value)
        except ValueError:
            pass
        raise invalid("Invalid page_token.")
    offset = jobs_spec.check_int(dict(body), "offset", "", 0)
    return offset or 0


def int_id(value: object, name: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} is required and must be an integer." if value is None
                      else f"{name} must be an integer; got {str(value)[:40]!r}.")
    return value


def flag(body: dict, name: str) -> bool:
    value = body.get(name)
    return value is True or (isinstance(value, str) and value.lower() == "true")


class RunsApi:
    """Mixed into JobService, which provides the store, `_run`, `_job` and `_cancel_run`."""

    # ---- the runs API --------------------------------------------------------------------
    def get_run(self, caller: Principal, run_id: object) -> dict:
        with self.store.session() as sess:
            run, task = self._run(sess, caller, run_id)
            if task is not None:
                raise not_found(f"Run {run_id} does not exist: it is a task run of run {run.run_id}; use "
                                "runs/get-output for a task run.")
            rows = list(sess.scalars(select(JobTaskRun).where(JobTaskRun.parent_run_id == run.run_id)))
            return jobs_view.run_view(run, rows, self.ws.settings.base_url, now_ms())

    def get_output(self, caller: Principal, run_id: object) -> dict:
        with self.store.session() as sess:
            run, task = self._run(sess, caller, run_id)
            rows = list(sess.scalars(select(JobTaskRun).where(JobTaskRun.parent_run_id == run.run_id)))
            if task is None:
                latest = jobs_view.latest_attempts(rows)
                if len(latest) != 1:
                    raise invalid("Retrieving the output of runs with multiple tasks is not supported. Please "
                                  "retrieve the output of each individual task run instead.")
                task = latest[0]
            now = now_ms()
            meta = jobs_view.run_view(run, rows, self.ws.settings.base_url, now, with_tasks=False)
            meta.update(jobs_view.task_view(task, self.ws.settings.base_url, run.job_id, now))
            return jobs_view.output_view(task, meta)

    def list_runs(self, caller: Principal, body: dict) -> dict:
        if flag(body, "active_only") and flag(body, "completed_only"):
            raise invalid("active_only and completed_only cannot both be true.")
        limit = jobs_spec.check_int(dict(body), "limit", "", 0, 25)
        limit = 20 if limit is None else (limit or 25)  # 0 asks for the maximum
        offset = page_offset(body)
        with self.store.session() as sess:
            query = select(JobRun).order_by(JobRun.run_id.desc())
            if body.get("job_id") not in (None, ""):
                job = self._job(sess, caller, body.get("job_id"))
                query = query.where(JobRun.job_id == job.job_id)
            elif not caller.is_admin:
                query = query.where(JobRun.creator_user_id == caller.id)
            if flag(body, "active_only"):
                query = query.where(JobRun.life_cycle_state.in_(ACTIVE))
            if flag(body, "completed_only"):
                query = query.where(JobRun.life_cycle_state.not_in(ACTIVE))
            if body.get("run_type"):
                if body["run_type"] not in ("JOB_RUN", "SUBMIT_RUN", "WORKFLOW_RUN"):
                    raise invalid("run_type must be JOB_RUN, SUBMIT_RUN or WORKFLOW_RUN.")
                query = query.where(JobRun.run_type == body["run_type"])
            for name, op in (("start_time_from", "__ge__"), ("start_time_to", "__le__")):
                if body.get(name) not in (None, ""):
                    query = query.where(getattr(JobRun.start_time, op)(int_id(body[name], name)))
            runs = list(sess.scalars(query.offset(offset).limit(limit + 1)))
            expand = flag(body, "expand_tasks")
            now, base = now_ms(), self.ws.settings.base_url
            views = []
            for run in runs[:limit]:
                rows = list(sess.scalars(select(JobTaskRun).where(JobTaskRun.parent_run_id == run.run_id)))
                views.append(jobs_view.run_view(run, rows, base, now, with_tasks=expand))
        out: dict = {"runs": views, "has_more": len(runs) > limit}
        if out["has_more"]:
            out["next_page_token"] = page_token(offset + limit)
        if offset:
            out["prev_page_token"] = page_token(max(offset - limit, 0))
        return out

    def cancel(self, caller: Principal, run_id: object) -> None:
        with self.store.session() as sess:
            run, _ = self._run(sess, caller, run_id)
        self._cancel_run(run.run_id)

    def _cancel_run(self, run_id: int) -> None:
        if self.supervisor.cancel(run_id):
            return
        with self._admit_lock, self.store.session() as sess:
            run = sess.get(JobRun, run_id)
            if run is None or run.life_cycle_state not in ACTIVE:
                return
            # Queued (never started): it ends here.
            run.life_cycle_state, run.result_state = "TERMINATED", "CANCELED"
            run.state_message, run.end_time, run.user_cancelled_or_timedout = "Run cancelled.", now_ms(), True
            run.termination = json.dumps({"code": "USER_CANCELED", "type": "SUCCESS", "message": "Run cancelled."})
            for row in sess.scalars(select(JobTaskRun).where(JobTaskRun.parent_run_id == run_id)):
                row.life_cycle_state, row.result_state = "SKIPPED", "CANCELED"
                row.state_message, row.end_time = "The run was cancelled before this task started.", now_ms()

    def cancel_all(self, caller: Principal, body: dict) -> None:
        all_queued = flag(body, "all_queued_runs")
        if body.get("job_id") in (None, "") and not all_queued:
            raise invalid("job_id is required (or all_queued_runs=true).")
        with self.store.session() as sess:
            query = select(JobRun.run_id)
            if body.get("job_id") not in (None, ""):
                job = self._job(sess, caller, body.get("job_id"))
                query = query.where(JobRun.job_id == job.job_id, JobRun.life_cycle_state.in_(ACTIVE))
            else:
                query = query.where(JobRun.life_cycle_state == "QUEUED")
                if not caller.is_admin:
                    query = query.where(JobRun.creator_user_id == caller.id)
            ids = list(sess.scalars(query))
        for run_id in ids:
            self._cancel_run(run_id)

    def delete_run(self, caller: Principal, run_id: object) -> None:
        with self.store.session() as sess:
            run, task = self._run(sess, caller, run_id)
            if task is not None:
                raise invalid(f"Run {run_id} is a task run; delete its job run {run.run_id} instead.")
            if run.life_cycle_state in ACTIVE:
                raise BrickyardError("INVALID_STATE", f"Run {run.run_id} is active ({run.life_cycle_state}); "
                                     "cancel it before deleting it.")
            sess.delete(run)

    def export(self, caller: Principal, run_id: object, views: object) -> dict:
        from brickyard.runtime import formats

        views = views or "CODE"
        if views not in ("CODE", "DASHBOARDS", "ALL"):
            raise invalid("views_to_export must be CODE, DASHBOARDS or ALL.")
        with self.store.session() as sess:
            run, task = self._run(sess, caller, run_id)
            if task is None:
                latest = jobs_view.latest_attempts(list(sess.scalars(
                    select(JobTaskRun).where(JobTaskRun.parent_run_id == run.run_id))))
                if len(latest) != 1:
                    raise invalid("Exporting a run with multiple tasks is not supported; export each task run.")
                task = latest[0]
            if "notebook_task" not in json.loads(task.spec):
                raise invalid(f"Run {task.run_id} is not a notebook task run; only notebook runs can be exported.")
            if task.notebook is None:
                raise invalid(f"Run {task.run_id} has no executed notebook yet (state {task.life_cycle_state}).")
            nb = formats.loads(task.notebook)
        if views == "DASHBOARDS":
            return {"views": []}  # notebooks here have no dashboards
        html = formats.write_notebook("HTML", nb, task.run_id).decode()
        return {"views": [{"content": html, "name": nb.name, "type": "NOTEBOOK"}]}

    def executed_notebook(self, caller: Principal, task_run_id: object):  # noqa: ANN201
        """The executed copy of a notebook task run (cells with their outputs, a formats.Notebook), or
        None while the task has not run; the web UI's run page renders it."""
        from brickyard.runtime import formats

        with self.store.session() as sess:
            run, task = self._run(sess, caller, task_run_id)
            if task is None:
                latest = jobs_view.latest_attempts(list(sess.scalars(
                    select(JobTaskRun).where(JobTaskRun.parent_run_id == run.run_id))))
                if len(latest) != 1:
                    raise invalid(f"Run {run.run_id} has several tasks; ask for one task run's notebook.")
                task = latest[0]
            if "notebook_task" not in json.loads(task.spec) or task.notebook is None:
                return None
            return formats.loads(task.notebook)
