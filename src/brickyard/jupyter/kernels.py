"""Remote kernels: a user's Jupyter kernel on a cluster, driven from JupyterLab or VS Code through the relay.

A kernel is started as its user (a short-lived token of theirs, the cluster's runtime) by the
same launch code as execution contexts, and lives on the workspace host bound to loopback. It is
in memory only, like execution contexts: it ends when its frontend detaches (the relay closes),
when it is deleted, when its cluster stops, or when nobody attaches within ATTACH_TIMEOUT_SECONDS.

dbutils.library.restartPython() in a cell: once that cell is over, the relay asks ``restart_python``
to replace the kernel's process in place (same ports, key, environment, user and token), so the
relay's sockets reconnect by themselves and the frontend keeps its connection: the next cell runs
in a fresh Python, as on Databricks. (JupyterLab's own Kernel > Restart restarts the local stand-in,
which ends this kernel and starts a new one: the same result, with a new kernel id.)
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from brickyard.errors import BrickyardError, already_exists, denied, invalid, not_found
from brickyard.services.contexts import revoke_kernel_token
from brickyard.services.users import Principal

log = logging.getLogger(__name__)
PENDING, RUNNING, TERMINATED, ERROR = "PENDING", "RUNNING", "TERMINATED", "ERROR"
ATTACH_TIMEOUT_SECONDS = 300
# Finished kernels stay visible this long, so a polling frontend sees why its kernel ended.
KEEP_ENDED_SECONDS = 600


@dataclass
class RemoteKernel:
    id: str
    cluster_id: str
    owner: Principal
    notebook_path: str | None
    state: str = PENDING
    state_message: str = "Starting the kernel on the cluster."
    created: int = field(default_factory=lambda: int(time.time() * 1000))
    ended: float | None = None
    km: object = None
    token_id: str | None = None
    attached: bool = False
    timer: threading.Timer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    restarting: bool = False  # restartPython: its process is being replaced (guarded by lock)
    restart: object = field(default=None, repr=False)  # restart_python bound to this kernel, for the relay

    def connection(self) -> dict:
        """The kernel's ZMQ ports and key (workspace side only; never sent to clients)."""
        return self.km.get_connection_info()

    def alive(self) -> bool:
        proc = getattr(getattr(self.km, "provisioner", None), "process", None)
        return proc is not None and proc.poll() is None


class KernelService:
    def __init__(self, ws, clusters, contexts):  # noqa: ANN001
        self.ws = ws
        self.clusters = clusters
        self.contexts = contexts
        self.kernels: dict[str, RemoteKernel] = {}
        self._lock = threading.Lock()
        clusters.stop_listeners.append(self.cluster_stopped)

    # ---- API -----------------------------------------------------------------------------
    def create(self, caller: Principal, cluster_id: object, notebook_path: object = None) -> dict:
        if not isinstance(cluster_id, str) or not cluster_id:
            raise invalid("cluster_id is required.")
        if notebook_path is not None and (not isinstance(notebook_path, str) or not notebook_path.startswith("/")):
            raise invalid("notebook_path must be an absolute workspace path.")
        info = self.clusters.get(cluster_id)  # raises for a missing cluster
        procs = self.clusters.procs.get(cluster_id)
        if info["state"] != "RUNNING" or procs is None:
            raise BrickyardError("INVALID_STATE", f"Cluster {cluster_id} is not running (state {info['state']}); "
                                                  "start it first.")
        self.clusters.check_attach(caller, cluster_id)
        kernel = RemoteKernel(id=uuid.uuid4().hex, cluster_id=cluster_id, owner=caller, notebook_path=notebook_path)
        kernel.restart = lambda: self.restart_python(kernel)
        with self._lock:
            self._forget_ended()
            self.kernels[kernel.id] = kernel
        threading.Thread(target=self._start, args=(kernel, procs), name=f"kernel-{kernel.id[:8]}",
                         daemon=True).start()
        return describe(kernel)

    def get(self, caller: Principal, kernel_id: object) -> dict:
        return describe(self._visible(caller, kernel_id))

    def list(self, caller: Principal) -> list[dict]:
        with self._lock:
            self._forget_ended()
            mine = [k for k in self.kernels.values() if caller.is_admin or k.owner.id == caller.id]
        return [describe(k) for k in sorted(mine, key=lambda k: k.created)]

    def delete(self, caller: Principal, kernel_id: object) -> None:
        self._end(self._visible(caller, kernel_id), "Deleted by " + caller.user_name + ".")

    def interrupt(self, caller: Principal, kernel_id: object) -> None:
        kernel = self._visible(caller, kernel_id)
        if kernel.state != RUNNING:
            raise BrickyardError("INVALID_STATE", f"Kernel {kernel.id} is {kernel.state}, not RUNNING.")
        kernel.km.interrupt_kernel()

    def attach(self, caller: Principal, kernel_id: object) -> RemoteKernel:
        """Claim a running kernel for one relay connection; only its owner may run code in it."""
        kernel = self._visible(caller, kernel_id)
        if kernel.owner.id != caller.id:
            raise denied(f"Kernel {kernel.id} belongs to {kernel.owner.user_name}; only they can run code in it.")
        with kernel.lock:
            if kernel.state != RUNNING:
                raise BrickyardError("INVALID_STATE", f"Kernel {kernel.id} is {kernel.state}, not RUNNING.")
            if kernel.attached:
                raise already_exists(f"Kernel {kernel.id} is already attached to a frontend.")
            kernel.attached, kernel.state_message = True, "Attached to a frontend."
            if kernel.timer is not None:
                kernel.timer.cancel()
        return kernel

    def detach(self, kernel: RemoteKernel, why: str) -> None:
        """The frontend went away: the kernel goes with it (a restart starts a new one)."""
        self._end(kernel, why)

    def restart_python(self, kernel: RemoteKernel) -> None:
        """dbutils.library.restartPython() ended a cell: a fresh process for the kernel, in place.

        A kernel ended meanwhile (deleted, detached, cluster stopped) is stopped here once its new
        process is up; one that cannot restart ends with the reason.
        """
        with kernel.lock:
            if kernel.state != RUNNING or kernel.restarting or kernel.km is None:
                return
            kernel.restarting = True
        failed = None
        try:
            self.contexts.restart_kernel(kernel.km).stop_channels()  # the relay has its own sockets
        except Exception as exc:  # noqa: BLE001 - reported through kernels/get
            log.warning("kernel %s: Python could not be restarted: %s", kernel.id, exc)
            failed = f"Python could not be restarted: {exc}"
        with kernel.lock:
            kernel.restarting = False
            ended = kernel.state != RUNNING
        if failed:
            self._end(kernel, failed)
        elif ended:
            self._stop(kernel)

    # ---- internals -----------------------------------------------------------------------
    def _visible(self, caller: Principal, kernel_id: object) -> RemoteKernel:
        kernel = self.kernels.get(kernel_id) if isinstance(kernel_id, str) else None
        if kernel is None:
            raise not_found(f"Kernel {kernel_id} does not exist.")
        if kernel.owner.id != caller.id and not caller.is_admin:
            raise denied(f"Kernel {kernel_id} belongs to another user.")
        return kernel

    def _start(self, kernel: RemoteKernel, procs) -> None:  # noqa: ANN001
        env = {"BRICKYARD_NOTEBOOK_PATH": kernel.notebook_path} if kernel.notebook_path else {}
        workdir = Path(procs.cluster_dir) / "kernels" / kernel.id
        try:
            km, client, token_id = self.contexts.start_kernel(procs, workdir, kernel.owner, env, kernel_id=kernel.id)
            client.stop_channels()  # the relay opens its own sockets
        except Exception as exc:  # noqa: BLE001 - reported through kernels/get
            log.warning("kernel %s failed to start: %s", kernel.id, exc)
            with kernel.lock:
                kernel.state, kernel.state_message, kernel.ended = ERROR, f"The kernel could not start: {exc}", \
                    time.monotonic()
            return
        with kernel.lock:
            kernel.km, kernel.token_id = km, token_id
            if kernel.state == PENDING:
                kernel.state, kernel.state_message = RUNNING, "Ready; attach a frontend."
                kernel.timer = threading.Timer(ATTACH_TIMEOUT_SECONDS, self._end, (
                    kernel, f"No frontend attached within {ATTACH_TIMEOUT_SECONDS} s."))
                kernel.timer.daemon = True
                kernel.timer.start()
                return
        self._stop(kernel)  # deleted (or its cluster stopped) while it was starting

    def _end(self, kernel: RemoteKernel, why: str) -> None:
        with kernel.lock:
            if kernel.state in (TERMINATED, ERROR):
                return
            if kernel.timer is not None:
                kernel.timer.cancel()
            # The token goes first: once the kernel reads TERMINATED, its credentials are already gone.
            token_id, kernel.token_id = kernel.token_id, None
            revoke_kernel_token(self.ws, token_id)
            kernel.state, kernel.state_message, kernel.ended = TERMINATED, why, time.monotonic()
            if kernel.km is None:
                return  # still starting: _start stops it when the launch returns
            if kernel.restarting:
                return  # restart_python stops it once the new process is up
        self._stop(kernel)

    def _stop(self, kernel: RemoteKernel) -> None:
        try:
            self.contexts.stop_kernel(kernel.km, None, kernel.token_id)
        except Exception:  # noqa: BLE001
            log.exception("stopping kernel %s", kernel.id)
        kernel.token_id = None

    def _forget_ended(self) -> None:
        cutoff = time.monotonic() - KEEP_ENDED_SECONDS
        for kid in [k.id for k in self.kernels.values() if k.ended is not None and k.ended < cutoff]:
            self.kernels.pop(kid, None)

    def cluster_stopped(self, cluster_id: str) -> None:
        for kernel in [k for k in list(self.kernels.values()) if k.cluster_id == cluster_id]:
            self._end(kernel, f"Cluster {cluster_id} stopped.")

    def close(self) -> None:
        for kernel in list(self.kernels.values()):
            self._end(kernel, "The workspace stopped.")


def describe(kernel: RemoteKernel) -> dict:
    out = {"kernel_id": kernel.id, "cluster_id": kernel.cluster_id, "state": kernel.state,
           "state_message": kernel.state_message, "user_name": kernel.owner.user_name,
           "attached": kernel.attached, "creation_time": kernel.created}
    if kernel.notebook_path:
        out["notebook_path"] = kernel.notebook_path
    return out


def build(ws, services: dict) -> dict:  # noqa: ANN001
    return {"kernels": KernelService(ws, services["clusters"], services["contexts"])}
