"""The job-run supervisor: runs tasks in dependency order on clusters, with retries, timeouts and cancel."""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from collections.abc import Callable
from dataclasses import dataclass, field

from brickyard.errors import BrickyardError
from brickyard.services.clusters import reason
from brickyard.services.common import now_ms
from brickyard.services.jobs_spec import topological_order
from brickyard.services.jobs_tasks import TaskOutcome, run_notebook, run_python
from brickyard.services.users import Principal, principal_of
from brickyard.store.models import JobRun, JobTaskRun, User

log = logging.getLogger(__name__)
ACTIVE = ("QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING_FOR_RETRY")
FAILED_LIKE = ("FAILED", "TIMEDOUT", "UPSTREAM_FAILED", "INTERNAL_ERROR")
CANCELED_LIKE = ("CANCELED", "UPSTREAM_CANCELED")
CLUSTER_START_TIMEOUT = 900


class Cancelled(Exception):
    """The run was cancelled (or timed out) while a task waited."""


class SetupError(Exception):
    """The task's cluster could not be made ready."""


@dataclass
class RunControl:
    """In-memory handle of an active run: its cancel flag and what to stop."""

    run_id: int
    cancel: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False
    deadline: float | None = None
    job_clusters: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stopping(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline and not self.cancel.is_set():
            self.timed_out = True
            self.cancel.set()
        return self.cancel.is_set()


@dataclass
class TaskContext:
    """What a task attempt needs: the run's ids, its user and token, the cluster it runs on."""

    run_id: int
    job_id: int | None
    task_run_id: int
    attempt: int
    task: dict
    user: Principal
    token: str
    control: RunControl
    cluster_id: str = ""
    deadline: float | None = None
    report: Callable[[str], None] | None = None  # the task's state_message while it runs (progress)


class RunSupervisor:
    """Executes admitted runs, one thread per run, each task attempt in a worker thread."""

    def __init__(self, ws, service):  # noqa: ANN001
        self.ws = ws
        self.store = ws.store
        self.service = service  # JobService: ids, tokens, admission of queued runs
        self.controls: dict[int, RunControl] = {}
        self._lock = threading.Lock()
        # While the workspace stops, runs are cut short but keep their active state in the store:
        # the next start marks them INTERNAL_ERROR (the same path as after a crash).
        self.shutting_down = False

    # ---- control -------------------------------------------------------------------------
    def start(self, run_id: int, timeout_seconds: int) -> None:
        ctl = RunControl(run_id)
        if timeout_seconds:
            ctl.deadline = time.monotonic() + timeout_seconds
        with self._lock:
            self.controls[run_id] = ctl
        threading.Thread(target=self._execute, args=(ctl,), name=f"job-run-{run_id}", daemon=True).start()

    def cancel(self, run_id: int) -> bool:
        """Ask an executing run to stop; False when no thread runs it."""
        ctl = self.controls.get(run_id)
        if ctl is None:
            return False
        ctl.cancel.set()
        return True

    def close(self) -> None:
        self.shutting_down = True
        for ctl in list(self.controls.values()):
            ctl.cancel.set()

    # ---- store helpers -------------------------------------------------------------------
    def _update_run(self, run_id: int, **fields: object) -> None:
        if self.shutting_down:
            return
        with self.store.session() as sess:
            run = sess.get(JobRun, run_id)
            if run is not None:
                for k, v in fields.items():
                    setattr(run, k, v)

    def _update_task(self, task_run_id: int, **fields: object) -> None:
        if self.shutting_down:
            return
        with self.store.session() as sess:
            row = sess.get(JobTaskRun, task_run_id)
            if row is not None:
                for k, v in fields.items():
                    setattr(row, k, v)

    # ---- the run -------------------------------------------------------------------------
    def _execute(self, ctl: RunControl) -> None:
        run_id = ctl.run_id
        token_id = None
        try:
            with self.store.session() as sess:
                run = sess.get(JobRun, run_id)
                spec, job_id = json.loads(run.spec), run.job_id
                user = principal_of(sess.get(User, run.run_as_user_id))
                task_rows = list(sess.query(JobTaskRun).filter_by(parent_run_id=run_id))
                rows = {r.task_key: r.run_id for r in task_rows}
                # Run the tasks as resolved for this run (overrides and {{references}} filled in).
                resolved = {r.task_key: json.loads(r.spec) for r in task_rows}
                spec["tasks"] = [resolved.get(t["task_key"], t) for t in spec["tasks"]]
            token, token_id = self.service.issue_run_token(user, run_id)
            outcomes = self._run_tasks(ctl, spec, job_id, rows, user, token)
            self._finish(ctl, spec, outcomes)
        except Exception as exc:  # noqa: BLE001 - a run must end in a true state, never hang
            if self.shutting_down:
                return
            log.exception("job run %s failed in the supervisor", run_id)
            self._update_run(run_id, life_cycle_state="INTERNAL_ERROR", result_state="FAILED", end_time=now_ms(),
                             state_message=f"Internal error in the job supervisor: {exc}",
                             termination=json.dumps({"code": "INTERNAL_ERROR", "type": "INTERNAL_ERROR",
                                                     "message": str(exc)[:1000]}))
        finally:
            self._stop_job_clusters(ctl)
            if token_id:
                self.service.revoke_run_token(token_id)
            with self._lock:
                self.controls.pop(run_id, None)
            if not self.shutting_down:
                self.service.run_finished(run_id)

    def _run_tasks(self, ctl: RunControl, spec: dict, job_id: int | None, rows: dict[str, int],
                   user: Principal, token: str) -> dict[str, str]:
        tasks = {t["task_key"]: t for t in spec["tasks"]}
        order = topological_order(spec["tasks"])
        outcomes: dict[str, str] = {}
        running: dict = {}
        with ThreadPoolExecutor(max_workers=max(len(tasks), 1), thread_name_prefix=f"job-task-{ctl.run_id}") as pool:
            while len(outcomes) < len(tasks):
                for key in order:
                    if key in outcomes or key in running.values():
                        continue
                    deps = [d["task_key"] for d in tasks[key].get("depends_on") or []]
                    if not all(d in outcomes for d in deps):
                        continue
                    skip = self._skip_reason(ctl, tasks[key], [outcomes[d] for d in deps])
                    if skip:
                        outcomes[key] = skip[0]
                        self._update_task(rows[key], life_cycle_state="SKIPPED", result_state=skip[0],
                                          state_message=skip[1], end_time=now_ms())
                        continue
                    fut = pool.submit(self._run_task, ctl, job_id, tasks[key], rows, user, token)
                    running[fut] = key
                if not running:
                    break
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                ctl.stopping()
                for fut in done:
                    outcomes[running.pop(fut)] = fut.result()
        return outcomes

    @staticmethod
    def _skip_reason(ctl: RunControl, task: dict, upstream: list[str]) -> tuple[str, str] | None:
        if ctl.stopping():
            return ("UPSTREAM_CANCELED" if upstream else "CANCELED",
                    "The run was cancelled before this task started." if not ctl.timed_out else
                    "The run timed out before this task started.")
        if task.get("disabled"):
            return ("DISABLED", "The task is disabled.")
        rule = task.get("run_if") or "ALL_SUCCESS"
        ok = [u in ("SUCCESS", "DISABLED", "SUCCESS_WITH_FAILURES") for u in upstream]
        bad = [u in FAILED_LIKE for u in upstream]
        run = {"ALL_SUCCESS": all(ok), "ALL_DONE": True, "NONE_FAILED": not any(bad),
               "AT_LEAST_ONE_SUCCESS": any(ok), "ALL_FAILED": all(bad),
               "AT_LEAST_ONE_FAILED": any(bad)}[rule]
        if run:
            return None
        if any(u in CANCELED_LIKE for u in upstream):
            return ("UPSTREAM_CANCELED", "Upstream task(s) were cancelled.")
        if any(bad):
            return ("UPSTREAM_FAILED", "Upstream task(s) failed.")
        return ("EXCLUDED", f"The task's run_if condition {rule} was not met.")

    def _run_task(self, ctl: RunControl, job_id: int | None, task: dict, rows: dict[str, int],
                  user: Principal, token: str) -> str:
        """Every attempt of one task; returns its final result_state."""
        key = task["task_key"]
        retries = task.get("max_retries") or 0
        attempt, own_cluster = 0, None
        try:
            while True:
                ctx = TaskContext(ctl.run_id, job_id, rows[key], attempt, task, user, token, ctl)
                result = self._attempt(ctx, own_cluster)
                own_cluster = own_cluster or (ctx.cluster_id if task.get("new_cluster") else None)
                retryable = result == "FAILED" or (result == "TIMEDOUT" and task.get("retry_on_timeout"))
                if not retryable or ctl.stopping() or (retries != -1 and attempt >= retries):
                    return result
                attempt += 1
                rows[key] = self.service.new_attempt(ctl.run_id, key, attempt)
                if ctl.cancel.wait((task.get("min_retry_interval_millis") or 0) / 1000) or ctl.stopping():
                    self._update_task(rows[key], life_cycle_state="SKIPPED", result_state="CANCELED",
                                      state_message="The run was cancelled before this retry.", end_time=now_ms())
                    return "CANCELED"
        finally:
            if own_cluster:
                self._terminate_cluster(own_cluster)

    def _attempt(self, ctx: TaskContext, own_cluster: str | None) -> str:
        task, started = ctx.task, now_ms()
        self._update_task(ctx.task_run_id, life_cycle_state="PENDING", state_message="Waiting for the cluster",
                          start_time=started)
        try:
            ctx.cluster_id = own_cluster or self._cluster_for(ctx)
            self._update_task(ctx.task_run_id, cluster_id=ctx.cluster_id)
            self._wait_running(ctx.cluster_id, ctx.control)
        except Cancelled:
            cancelled = "TIMEDOUT" if ctx.control.timed_out else "CANCELED"
            self._update_task(ctx.task_run_id, life_cycle_state="TERMINATED", result_state=cancelled,
                              state_message="The run stopped while its cluster was starting.", end_time=now_ms(),
                              setup_duration=now_ms() - started)
            return cancelled
        except (SetupError, BrickyardError) as exc:
            message = exc.message if isinstance(exc, BrickyardError) else str(exc)
            self._update_task(ctx.task_run_id, life_cycle_state="INTERNAL_ERROR", result_state="FAILED",
                              state_message=message, error=message, end_time=now_ms(),
                              setup_duration=now_ms() - started)
            return "FAILED"
        try:
            if "{{" in json.dumps(task):
                # {{tasks.<task>.values.<key>}}: values set by upstream tasks of this run, known only now.
                task = ctx.task = self.service.fill_task_value_refs(ctx.run_id, task)
                self._update_task(ctx.task_run_id, spec=json.dumps(task))
            note = self.service.library_note(task, ctx.cluster_id, ctx.user)
        except BrickyardError as exc:
            self._update_task(ctx.task_run_id, life_cycle_state="INTERNAL_ERROR", result_state="FAILED",
                              state_message=exc.message, error=exc.message, end_time=now_ms(),
                              setup_duration=now_ms() - started)
            return "FAILED"
        setup = now_ms() - started
        self._update_task(ctx.task_run_id, life_cycle_state="RUNNING", setup_duration=setup,
                          state_message=note or "In run")
        self.service.mark_run_running(ctx.run_id)
        if task.get("timeout_seconds"):
            ctx.deadline = time.monotonic() + task["timeout_seconds"]
        clusters = self.ws.services["clusters"]
        clusters.mark_busy(ctx.cluster_id, +1)
        exec_start = now_ms()
        try:
            if "notebook_task" in task:
                ctx.report = lambda message: self._update_task(ctx.task_run_id, state_message=message)
                outcome = run_notebook(self.ws, ctx)
            else:
                outcome = run_python(self.ws, ctx)
        except Exception as exc:  # noqa: BLE001 - the task fails, the run goes on
            log.exception("task run %s failed to execute", ctx.task_run_id)
            outcome = TaskOutcome("FAILED", error=f"Internal error running the task: {exc}")
        finally:
            clusters.mark_busy(ctx.cluster_id, -1)
        message = {"SUCCESS": "", "CANCELED": "The run was cancelled.",
                   "TIMEDOUT": "The task timed out."}.get(outcome.result_state, outcome.error or "Task failed.")
        self._update_task(
            ctx.task_run_id, life_cycle_state="TERMINATED", result_state=outcome.result_state,
            state_message=(message or "")[:4000], end_time=now_ms(), execution_duration=now_ms() - exec_start,
            result=outcome.result, result_truncated=outcome.result_truncated, error=outcome.error,
            error_trace=outcome.error_trace, logs=outcome.logs, logs_truncated=outcome.logs_truncated,
            notebook=outcome.notebook,
        )
        return outcome.result_state

    # ---- clusters ------------------------------------------------------------------------
    def _cluster_for(self, ctx: TaskContext) -> str:
        task, clusters = ctx.task, self.ws.services["clusters"]
        prefix = f"job-{ctx.job_id}-run-{ctx.run_id}" if ctx.job_id else f"run-{ctx.run_id}"
        if task.get("existing_cluster_id"):
            cid = task["existing_cluster_id"]
            state = clusters.get(cid)["state"]
            if state in ("TERMINATED", "ERROR"):
                clusters.start(ctx.user, cid)
            return cid
        if task.get("new_cluster"):
            body = {**task["new_cluster"], "cluster_name": f"{prefix}-{task['task_key']}"[:100]}
            return clusters.create(ctx.user, body, source="JOB")
        key = task["job_cluster_key"]
        with ctx.control.lock:
            if key not in ctx.control.job_clusters:
                spec = next(jc for jc in self.service.run_spec(ctx.run_id).get("job_clusters") or []
                            if jc["job_cluster_key"] == key)
                body = {**spec["new_cluster"], "cluster_name": f"{prefix}-{key}"[:100]}
                ctx.control.job_clusters[key] = clusters.create(ctx.user, body, source="JOB")
            return ctx.control.job_clusters[key]

    def _wait_running(self, cluster_id: str, ctl: RunControl) -> None:
        clusters = self.ws.services["clusters"]
        deadline = time.monotonic() + CLUSTER_START_TIMEOUT
        while True:
            info = clusters.get(cluster_id)
            if info["state"] == "RUNNING" and cluster_id in clusters.procs:
                return
            if info["state"] in ("TERMINATED", "ERROR", "TERMINATING"):
                why = (info.get("termination_reason") or {}).get("code", "")
                raise SetupError(f"Cluster {cluster_id} is {info['state']} and cannot run the task"
                                 f"{f' ({why})' if why else ''}: {info.get('state_message', '')}".rstrip(": "))
            if time.monotonic() > deadline:
                raise SetupError(f"Cluster {cluster_id} did not start within {CLUSTER_START_TIMEOUT} seconds.")
            if ctl.cancel.wait(0.5) or ctl.stopping():
                raise Cancelled()

    def _terminate_cluster(self, cluster_id: str) -> None:
        try:
            self.ws.services["clusters"].terminate(None, cluster_id, reason("JOB_FINISHED", "SUCCESS"))
        except BrickyardError as exc:
            log.warning("terminating job cluster %s: %s", cluster_id, exc.message)

    def _stop_job_clusters(self, ctl: RunControl) -> None:
        for cid in ctl.job_clusters.values():
            self._terminate_cluster(cid)

    # ---- the end -------------------------------------------------------------------------
    def _finish(self, ctl: RunControl, spec: dict, outcomes: dict[str, str]) -> None:
        if ctl.job_clusters:
            self._update_run(ctl.run_id, life_cycle_state="TERMINATING", state_message="Terminating job clusters")
            self._stop_job_clusters(ctl)
            ctl.job_clusters.clear()
        results = list(outcomes.values())
        failed = [k for k, r in outcomes.items() if r in ("FAILED", "INTERNAL_ERROR")]
        if ctl.timed_out:
            result, message = "TIMEDOUT", f"Run timed out after {spec.get('timeout_seconds')} seconds."
            term = ("RUN_EXECUTION_ERROR", "CLIENT_ERROR")
        elif ctl.cancel.is_set():
            result, message, term = "CANCELED", "Run cancelled.", ("USER_CANCELED", "SUCCESS")
        elif failed:
            msg = self.service.task_message(ctl.run_id, failed[0])
            result = "FAILED"
            message = f"Task {failed[0]} failed with message: {msg}" if len(spec["tasks"]) > 1 else msg
            if any(r == "UPSTREAM_FAILED" for r in results):
                message += " This caused all downstream tasks to get skipped."
            term = ("RUN_EXECUTION_ERROR", "CLIENT_ERROR")
        elif "TIMEDOUT" in results:
            result, message, term = "TIMEDOUT", "A task timed out.", ("RUN_EXECUTION_ERROR", "CLIENT_ERROR")
        elif any(r in CANCELED_LIKE for r in results):
            result, message, term = "CANCELED", "Run cancelled.", ("CANCELED", "SUCCESS")
        elif any(r in FAILED_LIKE for r in results):
            result, message, term = "FAILED", "Upstream task(s) failed.", ("RUN_EXECUTION_ERROR", "CLIENT_ERROR")
        else:
            result, message, term = "SUCCESS", "", ("SUCCESS", "SUCCESS")
        self._update_run(ctl.run_id, life_cycle_state="TERMINATED", result_state=result,
                         state_message=message[:4000], end_time=now_ms(),
                         user_cancelled_or_timedout=ctl.cancel.is_set(),
                         termination=json.dumps({"code": term[0], "type": term[1], "message": message[:1000]}))
