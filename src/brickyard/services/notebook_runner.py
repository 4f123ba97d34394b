"""Run a workspace notebook on a running cluster, cell by cell, in a fresh kernel, as a given user.

Used by the Jobs API (notebook tasks). ``NotebookRunner.start`` returns a ``RunHandle`` at once;
a thread starts a kernel with ContextService's launch code (the user's own short-lived token,
widgets filled from the parameters), runs each cell, stops at the first failing cell or at
``dbutils.notebook.exit``, and records every cell's outputs in a copy of the notebook.

A cell calling ``dbutils.library.restartPython()`` ends there (its note is its last output); the
run then replaces the kernel's process (ContextService.restart_kernel: same environment, token,
widgets, run id) and goes on with the next cell in the new one.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from brickyard.errors import invalid, not_found
from brickyard.runtime.ansi import strip_ansi
from brickyard.runtime.formats import Notebook
from brickyard.runtime.magics import cell_code
from brickyard.runtime.mime import NOTEBOOK_EXIT_MIME
from brickyard.services.contexts import KERNEL_START_TIMEOUT, wants_restart
from brickyard.services.users import Principal
from brickyard.services.workspace import require_read

log = logging.getLogger(__name__)
SUCCESS, FAILED, TIMEDOUT, CANCELED = "SUCCESS", "FAILED", "TIMEDOUT", "CANCELED"
# After an interrupt, how long a cell may take to stop before its kernel is killed.
INTERRUPT_GRACE_SECONDS = 10
# A run's kernel token outlives the run's timeout by this much (it is deleted when the run ends).
TOKEN_MARGIN_SECONDS = 3600
DEFAULT_TOKEN_SECONDS = 2 * 24 * 3600


@dataclass
class RunResult:
    state: str  # SUCCESS | FAILED | TIMEDOUT | CANCELED
    exit_value: str | None
    notebook: Notebook
    error: str | None
    error_trace: str | None


class RunHandle:
    """One notebook run: wait for it, cancel it, ask whether it is done."""

    def __init__(self, run_id: str, cluster_id: str, notebook_path: str, label: str | None = None):
        self.run_id = run_id
        self.label = label or run_id  # the notebook's currentRunId / runId tag
        self.cluster_id = cluster_id
        self.notebook_path = notebook_path
        self.result: RunResult | None = None
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._lost = threading.Event()
        self.kernel = None
        # (command being run, commands in the notebook), 1-based; (0, n) before the first one
        self.progress: tuple[int, int] = (0, 0)

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """The result, or None when `timeout` seconds passed first."""
        self._done.wait(timeout)
        return self.result

    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Interrupt the running cell (its Spark jobs too); the run ends CANCELED."""
        self._cancel.set()


def outputs_from_messages(msgs: list[dict], execution_count: int | None) -> list[dict]:
    """nbformat v4 outputs from one execution's IOPub messages (consecutive stream text merged)."""
    outputs: list[dict] = []
    for msg in msgs:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            name, text = content.get("name", "stdout"), content.get("text", "")
            if outputs and outputs[-1]["output_type"] == "stream" and outputs[-1]["name"] == name:
                outputs[-1]["text"] += text
            else:
                outputs.append({"output_type": "stream", "name": name, "text": text})
        elif kind == "display_data":
            outputs.append({"output_type": "display_data", "data": content.get("data", {}),
                            "metadata": content.get("metadata", {})})
        elif kind == "execute_result":
            outputs.append({"output_type": "execute_result", "data": content.get("data", {}),
                            "metadata": content.get("metadata", {}), "execution_count": execution_count})
        elif kind == "error":
            outputs.append({"output_type": "error", "ename": content.get("ename", ""),
                            "evalue": content.get("evalue", ""), "traceback": content.get("traceback", [])})
        elif kind == "clear_output":
            outputs.clear()
    return outputs


class NotebookRunner:
    def __init__(self, ws, clusters=None, contexts=None):  # noqa: ANN001
        self.ws = ws
        self.clusters = clusters or ws.services["clusters"]
        self.contexts = contexts or ws.services["contexts"]
        self.runs: dict[str, RunHandle] = {}
        self._lock = threading.Lock()
        self.clusters.stop_listeners.append(self._cluster_stopped)

    def start(self, cluster_id: str, notebook_path: str, params: dict[str, str] | None, user: Principal,
              timeout_seconds: int | None = None, run_label: str | None = None) -> RunHandle:
        """Start running a notebook; raises BrickyardError when it cannot start (missing notebook, cluster down)."""
        if params is not None and not isinstance(params, dict):
            raise invalid("Notebook parameters must be an object of strings.")
        params = {str(k): "" if v is None else str(v) for k, v in (params or {}).items()}
        if timeout_seconds is not None and (isinstance(timeout_seconds, bool) or not isinstance(timeout_seconds, int)
                                            or timeout_seconds < 0):
            raise invalid("timeout_seconds must be a non-negative integer.")
        nb = self.load_notebook(notebook_path, user)
        notebook_path = _normalized(notebook_path)
        procs = self.contexts._running_cluster(cluster_id)  # noqa: SLF001 - same check as contexts
        handle = RunHandle(uuid.uuid4().hex[:16], cluster_id, notebook_path, run_label)
        with self._lock:
            self.runs[handle.run_id] = handle
        threading.Thread(target=self._run, args=(handle, procs, nb, params, user, timeout_seconds or 0),
                         name=f"notebook-run-{handle.run_id}", daemon=True).start()
        return handle

    def load_notebook(self, path: object, user: Principal) -> Notebook:
        """The canonical notebook at a workspace path, if `user` may read it."""
        from brickyard.services.workspace import normalize_path

        path = normalize_path(path)
        tree = self.ws.services["tree"]
        with self.ws.store.session() as sess:
            require_read(user, path)
            obj = tree.get(sess, path)
            if obj is None or obj.object_type != "NOTEBOOK":
                raise not_found(f"Notebook not found: {path}")
            return tree.notebook(obj)

    # ---- the run thread ----------------------------------------------------------------------
    def _run(self, handle: RunHandle, procs, nb: Notebook, params: dict, user: Principal,  # noqa: ANN001
             timeout: int) -> None:
        started = time.monotonic()
        deadline = started + timeout if timeout else None
        executed = Notebook.from_dict(nb.to_dict())
        for cell in executed.cells:
            cell.outputs, cell.execution_count = [], None
        state, exit_value, error, trace = SUCCESS, None, None, None
        km = client = token_id = None
        clusters = self.clusters
        clusters.mark_busy(handle.cluster_id, +1)
        try:
            workdir = Path(procs.cluster_dir) / "runs" / handle.run_id
            lifetime = timeout + TOKEN_MARGIN_SECONDS if timeout else DEFAULT_TOKEN_SECONDS
            km, client, token_id = self.contexts.start_kernel(
                procs, workdir, user, token_lifetime=lifetime, kernel_id=f"run-{handle.run_id}",
                env_extra={"BRICKYARD_NOTEBOOK_PATH": handle.notebook_path, "BRICKYARD_WIDGETS": _json(params),
                           "BRICKYARD_RUN_ID": handle.label, "BRICKYARD_CONTEXT_ID": f"run-{handle.run_id}"})
            handle.kernel = km
            probe = self._execute(handle, km, client, "spark, dbutils", deadline, silent=True)
            if probe[0] is not None:
                state, error, trace = probe[0], probe[2], probe[3]
                if state == FAILED:
                    error = f"The notebook's kernel could not start: {error}"
            count = 0
            total = sum(1 for c in executed.cells if cell_code(c.source, executed.language).strip())
            handle.progress = (0, total)
            for cell in executed.cells if state == SUCCESS else []:
                code = cell_code(cell.source, executed.language)
                if not code.strip():
                    continue
                count += 1
                handle.progress = (count, total)
                outcome, msgs, error, trace = self._execute(handle, km, client, code, deadline)
                cell.execution_count = count
                cell.outputs = outputs_from_messages(msgs, count)
                exits = [o["data"][NOTEBOOK_EXIT_MIME]["value"] for o in cell.outputs
                         if o.get("data", {}).get(NOTEBOOK_EXIT_MIME)]
                if outcome is not None:
                    state = outcome
                    break
                if exits:
                    exit_value = exits[-1]
                    break
                if wants_restart(msgs):
                    client = self._restart(handle, km, client, deadline)
        except Exception as exc:  # noqa: BLE001 - the run fails, the workspace goes on
            log.warning("notebook run %s failed to run: %s", handle.run_id, exc)
            state, error, trace = FAILED, f"The notebook run could not complete: {exc}", None
        finally:
            clusters.mark_busy(handle.cluster_id, -1)
            try:
                self.contexts.stop_kernel(km, client, token_id)
            except Exception:  # noqa: BLE001
                log.exception("stopping the kernel of run %s", handle.run_id)
        if handle._lost.is_set() and state != CANCELED:  # noqa: SLF001
            state, error = FAILED, f"The cluster {handle.cluster_id} terminated while the notebook was running."
        handle.result = RunResult(state, exit_value, executed, error, trace)
        with self._lock:
            self.runs.pop(handle.run_id, None)
        handle._done.set()  # noqa: SLF001

    def _restart(self, handle: RunHandle, km, client, deadline: float | None):  # noqa: ANN001, ANN202
        """dbutils.library.restartPython() ran: a fresh process for the run's kernel; returns its client."""
        client.stop_channels()
        client = self.contexts.restart_kernel(km)
        timeout = KERNEL_START_TIMEOUT if deadline is None else max(1.0, min(KERNEL_START_TIMEOUT,
                                                                           deadline - time.monotonic()))
        try:
            reply = client.execute_interactive("spark, dbutils", silent=True, store_history=False,
                                               allow_stdin=False, timeout=timeout, output_hook=lambda msg: None)
            if reply["content"].get("status") != "ok":
                raise RuntimeError(f"Python could not be restarted: {reply['content'].get('ename')}: "
                                   f"{reply['content'].get('evalue')}")
        except BaseException:
            client.stop_channels()  # the caller stops the kernel with the client it holds
            raise
        log.info("notebook run %s: Python restarted (kernel pid %s)", handle.run_id,
                 getattr(getattr(km, "provisioner", None), "pid", None))
        return client

    def _execute(self, handle: RunHandle, km, client, code: str, deadline: float | None,  # noqa: ANN001
                 silent: bool = False) -> tuple[str | None, list[dict], str | None, str | None]:
        """Run one cell; returns (final state or None to go on, IOPub messages, error, error trace)."""
        msg_id = client.execute(code, silent=silent, store_history=not silent, allow_stdin=False)
        msgs: list[dict] = []
        stop_state, interrupted_at = None, None
        while True:
            now = time.monotonic()
            if stop_state is None:
                if handle._cancel.is_set() or handle._lost.is_set():  # noqa: SLF001
                    stop_state = CANCELED if handle._cancel.is_set() else FAILED  # noqa: SLF001
                elif deadline is not None and now > deadline:
                    stop_state = TIMEDOUT
                if stop_state is not None:
                    interrupted_at = now
                    try:
                        km.interrupt_kernel()
                    except Exception:  # noqa: BLE001 - the kernel may be gone
                        log.debug("interrupt failed", exc_info=True)
            if interrupted_at is not None and now - interrupted_at > INTERRUPT_GRACE_SECONDS:
                break  # the cell ignores the interrupt: the kernel is shut down by the caller
            if not km.is_alive():
                if stop_state is None:
                    return FAILED, msgs, "The notebook's Python process exited unexpectedly.", None
                break
            try:
                msg = client.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status":
                if msg["content"].get("execution_state") == "idle":
                    break
                continue
            if kind in ("stream", "display_data", "execute_result", "error", "clear_output"):
                msgs.append({"msg_type": kind, "content": msg["content"]})
        if stop_state is not None:
            return stop_state, msgs, _stop_message(stop_state, deadline), None
        errors = [m["content"] for m in msgs if m["msg_type"] == "error"]
        if errors:
            err = errors[-1]
            summary = f"{err.get('ename', 'Error')}: {strip_ansi(err.get('evalue', ''))}"
            return FAILED, msgs, summary, strip_ansi("\n".join(err.get("traceback") or [])) or summary
        return None, msgs, None, None

    def _cluster_stopped(self, cluster_id: str) -> None:
        for handle in [h for h in list(self.runs.values()) if h.cluster_id == cluster_id]:
            handle._lost.set()  # noqa: SLF001

    def close(self) -> None:
        for handle in list(self.runs.values()):
            handle.cancel()


def _normalized(path: object) -> str:
    from brickyard.services.workspace import normalize_path

    return normalize_path(path)


def _stop_message(state: str, deadline: float | None) -> str:  # noqa: ARG001
    if state == TIMEDOUT:
        return "The notebook run timed out."
    if state == CANCELED:
        return "The notebook run was cancelled."
    return "The cluster terminated while the notebook was running."


def _json(value: object) -> str:
    import json

    return json.dumps(value)


def build(ws, services: dict) -> dict:  # noqa: ANN001
    """The notebook runner service (after the clusters and contexts services)."""
    return {"notebook_runner": NotebookRunner(ws, services["clusters"], services["contexts"])}


__all__ = ["NotebookRunner", "RunHandle", "RunResult", "SUCCESS", "FAILED", "TIMEDOUT", "CANCELED",
           "outputs_from_messages", "build"]
