"""Validate and normalise job settings and submitted runs (JobSettings / SubmitTask shapes)."""
from __future__ import annotations

import copy
import re

from brickyard.errors import BrickyardError, invalid
from brickyard.services import cluster_spec
from brickyard.services.cron import Cron, CronError, zone

TASK_KEY_RE = re.compile(r"^[\w\-.]{1,100}$")
TASK_TYPES = ("notebook_task", "spark_python_task")
UNSUPPORTED_TASK_TYPES = (
    "spark_jar_task", "python_wheel_task", "spark_submit_task", "pipeline_task", "sql_task", "dbt_task",
    "run_job_task", "condition_task", "for_each_task", "dashboard_task", "power_bi_task", "clean_rooms_notebook_task",
    "dbt_cloud_task", "dbt_platform_task", "alert_task", "gen_ai_compute_task", "python_operator_task",
    "ai_function_task", "ai_runtime_task",
)
LIBRARY_KINDS = ("jar", "egg", "whl", "pypi", "maven", "cran", "requirements")
# Top-level fields of a 2.0 single-task job; they move into one task named after the job.
SINGLE_TASK_FIELDS = ("notebook_task", "spark_python_task", "spark_jar_task", "spark_submit_task",
                      "python_wheel_task", "pipeline_task", "existing_cluster_id", "new_cluster", "libraries",
                      "max_retries", "min_retry_interval_millis", "retry_on_timeout")
DEFAULT_TASK_KEY = "__default__"
RUN_IF = ("ALL_SUCCESS", "ALL_DONE", "NONE_FAILED", "AT_LEAST_ONE_SUCCESS", "ALL_FAILED", "AT_LEAST_ONE_FAILED")
MAX_TASKS = 100


def check_int(data: dict, name: str, where: str, lo: int, hi: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{where}{name} must be an integer.")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise invalid(f"{where}{name} must be {bound}; got {value}.")
    data[name] = value
    return value


def str_map(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise invalid(f"{where} must be an object of string keys and values.")
    out = {}
    for k, v in value.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            raise invalid(f"{where}.{k} must be a string.")
        out[k] = v
    return out


def str_list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(f"{where} must be a list of strings.")
    return list(value)


def check_cluster(spec: object, where: str) -> dict:
    """A new_cluster spec, checked now so that a bad one fails at create, not at run time."""
    if not isinstance(spec, dict):
        raise invalid(f"{where} must be an object (a cluster spec).")
    try:
        cluster_spec.normalize({**spec, "cluster_name": spec.get("cluster_name") or "job-cluster"})
    except BrickyardError as exc:
        raise invalid(f"{where}: {exc.message}") from None
    return spec


def _libraries(value: object, where: str) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid(f"{where} must be a list of libraries.")
    for i, lib in enumerate(value):
        if not isinstance(lib, dict) or len([k for k in lib if k in LIBRARY_KINDS]) != 1:
            raise invalid(f"{where}[{i}] must name exactly one of {', '.join(LIBRARY_KINDS)}.")
    return value


def normalize_task(task: object, i: int, job_clusters: set[str], check_existing) -> dict:  # noqa: ANN001
    """One task, checked; `check_existing(cluster_id, where)` verifies an existing cluster."""
    where = f"tasks[{i}]."
    if not isinstance(task, dict):
        raise invalid(f"tasks[{i}] must be an object.")
    task = copy.deepcopy(task)
    key = task.get("task_key")
    if not isinstance(key, str) or not TASK_KEY_RE.match(key):
        raise invalid(f"{where}task_key is required: 1-100 letters, digits, '_', '-' or '.'.")
    kinds = [k for k in TASK_TYPES + UNSUPPORTED_TASK_TYPES if task.get(k) is not None]
    if len(kinds) != 1:
        raise invalid(f"{where[:-1]} ({key}) must have exactly one task type, e.g. notebook_task or "
                      "spark_python_task.")
    kind = kinds[0]
    if kind in UNSUPPORTED_TASK_TYPES:
        raise invalid(f"{where}{kind} is not supported on Brickyard; use notebook_task or spark_python_task.")
    body = task[kind]
    if not isinstance(body, dict):
        raise invalid(f"{where}{kind} must be an object.")
    if kind == "notebook_task":
        path = body.get("notebook_path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise invalid(f"{where}notebook_task.notebook_path is required and must be an absolute workspace "
                          "path.")
        if body.get("source", "WORKSPACE") != "WORKSPACE":
            raise invalid(f"{where}notebook_task.source: only WORKSPACE notebooks are supported (no Git).")
        body["base_parameters"] = str_map(body.get("base_parameters"), f"{where}notebook_task.base_parameters")
    else:
        path = body.get("python_file")
        if not isinstance(path, str) or not (path.startswith("/") or path.lower().startswith("dbfs:/")):
            raise invalid(f"{where}spark_python_task.python_file is required: a dbfs:/ path or an absolute "
                          "workspace path.")
        if body.get("source", "WORKSPACE") != "WORKSPACE":
            raise invalid(f"{where}spark_python_task.source: only WORKSPACE and DBFS files are supported.")
        body["parameters"] = str_list(body.get("parameters"), f"{where}spark_python_task.parameters")
    computes = [k for k in ("existing_cluster_id", "new_cluster", "job_cluster_key") if task.get(k)]
    if len(computes) != 1:
        raise invalid(f"{where[:-1]} ({key}) needs exactly one of existing_cluster_id, new_cluster or "
                      "job_cluster_key (Brickyard has no serverless compute).")
    if task.get("existing_cluster_id") is not None:
        if not isinstance(task["existing_cluster_id"], str):
            raise invalid(f"{where}existing_cluster_id must be a string.")
        check_existing(task["existing_cluster_id"], f"{where}existing_cluster_id")
    if task.get("new_cluster") is not None:
        check_cluster(task["new_cluster"], f"{where}new_cluster")
    if task.get("job_cluster_key") is not None and task["job_cluster_key"] not in job_clusters:
        raise invalid(f"{where}job_cluster_key {task['job_cluster_key']!r} is not defined in job_clusters.")
    task["libraries"] = _libraries(task.get("libraries"), f"{where}libraries")
    check_int(task, "timeout_seconds", where, 0)
    check_int(task, "max_retries", where, -1)
    check_int(task, "min_retry_interval_millis", where, 0)
    if task.get("retry_on_timeout") is not None and not isinstance(task["retry_on_timeout"], bool):
        raise invalid(f"{where}retry_on_timeout must be a boolean.")
    if task.get("run_if") is not None and task["run_if"] not in RUN_IF:
        raise invalid(f"{where}run_if must be one of {', '.join(RUN_IF)}.")
    deps = task.get("depends_on") or []
    if not isinstance(deps, list) or not all(isinstance(d, dict) and isinstance(d.get("task_key"), str)
                                             for d in deps):
        raise invalid(f"{where}depends_on must be a list of objects with a task_key.")
    task["depends_on"] = deps
    return task


def normalize_tasks(tasks: object, job_clusters: object, check_existing) -> tuple[list[dict], list[dict]]:  # noqa: ANN001
    """Tasks and job clusters, checked, with depends_on resolved and acyclic."""
    clusters = job_clusters or []
    if not isinstance(clusters, list):
        raise invalid("job_clusters must be a list.")
    keys: set[str] = set()
    for i, jc in enumerate(clusters):
        if not isinstance(jc, dict) or not isinstance(jc.get("job_cluster_key"), str) or not jc["job_cluster_key"]:
            raise invalid(f"job_clusters[{i}].job_cluster_key is required.")
        if jc["job_cluster_key"] in keys:
            raise invalid(f"job_clusters[{i}].job_cluster_key {jc['job_cluster_key']!r} is duplicated.")
        check_cluster(jc.get("new_cluster"), f"job_clusters[{i}].new_cluster")
        keys.add(jc["job_cluster_key"])
    if tasks is None:
        tasks = []
    if not isinstance(tasks, list):
        raise invalid("tasks must be a list.")
    if len(tasks) > MAX_TASKS:
        raise invalid(f"A job may have at most {MAX_TASKS} tasks.")
    out = [normalize_task(t, i, keys, check_existing) for i, t in enumerate(tasks)]
    by_key: dict[str, dict] = {}
    for i, t in enumerate(out):
        if t["task_key"] in by_key:
            raise invalid(f"tasks[{i}].task_key {t['task_key']!r} is duplicated; task keys must be unique.")
        by_key[t["task_key"]] = t
    for i, t in enumerate(out):
        for d in t["depends_on"]:
            if d["task_key"] not in by_key:
                raise invalid(f"tasks[{i}].depends_on: task {d['task_key']!r} does not exist in this job.")
            if d["task_key"] == t["task_key"]:
                raise invalid(f"tasks[{i}].depends_on: task {t['task_key']!r} depends on itself.")
    topological_order(out)
    return out, clusters


def topological_order(tasks: list[dict]) -> list[str]:
    """Task keys with every task after the ones it depends on; a cycle is a 400."""
    deps = {t["task_key"]: [d["task_key"] for d in t.get("depends_on") or []] for t in tasks}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(key: str, trail: tuple[str, ...]) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            raise invalid(f"tasks: depends_on has a cycle: {' -> '.join(trail + (key,))}.")
        state[key] = 1
        for d in deps[key]:
            visit(d, trail + (key,))
        state[key] = 2
        order.append(key)

    for t in tasks:
        visit(t["task_key"], ())
    return order


def single_task_to_tasks(data: dict) -> dict:
    """Move the top-level task fields of a 2.0 single-task job or submit into one task."""
    if data.get("tasks") or not any(data.get(k) is not None for k in SINGLE_TASK_FIELDS):
        return data
    data = dict(data)
    task = {k: data.pop(k) for k in SINGLE_TASK_FIELDS if data.get(k) is not None}
    for k in ("timeout_seconds",):
        if data.get(k) is not None:
            task[k] = data[k]
    task["task_key"] = DEFAULT_TASK_KEY
    data["tasks"] = [task]
    data["format"] = "SINGLE_TASK"
    return data


def normalize_schedule(schedule: object) -> dict | None:
    if schedule is None:
        return None
    if not isinstance(schedule, dict):
        raise invalid("schedule must be an object with quartz_cron_expression and timezone_id.")
    expr = schedule.get("quartz_cron_expression")
    if not isinstance(expr, str) or not expr.strip():
        raise invalid("schedule.quartz_cron_expression is required.")
    tz = schedule.get("timezone_id")
    if not isinstance(tz, str) or not tz:
        raise invalid("schedule.timezone_id is required (for example 'UTC').")
    try:
        Cron(expr)
        zone(tz)
    except CronError as exc:
        raise invalid(f"schedule: {exc}") from None
    pause = schedule.get("pause_status") or "UNPAUSED"
    if pause not in ("PAUSED", "UNPAUSED"):
        raise invalid("schedule.pause_status must be PAUSED or UNPAUSED.")
    return {**schedule, "pause_status": pause}


def normalize_settings(data: object, check_existing) -> dict:  # noqa: ANN001
    """JobSettings as stored: defaults filled in, every field checked."""
    if not isinstance(data, dict):
        raise invalid("settings must be an object.")
    data = single_task_to_tasks(copy.deepcopy(data))
    name = data.get("name", "Untitled")
    if not isinstance(name, str) or len(name) > 4096:
        raise invalid("name must be a string of at most 4096 characters.")
    data["name"] = name or "Untitled"
    data["tasks"], clusters = normalize_tasks(data.get("tasks"), data.get("job_clusters"), check_existing)
    if clusters:
        data["job_clusters"] = clusters
    if check_int(data, "max_concurrent_runs", "", 0, 1000) is None:
        data["max_concurrent_runs"] = 1
    check_int(data, "timeout_seconds", "", 0)
    data["timeout_seconds"] = data.get("timeout_seconds") or 0
    if data.get("schedule") is not None:
        data["schedule"] = normalize_schedule(data["schedule"])
    queue = data.get("queue")
    if queue is not None and (not isinstance(queue, dict) or not isinstance(queue.get("enabled"), bool)):
        raise invalid("queue must be an object with a boolean 'enabled'.")
    params = data.get("parameters")
    if params is not None:
        if not isinstance(params, list):
            raise invalid("parameters must be a list of {name, default}.")
        seen = set()
        for i, p in enumerate(params):
            if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
                raise invalid(f"parameters[{i}].name is required.")
            if not isinstance(p.get("default"), str):
                raise invalid(f"parameters[{i}].default is required and must be a string.")
            if p["name"] in seen:
                raise invalid(f"parameters[{i}].name {p['name']!r} is duplicated.")
            seen.add(p["name"])
    if data.get("tags") is not None:
        data["tags"] = str_map(data["tags"], "tags")
    for key in ("continuous", "trigger", "git_source"):
        if data.get(key):
            raise invalid(f"{key} is not supported on Brickyard; use schedule for periodic runs.")
    data.setdefault("format", "MULTI_TASK")
    data.setdefault("email_notifications", {})
    return data


def merge_update(current: dict, new: dict | None, remove: list | None) -> dict:
    """jobs/update: top-level fields replaced, tasks and job_clusters merged by key."""
    merged = copy.deepcopy(current)
    for field, value in (new or {}).items():
        if field in ("tasks", "job_clusters") and isinstance(value, list):
            key = "task_key" if field == "tasks" else "job_cluster_key"
            items = {i.get(key): i for i in merged.get(field) or []}
            for item in value:
                if isinstance(item, dict):
                    items[item.get(key)] = item
            merged[field] = list(items.values())
        else:
            merged[field] = value
    if remove is not None and not (isinstance(remove, list) and all(isinstance(r, str) for r in remove)):
        raise invalid("fields_to_remove must be a list of strings.")
    for field in remove or []:
        if field.startswith("tasks/") or field.startswith("job_clusters/"):
            array, _, key = field.partition("/")
            name = "task_key" if array == "tasks" else "job_cluster_key"
            before = merged.get(array) or []
            merged[array] = [i for i in before if i.get(name) != key]
            if len(merged[array]) == len(before):
                raise invalid(f"fields_to_remove: {field} does not exist.")
        else:
            merged.pop(field, None)
    return merged
