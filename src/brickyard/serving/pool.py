"""The worker processes of one served model version: start, readiness, restart, scale to zero."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from brickyard.compute.environment import user_environ

log = logging.getLogger(__name__)

CREATING, READY, RECOVERING, SCALED_TO_ZERO, FAILED, STOPPED = (
    "CREATING", "READY", "RECOVERING", "SCALED_TO_ZERO", "FAILED", "STOPPED")
MAX_RESTART_DELAY = 30.0
LOG_TAIL_BYTES = 64 * 1024


class StartError(Exception):
    """A served version did not come up; the message says why."""


def _ping(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def failure_reason(log_text: str) -> str:
    """The last exception line of a worker's log (what a user needs to see first)."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ("Error" in ln or "Exception" in ln) and ":" in ln and not ln.startswith(("File ", "Traceback")):
            return ln[:1000]
    return lines[-1][:1000] if lines else "the worker exited without a message"


@dataclass
class Worker:
    proc: subprocess.Popen
    port_file: Path
    port: int | None = None
    ready: bool = False
    stopping: bool = False
    started_at: float = field(default_factory=time.monotonic)


class ServedVersion:
    """N worker processes serving one model version; what the router sends requests to."""

    def __init__(self, endpoint: str, entity: dict, model_dir: Path, run_dir: Path, processes: int, threads: int,
                 idle_seconds: float):
        self.endpoint = endpoint
        self.entity = entity
        self.name = entity["name"]
        self.model_dir = model_dir
        self.run_dir = run_dir
        self.log_path = run_dir / "worker.log"
        self.processes, self.threads = processes, threads
        self.idle_seconds = idle_seconds
        self.scale_to_zero = bool(entity.get("scale_to_zero_enabled"))
        self.state = CREATING
        self.message = ""
        self.workers: list[Worker] = []
        self.ready_ports: list[int] = []  # read by the router without a lock (replaced, never mutated)
        self.inflight = 0
        self.last_used = time.monotonic()
        self.restarts = 0
        self._restart_at = 0.0
        self._seq = 0
        self._lock = threading.RLock()

    # -- processes --------------------------------------------------------------------------
    def _spawn(self) -> Worker:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        port_file = self.run_dir / f"port-{self._seq}"
        port_file.unlink(missing_ok=True)
        env = user_environ()
        env.update(self.entity.get("environment_vars") or {})
        env.update(PYTHONUNBUFFERED="1", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
        cmd = [sys.executable, "-m", "brickyard.serving.worker", "--model", f"{self.name}={self.model_dir}",
               "--port", "0", "--port-file", str(port_file), "--threads", str(self.threads),
               "--parent-pid", str(os.getpid())]
        with open(self.log_path, "ab") as logf:
            proc = subprocess.Popen(cmd, env=env, cwd=self.run_dir, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        return Worker(proc, port_file)

    def _publish(self) -> None:
        self.ready_ports = [w.port for w in self.workers if w.ready and not w.stopping and w.port]

    def start(self, timeout: float) -> None:
        """Start every worker and wait until each answers; raise StartError otherwise."""
        with self._lock:
            self.state = CREATING
            self.workers = [self._spawn() for _ in range(self.processes)]
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._poll_starting()
                dead = [w for w in self.workers if w.proc.poll() is not None]
                if dead:
                    reason = failure_reason(tail(self.log_path))
                    self._stop_workers()
                    self.state, self.message = FAILED, reason
                    raise StartError(reason)
                if self.workers and all(w.ready for w in self.workers):
                    self.state, self.message = READY, ""
                    self.last_used = time.monotonic()
                    return
            if time.monotonic() > deadline:
                with self._lock:
                    self._stop_workers()
                    self.state = FAILED
                    self.message = f"the model did not answer within {timeout:.0f} s"
                raise StartError(self.message)
            time.sleep(0.05)

    def _poll_starting(self) -> None:
        changed = False
        for w in self.workers:
            if w.ready or w.stopping or w.proc.poll() is not None:
                continue
            if w.port is None and w.port_file.exists():
                try:
                    w.port = int(w.port_file.read_text())
                except ValueError:
                    continue
            if w.port is not None and _ping(w.port):
                w.ready = changed = True
        if changed:
            self._publish()

    def _stop_workers(self) -> None:
        for w in self.workers:
            w.stopping = True
        self._publish()
        for w in self.workers:
            if w.proc.poll() is None:
                try:
                    os.killpg(w.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for w in self.workers:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(w.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                w.proc.wait()
            w.port_file.unlink(missing_ok=True)
        self.workers = []

    def stop(self) -> None:
        with self._lock:
            self._stop_workers()
            self.state = STOPPED

    # -- supervision (called by the service's supervisor thread) -----------------------------
    def tick(self, now: float) -> None:
        """Restart crashed workers, notice new ones ready, scale to zero when idle."""
        with self._lock:
            if self.state in (STOPPED, FAILED, SCALED_TO_ZERO):
                return
            self._poll_starting()
            crashed = [w for w in self.workers if not w.stopping and w.proc.poll() is not None]
            for w in crashed:
                log.warning("serving %s/%s: worker pid %d exited with %s; restarting", self.endpoint, self.name,
                            w.proc.pid, w.proc.returncode)
                self.workers.remove(w)
                w.port_file.unlink(missing_ok=True)
                self.restarts += 1
                self._restart_at = now + min(MAX_RESTART_DELAY, 0.5 * 2 ** min(self.restarts - 1, 6))
            if crashed:
                self._publish()
            missing = self.processes - len(self.workers)
            if missing > 0 and now >= self._restart_at:
                self.workers.extend(self._spawn() for _ in range(missing))
            if self.state in (READY, RECOVERING):
                self.state = READY if self.ready_ports else RECOVERING
                if len(self.ready_ports) == self.processes:
                    self.restarts = 0
            elif self.state == CREATING and self.ready_ports:
                self.state = READY  # a cold start finished
            if (self.scale_to_zero and self.state == READY and self.inflight == 0
                    and now - self.last_used > self.idle_seconds):
                log.info("serving %s/%s: idle for %.0f s, scaling to zero", self.endpoint, self.name,
                         now - self.last_used)
                self._stop_workers()
                self.state = SCALED_TO_ZERO

    def wake(self) -> None:
        """Cold start after scale to zero: spawn the workers; the supervisor notices them ready."""
        with self._lock:
            if self.state != SCALED_TO_ZERO:
                return
            log.info("serving %s/%s: cold start", self.endpoint, self.name)
            self.workers = [self._spawn() for _ in range(self.processes)]
            self.state = CREATING
            self.last_used = time.monotonic()

    def pids(self) -> list[int]:
        with self._lock:
            return [w.proc.pid for w in self.workers if w.proc.poll() is None]

    def deployment_state(self) -> tuple[str, str]:
        """(ServedModelState.deployment, message) as Databricks names them."""
        if self.state == READY:
            return "DEPLOYMENT_READY", "Served entity is ready."
        if self.state == SCALED_TO_ZERO:
            return "DEPLOYMENT_READY", "Scaled to zero; the next request starts it."
        if self.state == RECOVERING:
            return "DEPLOYMENT_RECOVERING", "A worker stopped and is being restarted."
        if self.state == FAILED:
            return "DEPLOYMENT_FAILED", self.message
        if self.state == STOPPED:
            return "DEPLOYMENT_ABORTED", "Stopped."
        return "DEPLOYMENT_CREATING", "Starting the model's workers."
