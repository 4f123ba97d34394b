"""Jobs and runs: settings, permissions, admission (max concurrent runs, queue) and the runs API."""
from __future__ import annotations

import json
import logging
import re
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from brickyard.errors import BrickyardError, denied, invalid, not_found
from brickyard.services import jobs_spec, jobs_view
from brickyard.services.common import now_ms
from brickyard.services.jobs_exec import ACTIVE, RunSupervisor
from brickyard.services.jobs_runs import RunsApi, flag, int_id, page_offset, page_token
from brickyard.services.jobs_scheduler import Scheduler
from brickyard.services.jobs_values import TaskValuesApi
from brickyard.services.users import Principal
from brickyard.store.models import Job, JobRun, JobTaskRun, Token, User

log = logging.getLogger(__name__)
RUN_TOKEN_COMMENT = "Brickyard job run {run_id} (revoked when the run ends)"
RUN_TOKEN_LIFETIME = 7 * 24 * 3600
REF_RE = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")
RESTART_MESSAGE = ("The workspace restarted while this run was active; its processes were stopped and the run "
                   "cannot continue. Start it again.")


class IdSource:
    """Increasing ids below 2**53 (safe in JavaScript): milliseconds x 100 + a counter."""

    def __init__(self):
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, int(time.time() * 1000) * 100)
            return self._last


class JobService(RunsApi, TaskValuesApi):
    def __init__(self, ws):  # noqa: ANN001
        self.ws = ws
        self.store = ws.store
        self.ids = IdSource()
        self._admit_lock = threading.Lock()
        self.supervisor = RunSupervisor(ws, self)
        self._recover()
        self.scheduler = Scheduler(self._scheduled_fire)
        with self.store.session() as sess:
            for job in sess.scalars(select(Job)):
                self.scheduler.set(job.job_id, json.loads(job.settings).get("schedule"))
        self.scheduler.start()

    # ---- permissions ---------------------------------------------------------------------
    def _job(self, sess: Session, caller: Principal | None, job_id: object) -> Job:
        job_id = int_id(job_id, "job_id")
        job = sess.get(Job, job_id)
        if job is None:
            raise not_found(f"Job {job_id} does not exist.")
        if caller is not None and not caller.is_admin and job.creator_user_id != caller.id:
            raise denied(f"User {caller.user_name} does not have Manage permission on job {job_id}; only its "
                         "owner and admins do.")
        return job

    def _run(self, sess: Session, caller: Principal, run_id: object) -> tuple[JobRun, JobTaskRun | None]:
        """A run by its id or one of its task runs' ids, if the caller may see it."""
        run_id = int_id(run_id, "run_id")
        task = None
        run = sess.get(JobRun, run_id)
        if run is None:
            task = sess.get(JobTaskRun, run_id)
            run = sess.get(JobRun, task.parent_run_id) if task is not None else None
        if run is None:
            raise not_found(f"Run {run_id} does not exist.")
        if not caller.is_admin and run.creator_user_id != caller.id and run.run_as_user_id != caller.id:
            job = sess.get(Job, run.job_id) if run.job_id else None
            if job is None or job.creator_user_id != caller.id:
                raise denied(f"User {caller.user_name} does not have permission to view run {run_id}.")
        return run, task

    def _check_cluster(self, caller: Principal):  # noqa: ANN202
        def check(cluster_id: str, where: str) -> None:
            try:
                self.ws.services["clusters"].get(cluster_id)
            except BrickyardError:
                raise invalid(f"{where}: Cluster {cluster_id} does not exist.") from None
        return check

    def _run_as(self, sess: Session, caller: Principal, settings: dict) -> User:
        run_as = settings.get("run_as") or {}
        name = run_as.get("user_name") if isinstance(run_as, dict) else None
        if run_as and not isinstance(run_as, dict) or (run_as and not name):
            raise invalid("run_as must name a user_name (service principals and groups are not supported).")
        if not name or name == caller.user_name:
            return sess.get(User, caller.id)
        if not caller.is_admin:
            raise denied("Only admins can set run_as to another user.")
        user = sess.scalar(select(User).where(User.user_name == name))
        if user is None:
            raise invalid(f"run_as.user_name: user {name} does not exist.")
        return user

    # ---- jobs ----------------------------------------------------------------------------
    def create(self, caller: Principal, body: dict) -> int:
        data = {k: v for k, v in body.items() if k not in ("access_control_list", "idempotency_token")}
        settings = jobs_spec.normalize_settings(data, self._check_cluster(caller))
        with self.store.session() as sess:
            run_as = self._run_as(sess, caller, settings)
            job = Job(job_id=self.ids.next(), creator_user_id=caller.id, creator_user_name=caller.user_name,
                      run_as_user_id=run_as.id, run_as_user_name=run_as.user_name, created_time=now_ms(),
                      name=settings["name"], settings=json.dumps(settings))
            sess.add(job)
        self.scheduler.set(job.job_id, settings.get("schedule"))
        return job.job_id

    def get(self, caller: Principal, job_id: object, api: str) -> dict:
        with self.store.session() as sess:
            return jobs_view.job_view(self._job(sess, caller, job_id), api)

    def list(self, caller: Principal, body: dict, api: str) -> dict:
        limit = jobs_spec.check_int(dict(body), "limit", "", 0, 100) or 20
        offset = page_offset(body)
        name = body.get("name")
        with self.store.session() as sess:
            query = select(Job).order_by(Job.created_time.desc(), Job.job_id.desc())
            if not caller.is_admin:
                query = query.where(Job.creator_user_id == caller.id)
            jobs = list(sess.scalars(query))
        if isinstance(name, str) and name:
            jobs = [j for j in jobs if j.name.lower() == name.lower()]
        if api == "2.0" and "limit" not in body and "offset" not in body:
            return {"jobs": [jobs_view.job_view(j, api) for j in jobs]} if jobs else {}
        page = jobs[offset:offset + limit]
        out: dict = {"jobs": [jobs_view.job_view(j, api, flag(body, "expand_tasks")) for j in page],
                     "has_more": offset + limit < len(jobs)}
        if out["has_more"]:
            out["next_page_token"] = page_token(offset + limit)
        if offset:
            out["prev_page_token"] = page_token(max(offset - limit, 0))
        return out

    def _save(self, caller: Principal, job_id: object, settings: dict) -> None:
        settings = jobs_spec.normalize_settings(settings, self._check_cluster(caller))
        with self.store.session() as sess:
            job = self._job(sess, caller, job_id)
            run_as = self._run_as(sess, caller, settings) if settings.get("run_as") else None
            job.settings, job.name = json.dumps(settings), settings["name"]
            if run_as is not None:
                job.run_as_user_id, job.run_as_user_name = run_as.id, run_as.user_name
        self.scheduler.set(job.job_id, settings.get("schedule"))

    def update(self, caller: Principal, body: dict) -> None:
        new = body.get("new_settings")
        if new is not None and not isinstance(new, dict):
            raise invalid("new_settings must be an object.")
        with self.store.session() as sess:
            current = json.loads(self._job(sess, caller, body.get("job_id")).settings)
        if new and current.get("format") == "SINGLE_TASK" and any(k in new for k in jobs_spec.SINGLE_TASK_FIELDS):
            new = jobs_spec.single_task_to_tasks({**jobs_view.settings_for(current, "2.0"), **new})
        self._save(caller, body.get("job_id"), jobs_spec.merge_update(current, new, body.get("fields_to_remove")))

    def reset(self, caller: Principal, body: dict) -> None:
        new = body.get("new_settings")
        if not isinstance(new, dict):
            raise invalid("new_settings is required and must be an object.")
        with self.store.session() as sess:
            self._job(sess, caller, body.get("job_id"))
        self._save(caller, body.get("job_id"), new)

    def delete(self, caller: Principal, body: dict) -> None:
        with self.store.session() as sess:
            job = self._job(sess, caller, body.get("job_id"))
            active = list(sess.scalars(select(JobRun.run_id).where(JobRun.job_id == job.job_id,
                                                                   JobRun.life_cycle_state.in_(ACTIVE))))
            sess.delete(job)
        self.scheduler.set(job.job_id, None)
        for run_id in active:
            self._cancel_run(run_id)

    # ---- creating runs -------------------------------------------------------------------
    def run_now(self, caller: Principal, body: dict) -> int:
        with self.store.session() as sess:
            job = self._job(sess, caller, body.get("job_id"))
            settings = json.loads(job.settings)
            token = body.get("idempotency_token")
            if token:
                existing = sess.scalar(select(JobRun).where(JobRun.job_id == job.job_id,
                                                            JobRun.idempotency_token == str(token)[:64]))
                if existing is not None:
                    return existing.run_id
            run_as = sess.get(User, job.run_as_user_id)
        only = body.get("only")
        if only is not None:
            if not isinstance(only, list) or not all(isinstance(k, str) for k in only):
                raise invalid("only must be a list of task keys.")
            keys = {t["task_key"] for t in settings["tasks"]}
            if unknown := [k for k in only if k not in keys]:
                raise invalid(f"only: task {unknown[0]!r} does not exist in job {job.job_id}.")
            settings["tasks"] = [{**t, "depends_on": [d for d in t["depends_on"] if d["task_key"] in only]}
                                 for t in settings["tasks"] if t["task_key"] in only]
        overrides = {k: body[k] for k in ("notebook_params", "python_params", "job_parameters")
                     if body.get(k) is not None}
        if "notebook_params" in overrides:
            overrides["notebook_params"] = jobs_spec.str_map(overrides["notebook_params"], "notebook_params")
        if "python_params" in overrides:
            overrides["python_params"] = jobs_spec.str_list(overrides["python_params"], "python_params")
        if "job_parameters" in overrides:
            overrides["job_parameters"] = jobs_spec.str_map(overrides["job_parameters"], "job_parameters")
        return self._create_run(job.job_id, settings, "JOB_RUN", "ONE_TIME", caller, run_as, overrides,
                                token=str(token)[:64] if token else None)

    def submit(self, caller: Principal, body: dict) -> int:
        data = jobs_spec.single_task_to_tasks(dict(body))
        tasks, clusters = jobs_spec.normalize_tasks(data.get("tasks"), data.get("job_clusters"),
                                                    self._check_cluster(caller))
        if not tasks:
            raise invalid("tasks is required: a run needs at least one task.")
        spec = {"tasks": tasks, "job_clusters": clusters, "run_name": data.get("run_name") or "Untitled",
                "timeout_seconds": jobs_spec.check_int(data, "timeout_seconds", "", 0) or 0,
                "format": data.get("format", "MULTI_TASK"), "max_concurrent_runs": 0}
        token = body.get("idempotency_token")
        with self.store.session() as sess:
            if token:
                existing = sess.scalar(select(JobRun).where(JobRun.run_type == "SUBMIT_RUN",
                                                            JobRun.creator_user_id == caller.id,
                                                            JobRun.idempotency_token == str(token)[:64]))
                if existing is not None:
                    return existing.run_id
            run_as = self._run_as(sess, caller, data)
        return self._create_run(None, spec, "SUBMIT_RUN", "ONE_TIME", caller, run_as, {},
                                token=str(token)[:64] if token else None)

    def _scheduled_fire(self, job_id: int) -> None:
        if "clusters" not in self.ws.services:
            return  # the workspace is still starting
        with self.store.session() as sess:
            job = sess.get(Job, job_id)
            if job is None:
                return
            settings = json.loads(job.settings)
            creator = Principal(job.creator_user_id, job.creator_user_name, False)
            run_as = sess.get(User, job.run_as_user_id)
        if settings.get("tasks") and run_as is not None:
            self._create_run(job_id, settings, "JOB_RUN", "PERIODIC", creator, run_as, {})

    def _create_run(self, job_id: int | None, settings: dict, run_type: str, trigger: str, caller: Principal,
                    run_as: User, overrides: dict, token: str | None = None) -> int:
        if not settings.get("tasks"):
            raise invalid(f"Job {job_id} has no tasks to run.")
        run_id = self.ids.next()
        job_params = {p["name"]: p["default"] for p in settings.get("parameters") or []}
        job_params.update(overrides.get("job_parameters") or {})
        refs = {"job.id": str(job_id or ""), "job_id": str(job_id or ""), "job.run_id": str(run_id),
                "parent_run_id": str(run_id), "job.name": settings.get("name", settings.get("run_name", "")),
                **{f"job.parameters.{k}": v for k, v in job_params.items()}}
        params = {"overriding_parameters": {k: v for k, v in overrides.items() if k != "job_parameters"}}
        if job_params:
            defaults = {p["name"]: p["default"] for p in settings.get("parameters") or []}
            params["job_parameters"] = [{"name": k, "default": defaults.get(k), "value": v}
                                        for k, v in job_params.items()]
        now = now_ms()
        with self._admit_lock, self.store.session() as sess:
            state, message, result = self._admission(sess, job_id, settings)
            run = JobRun(run_id=run_id, job_id=job_id, run_type=run_type,
                         run_name=settings.get("run_name") or settings.get("name") or "Untitled", trigger=trigger,
                         creator_user_id=caller.id, creator_user_name=caller.user_name, run_as_user_id=run_as.id,
                         run_as_user_name=run_as.user_name, spec=json.dumps(settings), params=json.dumps(params),
                         life_cycle_state=state, result_state=result, state_message=message,
                         user_cancelled_or_timedout=False, idempotency_token=token, start_time=now,
                         end_time=now if state == "SKIPPED" else None)
            if state == "SKIPPED":
                run.termination = json.dumps({"code": "MAX_CONCURRENT_RUNS_EXCEEDED", "type": "CLIENT_ERROR",
                                              "message": message})
            sess.add(run)
            sess.flush()
            if state != "SKIPPED":
                for task in settings["tasks"]:
                    tid = self.ids.next()
                    resolved = self._resolve_task(task, overrides, job_params,
                                                  {**refs, "task.run_id": str(tid), "run_id": str(tid),
                                                   "task.name": task["task_key"], "task_key": task["task_key"]})
                    life = state if state == "QUEUED" else ("BLOCKED" if task.get("depends_on") else "PENDING")
                    sess.add(JobTaskRun(run_id=tid, parent_run_id=run_id, task_key=task["task_key"],
                                        attempt_number=0, spec=json.dumps(resolved), life_cycle_state=life,
                                        state_message="", start_time=now, result_truncated=False,
                                        logs_truncated=False, setup_duration=0, execution_duration=0,
                                        cleanup_duration=0))
        if state == "PENDING":
            self.supervisor.start(run_id, settings.get("timeout_seconds") or 0)
        return run_id

    def _admission(self, sess: Session, job_id: int | None, settings: dict) -> tuple[str, str, str | None]:
        """PENDING (start now), QUEUED, or SKIPPED when max_concurrent_runs is reached."""
        if job_id is None:
            return "PENDING", "Waiting for the cluster", None
        limit = settings.get("max_concurrent_runs", 1)
        active = len(list(sess.scalars(select(JobRun.run_id).where(
            JobRun.job_id == job_id, JobRun.life_cycle_state.in_([s for s in ACTIVE if s != "QUEUED"])))))
        queued = sess.scalar(select(JobRun.run_id).where(JobRun.job_id == job_id,
                                                         JobRun.life_cycle_state == "QUEUED").limit(1))
        if active < limit and queued is None:
            return "PENDING", "Waiting for the cluster", None
        if (settings.get("queue") or {}).get("enabled"):
            return "QUEUED", f"Queued: the job already has {active} active run(s) (max_concurrent_runs={limit}).", None
        return ("SKIPPED", f"Skipping this run because the limit of {limit} maximum concurrent runs has been "
                "reached.", "MAXIMUM_CONCURRENT_RUNS_REACHED")

    @staticmethod
    def _resolve_task(task: dict, overrides: dict, job_params: dict, refs: dict) -> dict:
        """The task with run-now overrides and {{dynamic value references}} filled in."""
        def sub(text: str) -> str:
            return REF_RE.sub(lambda m: refs.get(m.group(1), m.group(0)), text)

        task = json.loads(json.dumps(task))
        if "notebook_task" in task:
            nb = task["notebook_task"]
            values = {**nb.get("base_parameters", {}), **(overrides.get("notebook_params") or {}), **job_params}
            nb["base_parameters"] = {k: sub(v) for k, v in values.items()}
        if "spark_python_task" in task:
            py = task["spark_python_task"]
            values = overrides.get("python_params") if overrides.get("python_params") is not None \
                else py.get("parameters", [])
            py["parameters"] = [sub(v) for v in values]
        return task

    def run_finished(self, run_id: int) -> None:
        """Start the oldest queued run of the job, now that a slot may be free."""
        with self.store.session() as sess:
            run = sess.get(JobRun, run_id)
            job_id = run.job_id if run else None
        if job_id is None:
            return
        with self._admit_lock:
            with self.store.session() as sess:
                job = sess.get(Job, job_id)
                queued = sess.scalar(select(JobRun).where(JobRun.job_id == job_id, JobRun.life_cycle_state ==
                                                          "QUEUED").order_by(JobRun.run_id).limit(1))
                if job is None or queued is None:
                    return
                limit = json.loads(job.settings).get("max_concurrent_runs", 1)
                active = len(list(sess.scalars(select(JobRun.run_id).where(
                    JobRun.job_id == job_id, JobRun.life_cycle_state.in_([s for s in ACTIVE if s != "QUEUED"])))))
                if active >= limit:
                    return
                queued.life_cycle_state, queued.state_message = "PENDING", "Waiting for the cluster"
                queued.queue_duration = now_ms() - queued.start_time
                for row in sess.scalars(select(JobTaskRun).where(JobTaskRun.parent_run_id == queued.run_id)):
                    row.life_cycle_state = "BLOCKED" if json.loads(row.spec).get("depends_on") else "PENDING"
                run_id, timeout = queued.run_id, json.loads(queued.spec).get("timeout_seconds") or 0
        self.supervisor.start(run_id, timeout)

    # ---- helpers for the supervisor ------------------------------------------------------
    def issue_run_token(self, user: Principal, run_id: int) -> tuple[str, str]:
        """A token of the run's user for code in the run (revoked when the run ends)."""
        with self.store.session() as sess:
            owner = sess.get(User, user.id)
            value, tok = self.ws.services["tokens"].create(sess, owner, user, RUN_TOKEN_COMMENT.format(run_id=run_id),
                                                           RUN_TOKEN_LIFETIME)
            return value, tok.token_id

    def revoke_run_token(self, token_id: str) -> None:
        with self.store.session() as sess:
            tok = sess.get(Token, token_id)
            if tok is not None:
                sess.delete(tok)

    def new_attempt(self, run_id: int, task_key: str, attempt: int) -> int:
        with self.store.session() as sess:
            prev = sess.scalar(select(JobTaskRun).where(JobTaskRun.parent_run_id == run_id,
                                                        JobTaskRun.task_key == task_key)
                               .order_by(JobTaskRun.attempt_number.desc()).limit(1))
            tid = self.ids.next()
            sess.add(JobTaskRun(run_id=tid, parent_run_id=run_id, task_key=task_key, attempt_number=attempt,
                                spec=prev.spec, life_cycle_state="WAITING_FOR_RETRY",
                                state_message=f"Waiting to retry (attempt {attempt})", start_time=now_ms(),
                                result_truncated=False, logs_truncated=False, setup_duration=0,
                                execution_duration=0, cleanup_duration=0))
        return tid

    def mark_run_running(self, run_id: int) -> None:
        with self.store.session() as sess:
            run = sess.get(JobRun, run_id)
            if run is not None and run.life_cycle_state == "PENDING":
                run.life_cycle_state, run.state_message = "RUNNING", "In run"

    def run_spec(self, run_id: int) -> dict:
        with self.store.session() as sess:
            return json.loads(sess.get(JobRun, run_id).spec)

    def task_message(self, run_id: int, task_key: str) -> str:
        with self.store.session() as sess:
            row = sess.scalar(select(JobTaskRun).where(JobTaskRun.parent_run_id == run_id,
                                                       JobTaskRun.task_key == task_key)
                              .order_by(JobTaskRun.attempt_number.desc()).limit(1))
            return (row.error or row.state_message or "Task failed.") if row else "Task failed."

    def library_note(self, task: dict, cluster_id: str, user: Principal) -> str:
        """Install the task's libraries on its cluster (raises when one fails); a note for the run state."""
        return self.ws.services["libraries"].install_for_job(user, cluster_id, task.get("libraries") or [])

    # ---- lifecycle -----------------------------------------------------------------------
    def _recover(self) -> None:
        """After a restart no run of ours is executing: say so truthfully, revoke their tokens."""
        with self.store.session() as sess:
            for run in sess.scalars(select(JobRun).where(JobRun.life_cycle_state.in_(ACTIVE))):
                run.life_cycle_state, run.result_state = "INTERNAL_ERROR", "FAILED"
                run.state_message, run.end_time = RESTART_MESSAGE, now_ms()
                run.termination = json.dumps({"code": "INTERNAL_ERROR", "type": "INTERNAL_ERROR",
                                              "message": RESTART_MESSAGE})
                for row in sess.scalars(select(JobTaskRun).where(JobTaskRun.parent_run_id == run.run_id,
                                                                 JobTaskRun.life_cycle_state.in_(ACTIVE))):
                    row.life_cycle_state, row.result_state = "INTERNAL_ERROR", "FAILED"
                    row.state_message, row.end_time = RESTART_MESSAGE, now_ms()
                prefix = RUN_TOKEN_COMMENT.format(run_id=run.run_id)
                for tok in sess.scalars(select(Token).where(Token.comment == prefix)):
                    sess.delete(tok)

    def close(self) -> None:
        self.scheduler.stop()
        self.supervisor.close()
