"""Task kinds of a job run: a notebook (through the notebook runner) or a Python file (a process)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from brickyard.compute.environment import user_environ
from brickyard.errors import BrickyardError, invalid
from brickyard.services import workspace as wsmod

MAX_RESULT_BYTES = 5 * 1024 * 1024
MAX_LOG_BYTES = 5 * 1024 * 1024
KILL_GRACE_SECONDS = 10
TRACEBACK_RE = re.compile(r"^Traceback \(most recent call last\):$", re.M)

# Attach to the cluster's driver, then run the user's file as __main__. SIGTERM (cancel, timeout)
# first cancels this process's Spark jobs: killing the process alone leaves them running.
PY_BOOTSTRAP = """
import os, runpy, signal, sys, threading
from brickyard.runtime.attach import attach
_a = attach(job_group=os.environ["BRICKYARD_JOB_GROUP"])
from brickyard.runtime.mlflow_setup import install as _mlflow_install
_mlflow_install(_a.sc)
def _term(signum, frame):
    t = threading.Thread(target=_a.cancel_own_jobs, daemon=True)
    t.start()
    t.join(8)
    sys.stderr.write("The run was stopped (cancelled or timed out).\\n")
    sys.stderr.flush()
    os._exit(128 + signum)
signal.signal(signal.SIGTERM, _term)
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclass
class TaskOutcome:
    result_state: str
    result: str | None = None
    result_truncated: bool = False
    error: str | None = None
    error_trace: str | None = None
    logs: str | None = None
    logs_truncated: bool = False
    notebook: bytes | None = None


def _stop_reason(ctx) -> str | None:  # noqa: ANN001
    """TIMEDOUT / CANCELED when the task must stop now, else None."""
    if ctx.deadline is not None and time.monotonic() > ctx.deadline:
        return "TIMEDOUT"
    if ctx.control.stopping():
        return "TIMEDOUT" if ctx.control.timed_out else "CANCELED"
    return None


def run_notebook(ws, ctx) -> TaskOutcome:  # noqa: ANN001
    """Run the task's notebook through ws.services['notebook_runner'] and keep its executed copy."""
    from brickyard.runtime import formats

    runner = ws.services.get("notebook_runner")
    if runner is None:
        return TaskOutcome("FAILED", error="Notebook tasks need the notebook runner, which this workspace "
                                           "does not provide yet.")
    body = ctx.task["notebook_task"]
    try:
        handle = runner.start(ctx.cluster_id, body["notebook_path"], dict(body.get("base_parameters") or {}),
                              ctx.user, timeout_seconds=ctx.task.get("timeout_seconds") or None,
                              run_label=f"job-run-{ctx.task_run_id}")
    except BrickyardError as exc:
        return TaskOutcome("FAILED", error=exc.message)
    stopped, shown = None, None
    while not handle.done():
        why = _stop_reason(ctx)
        if why and stopped is None:
            stopped = why
            handle.cancel()
        command, total = handle.progress
        if command and (command, total) != shown and ctx.report is not None:
            shown = (command, total)
            ctx.report(f"Running command {command} of {total}")
        time.sleep(0.2)
    res = handle.wait()
    state = res.state
    if state == "CANCELED" and stopped:
        state = stopped
    if state not in ("SUCCESS", "FAILED", "TIMEDOUT", "CANCELED"):
        state = "FAILED"
    out = TaskOutcome(state, error=res.error, error_trace=res.error_trace)
    if res.exit_value is not None:
        value = str(res.exit_value)
        raw = value.encode()
        out.result_truncated = len(raw) > MAX_RESULT_BYTES
        out.result = raw[:MAX_RESULT_BYTES].decode(errors="ignore") if out.result_truncated else value
    if res.notebook is not None:
        out.notebook = formats.dumps(res.notebook)
    if state == "TIMEDOUT" and not out.error:
        out.error = f"Notebook timed out after {ctx.task.get('timeout_seconds')} seconds."
    return out


def python_file(ws, user, path: str, dest: Path) -> Path:  # noqa: ANN001
    """Copy the task's file (dbfs:/... or a workspace file) into the attempt's folder."""
    dest.mkdir(parents=True, exist_ok=True)
    if path.lower().startswith("dbfs:/"):
        try:
            local = ws.services["dbfs"].local_file(path)
        except BrickyardError as exc:
            raise invalid(f"python_file {path}: {exc.message}") from None
        target = dest / Path(local).name
        shutil.copyfile(local, target)
        return target
    wpath = wsmod.normalize_path(path)
    wsmod.require_read(user, wpath)
    with ws.store.session() as sess:
        obj = ws.services["tree"].get(sess, wpath)
        if obj is None or obj.object_type not in ("FILE", "NOTEBOOK"):
            raise invalid(f"python_file {path} does not exist in the workspace.")
        if obj.object_type == "NOTEBOOK":
            from brickyard.runtime import formats

            content = formats.write_notebook("SOURCE", ws.services["tree"].notebook(obj), obj.object_id)
        else:
            content = obj.content or b""
    name = Path(wpath).name
    target = dest / (name if name.endswith(".py") else name + ".py")
    target.write_bytes(content)
    return target


def python_env(ws, ctx) -> dict:  # noqa: ANN001
    """The process environment: attached to the driver, with the run user's own token, no workspace secrets."""
    clusters = ws.services["clusters"]
    procs = clusters.procs[ctx.cluster_id]
    # The workspace's own settings (master key, bootstrap token) must not reach user code.
    env = user_environ()
    env.update(clusters.spec_of(ctx.cluster_id).get("spark_env_vars") or {})
    base = ws.settings.base_url
    env.update({
        "PYSPARK_GATEWAY_PORT": str(procs.info["gateway_port"]),
        "PYSPARK_GATEWAY_SECRET": procs.info["gateway_secret"],
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
        "MPLBACKEND": "Agg",
        "BRICKYARD_JOB_GROUP": f"job-run-{ctx.task_run_id}",
        "BRICKYARD_CLUSTER_ID": ctx.cluster_id,
        "BRICKYARD_HOST": base, "BRICKYARD_TOKEN": ctx.token,
        "DATABRICKS_HOST": base, "DATABRICKS_TOKEN": ctx.token,
        "BRICKYARD_USER": ctx.user.user_name,
        "BRICKYARD_WORKSPACE_ID": str(ws.workspace_id),
        "BRICKYARD_RUN_ID": str(ctx.task_run_id),
        "BRICKYARD_JOB_ID": str(ctx.job_id or ""),
    })
    # The cluster's own packages (libraries, %pip) come first, as in notebooks.
    libs = str(clusters.launcher.library_dir(ctx.cluster_id))
    env["PYTHONPATH"] = ":".join(p for p in (libs, env.get("PYTHONPATH", "")) if p)
    return env


def _tail(path: Path) -> tuple[str, bool]:
    size = path.stat().st_size if path.exists() else 0
    with open(path, "rb") if size else open(os.devnull, "rb") as fh:
        if size > MAX_LOG_BYTES:
            fh.seek(size - MAX_LOG_BYTES)
        return fh.read().decode(errors="replace"), size > MAX_LOG_BYTES


def _error_of(logs: str, code: int) -> tuple[str, str | None]:
    """The error line and the traceback of a failed Python process, as get-output shows them."""
    starts = [m.start() for m in TRACEBACK_RE.finditer(logs)]
    if not starts:
        return f"The Python process exited with code {code}.", None
    trace = logs[starts[-1]:].rstrip()
    lines = [ln for ln in trace.splitlines() if ln.strip()]
    error = next((ln for ln in reversed(lines) if not ln.startswith((" ", "\t"))), lines[-1])
    return error, trace


def run_python(ws, ctx) -> TaskOutcome:  # noqa: ANN001
    """Run `python <file> <parameters>` attached to the cluster's driver; logs are stdout and stderr."""
    body = ctx.task["spark_python_task"]
    workdir = ws.settings.home / "jobs" / "task-runs" / str(ctx.task_run_id)
    try:
        script = python_file(ws, ctx.user, body["python_file"], workdir)
    except BrickyardError as exc:
        return TaskOutcome("FAILED", error=exc.message)
    log_path = workdir / "output.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", PY_BOOTSTRAP, str(script), *body.get("parameters", [])],
            cwd=workdir, env=python_env(ws, ctx), stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    stopped, killed_at = None, None
    while proc.poll() is None:
        why = _stop_reason(ctx)
        if why and stopped is None:
            stopped, killed_at = why, time.monotonic()
            _signal(proc, signal.SIGTERM)
        elif stopped and time.monotonic() - killed_at > KILL_GRACE_SECONDS:
            _signal(proc, signal.SIGKILL)
        time.sleep(0.2)
    _signal(proc, signal.SIGKILL)  # children left behind by the user's code
    logs, truncated = _tail(log_path)
    shutil.rmtree(workdir, ignore_errors=True)
    if stopped:
        error = ("Task timed out after {} seconds.".format(ctx.task.get("timeout_seconds"))
                 if stopped == "TIMEDOUT" and ctx.deadline else None)
        return TaskOutcome(stopped, error=error, logs=logs, logs_truncated=truncated)
    if proc.returncode == 0:
        return TaskOutcome("SUCCESS", logs=logs, logs_truncated=truncated)
    error, trace = _error_of(logs, proc.returncode)
    return TaskOutcome("FAILED", error=error, error_trace=trace, logs=logs, logs_truncated=truncated)


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
