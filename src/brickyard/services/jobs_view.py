"""Wire shapes of jobs and runs (Job, BaseJob, Run, RunTask, RunOutput) from store rows."""
from __future__ import annotations

import json

from brickyard.store.models import Job, JobRun, JobTaskRun

V2_STATE = {"QUEUED": "QUEUED", "PENDING": "PENDING", "RUNNING": "RUNNING", "TERMINATING": "TERMINATING",
            "BLOCKED": "BLOCKED", "WAITING_FOR_RETRY": "WAITING", "TERMINATED": "TERMINATED",
            "SKIPPED": "TERMINATED", "INTERNAL_ERROR": "TERMINATED"}
TASK_KINDS = ("notebook_task", "spark_python_task")
TASK_FIELDS = ("description", "depends_on", "existing_cluster_id", "new_cluster", "job_cluster_key", "libraries",
               "timeout_seconds", "max_retries", "min_retry_interval_millis", "retry_on_timeout", "run_if",
               "disabled", "email_notifications") + TASK_KINDS


def run_page_url(base_url: str, job_id: int | None, run_id: int) -> str:
    """The run's page: `#job/<job_id>/run/<run_id>`, or `#run/<run_id>` for a one-time run."""
    return f"{base_url}/#job/{job_id}/run/{run_id}" if job_id else f"{base_url}/#run/{run_id}"


def settings_for(settings: dict, api: str) -> dict:
    """The stored settings; API 2.0 gets a single-task job back in its original flat shape."""
    if api != "2.0" or settings.get("format") != "SINGLE_TASK" or len(settings.get("tasks") or []) != 1:
        return settings
    flat = {k: v for k, v in settings.items() if k != "tasks"}
    task = settings["tasks"][0]
    flat.update({k: v for k, v in task.items() if k not in ("task_key", "depends_on", "timeout_seconds")
                 and v not in (None, [])})
    return flat


def job_view(job: Job, api: str, with_tasks: bool = True) -> dict:
    settings = json.loads(job.settings)
    if not with_tasks:
        settings = {k: v for k, v in settings.items() if k not in ("tasks", "job_clusters")}
    return {"job_id": job.job_id, "creator_user_name": job.creator_user_name,
            "run_as_user_name": job.run_as_user_name, "created_time": job.created_time,
            "settings": settings_for(settings, api)}


def _state(life: str, result: str | None, message: str, cancelled: bool = False) -> dict:
    out = {"life_cycle_state": life, "state_message": message or "", "user_cancelled_or_timedout": cancelled}
    if result:
        out["result_state"] = result
    return out


def _durations(start: int, end: int | None, now: int) -> int:
    return max((end or now) - start, 0)


def task_view(row: JobTaskRun, base_url: str, job_id: int | None, now: int) -> dict:
    spec = json.loads(row.spec)
    out = {k: spec[k] for k in TASK_FIELDS if spec.get(k) not in (None, [])}
    out.update({
        "task_key": row.task_key,
        "run_id": row.run_id,
        "attempt_number": row.attempt_number,
        "state": _state(row.life_cycle_state, row.result_state, row.state_message),
        "status": {"state": V2_STATE.get(row.life_cycle_state, "TERMINATED")},
        "start_time": row.start_time,
        "end_time": row.end_time or 0,
        "setup_duration": row.setup_duration,
        "execution_duration": row.execution_duration,
        "cleanup_duration": row.cleanup_duration,
        "run_duration": _durations(row.start_time, row.end_time, now),
        "run_page_url": run_page_url(base_url, job_id, row.run_id),
    })
    if row.cluster_id:
        out["cluster_instance"] = {"cluster_id": row.cluster_id}
    return out


def latest_attempts(rows: list[JobTaskRun]) -> list[JobTaskRun]:
    latest: dict[str, JobTaskRun] = {}
    for r in rows:
        if r.task_key not in latest or r.attempt_number > latest[r.task_key].attempt_number:
            latest[r.task_key] = r
    order = {r.task_key: i for i, r in enumerate(sorted(rows, key=lambda r: r.run_id))}
    return sorted(latest.values(), key=lambda r: order[r.task_key])


def run_view(run: JobRun, rows: list[JobTaskRun], base_url: str, now: int, with_tasks: bool = True) -> dict:
    spec, params = json.loads(run.spec), json.loads(run.params)
    tasks = [task_view(r, base_url, run.job_id, now) for r in latest_attempts(rows)]
    out = {
        "run_id": run.run_id,
        "number_in_job": run.run_id,
        "original_attempt_run_id": run.run_id,
        "attempt_number": 0,
        "creator_user_name": run.creator_user_name,
        "run_as_user_name": run.run_as_user_name,
        "run_name": run.run_name,
        "run_type": run.run_type,
        "trigger": run.trigger,
        "state": _state(run.life_cycle_state, run.result_state, run.state_message, run.user_cancelled_or_timedout),
        "status": {"state": V2_STATE.get(run.life_cycle_state, "TERMINATED")},
        "start_time": run.start_time,
        "end_time": run.end_time or 0,
        "run_duration": _durations(run.start_time, run.end_time, now),
        "queue_duration": run.queue_duration or 0,
        "run_page_url": run_page_url(base_url, run.job_id, run.run_id),
        "format": spec.get("format", "MULTI_TASK"),
    }
    if run.termination:
        out["status"]["termination_details"] = json.loads(run.termination)
    if run.job_id:
        out["job_id"] = run.job_id
    for key in ("job_parameters", "overriding_parameters"):
        if params.get(key):
            out[key] = params[key]
    if spec.get("job_clusters"):
        out["job_clusters"] = spec["job_clusters"]
    if spec.get("schedule") and run.trigger == "PERIODIC":
        out["schedule"] = spec["schedule"]
    if len(tasks) == 1:
        # A one-task run reports its task's timings and cluster at the top, as single-task runs always did.
        only = tasks[0]
        for key in ("setup_duration", "execution_duration", "cleanup_duration", "cluster_instance"):
            if key in only:
                out[key] = only[key]
        out["cluster_spec"] = {k: only[k] for k in ("existing_cluster_id", "new_cluster", "job_cluster_key",
                                                    "libraries") if k in only}
        out["task"] = {k: only[k] for k in TASK_KINDS if k in only}
    else:
        out.update({"setup_duration": 0, "execution_duration": 0, "cleanup_duration": 0})
    if with_tasks:
        out["tasks"] = tasks
    return out


def output_view(row: JobTaskRun, metadata: dict) -> dict:
    out: dict = {"metadata": metadata}
    spec = json.loads(row.spec)
    if "notebook_task" in spec and row.life_cycle_state in ("TERMINATED", "INTERNAL_ERROR", "SKIPPED"):
        nb = {}
        if row.result is not None:
            nb = {"result": row.result, "truncated": row.result_truncated}
        out["notebook_output"] = nb
    if row.logs is not None:
        out["logs"] = row.logs
        out["logs_truncated"] = row.logs_truncated
    if row.error:
        out["error"] = row.error
    if row.error_trace:
        out["error_trace"] = row.error_trace
    return out
