"""Execution contexts (Command Execution API 1.2): one Jupyter kernel per context, attached to the cluster.

Starting a kernel and attaching it to the driver takes seconds (Python, IPython, PySpark, the py4j
session). So each RUNNING cluster keeps one spare kernel, started and attached ahead of time with no
user in it (no token, no user name, no dbutils; see runtime/kernel_init.py). contexts/create hands
the spare out: the workspace mints the caller's token, writes the caller's variables to a 0600 file
the kernel reads and deletes (``_bind``), and only then runs commands; a new spare is started a
little later. A spare is used once, belongs to one cluster run (its driver's gateway) and stops
with it; job clusters get none.

dbutils.library.restartPython() in a command ends that command with a RESTART_PYTHON_MIME output
(runtime/dbutils.py); the context's worker thread then replaces the kernel's process before it
takes the next command (``_restart``): same context id, connection file and working folder, the
same environment, user and token (a kernel that was a spare restarts with its user's variables in
its environment, so it is bound before any code runs), attached to the same driver. Commands
queued meanwhile wait and then run in the new process.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import queue
import re
import secrets
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from brickyard.compute.environment import user_environ
from brickyard.errors import BrickyardError, invalid
from brickyard.runtime.ansi import strip_ansi
from brickyard.runtime.mime import RESTART_PYTHON_MIME, TABLE_MIME
from brickyard.services.users import Principal

log = logging.getLogger(__name__)
LANGUAGES = ("python", "sql", "scala", "r")
# A bare object repr such as "<BarContainer object of 2 artists>" or "[<matplotlib.lines.Line2D …>]".
OBJECT_REPR_RE = re.compile(r"^\[?<[^<>\n]+>(, <[^<>\n]+>)*\]?$|^\[?Text\(")
KERNEL_START_TIMEOUT = 120
# After a spare is handed out, its replacement starts this much later: a kernel start is seconds of
# CPU, which would slow down the first commands of the context just created on a small host.
SPARE_REFILL_DELAY = 3.0
SPARE_ENV = "BRICKYARD_SPARE_KERNEL"
# The variables that make a spare kernel its user's: set by _bind, never present in a spare.
USER_ENV = ("BRICKYARD_TOKEN", "DATABRICKS_TOKEN", "BRICKYARD_USER")
# Contexts live until destroyed; their kernel's token is deleted then, and expires anyway.
CONTEXT_TOKEN_SECONDS = 7 * 24 * 3600


@dataclass
class Command:
    id: str
    code: str
    language: str
    status: str = "Queued"
    results: dict | None = None


@dataclass
class Context:
    id: str
    cluster_id: str
    language: str
    owner_id: int
    status: str = "Pending"
    error: str | None = None
    kernel: object = None
    client: object = None
    commands: dict[str, Command] = field(default_factory=dict)
    work: queue.Queue = field(default_factory=queue.Queue)
    running: Command | None = None
    owner: Principal | None = None
    token_id: str | None = None
    token: str | None = field(default=None, repr=False)  # a bound spare's token: its restarts need it again
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    restarting: bool = False  # restartPython: the process is being replaced (guarded by lock)
    closed: bool = False  # destroyed or its cluster stopped (guarded by lock)


@dataclass
class Spare:
    """A kernel started and attached to a cluster ahead of time, for the next context created there."""
    ctx_id: str
    cluster_id: str
    procs: object
    kernel: object = None
    client: object = None
    cancelled: bool = False
    stopped: bool = False
    claimed: bool = False  # a context took it while it was starting: the context waits for it
    ready: threading.Event = field(default_factory=threading.Event)  # its start ended (well or not)

    @property
    def pid(self) -> int | None:
        process = getattr(getattr(self.kernel, "provisioner", None), "process", None)
        return process.pid if process is not None else None


def wants_restart(msgs: list[dict]) -> bool:
    """An execution's IOPub messages hold dbutils.library.restartPython()'s request."""
    return any(m["msg_type"] == "display_data" and RESTART_PYTHON_MIME in (m["content"].get("data") or {})
               for m in msgs)


def results_from_messages(msgs: list[dict], save_image) -> dict:  # noqa: ANN001
    """Turn a kernel's IOPub messages for one execution into Databricks `results`."""
    texts: list[str] = []
    tables: list[dict] = []
    images: list[str] = []
    reprs: list[str] = []
    error = None
    for msg in msgs:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            texts.append(content.get("text", ""))
        elif kind in ("execute_result", "display_data"):
            data = content.get("data", {})
            if TABLE_MIME in data:
                tables.append(data[TABLE_MIME])
            elif "image/png" in data:
                images.append(save_image(base64.b64decode(data["image/png"])))
            elif "text/html" in data:  # displayHTML: the HTML itself, not "<IPython…HTML object>"
                texts.append(data["text/html"] + "\n")
            elif "text/plain" in data:
                if kind == "execute_result" and OBJECT_REPR_RE.match(data["text/plain"]):
                    reprs.append(data["text/plain"] + "\n")  # e.g. a matplotlib Axes: its figure follows
                else:
                    texts.append(data["text/plain"] + "\n")
        elif kind == "error":
            error = content
    if error is not None:
        return {
            "resultType": "error",
            "summary": f"{error.get('ename')}: {strip_ansi(error.get('evalue', ''))}",
            "cause": strip_ansi("\n".join(error.get("traceback", []))) or "".join(texts),
        }
    if tables:
        last = tables[-1]
        return {"resultType": "table", "data": last["data"], "schema": last["schema"],
                "truncated": last["truncated"], "isJsonSchema": True}
    if len(images) == 1 and not "".join(texts).strip():
        return {"resultType": "image", "fileName": images[0]}
    if images and not "".join(texts).strip():
        return {"resultType": "images", "fileNames": images}
    return {"resultType": "text", "data": "".join(texts + reprs).rstrip("\n")}


class ContextService:
    def __init__(self, ws, clusters):  # noqa: ANN001
        self.ws = ws
        self.clusters = clusters
        self.contexts: dict[str, Context] = {}
        self._lock = threading.Lock()
        self.spares: dict[str, Spare] = {}  # cluster id -> its ready spare kernel
        self._starting: dict[str, Spare] = {}  # cluster id -> the spare being started
        self._closed = False
        clusters.stop_listeners.append(self.cluster_stopped)
        clusters.start_listeners.append(self.cluster_started)

    # ---- API -----------------------------------------------------------------------------
    def create(self, caller: Principal, cluster_id: object, language: object) -> str:
        lang = self._language(language)
        procs = self._running_cluster(cluster_id)
        self.clusters.check_attach(caller, cluster_id)  # single-user clusters run their user's code only
        spare = self._take_spare(cluster_id, procs) or self._claim_starting(cluster_id, procs)
        ctx = Context(id=spare.ctx_id if spare else new_context_id(), cluster_id=cluster_id, language=lang,
                      owner_id=caller.id, owner=caller)
        with self._lock:
            self.contexts[ctx.id] = ctx
        threading.Thread(target=self._run_context, args=(ctx, procs, spare), name=f"context-{ctx.id}",
                         daemon=True).start()
        return ctx.id

    def status(self, caller: Principal, cluster_id: object, context_id: object) -> dict:
        ctx = self._context(caller, cluster_id, context_id)
        out = {"id": ctx.id, "status": ctx.status}
        if ctx.error:
            out["error"] = ctx.error
        return out

    def destroy(self, caller: Principal, cluster_id: object, context_id: object) -> None:
        ctx = self._context(caller, cluster_id, context_id)
        self._shutdown(ctx)

    def execute(self, caller: Principal, body: dict) -> str:
        ctx = self._context(caller, body.get("clusterId"), body.get("contextId"))
        lang = self._language(body.get("language") or ctx.language)
        code = body.get("command")
        if not isinstance(code, str):
            raise invalid("command is required and must be a string.")
        if lang in ("scala", "r"):
            raise invalid(f"Language {lang} is not supported on Brickyard clusters; use python or sql.")
        if ctx.status == "Error":
            raise BrickyardError("INVALID_STATE", f"Context {ctx.id} failed to start: {ctx.error}")
        cmd = Command(id=uuid.uuid4().hex, code=code, language=lang)
        ctx.commands[cmd.id] = cmd
        ctx.work.put(cmd)
        return cmd.id

    def command_status(self, caller: Principal, cluster_id: object, context_id: object, command_id: object) -> dict:
        ctx = self._context(caller, cluster_id, context_id)
        cmd = ctx.commands.get(command_id) if isinstance(command_id, str) else None
        if cmd is None:
            raise invalid(f"Command {command_id} does not exist in context {ctx.id}.")
        out = {"id": cmd.id, "status": cmd.status}
        if cmd.results is not None:
            out["results"] = cmd.results
        return out

    def cancel(self, caller: Principal, body: dict) -> None:
        ctx = self._context(caller, body.get("clusterId"), body.get("contextId"))
        cmd = ctx.commands.get(body.get("commandId"))
        if cmd is None:
            raise invalid(f"Command {body.get('commandId')} does not exist in context {ctx.id}.")
        if cmd.status in ("Finished", "Error", "Cancelled"):
            return
        if cmd.status == "Queued":
            cmd.status, cmd.results = "Cancelled", {"resultType": "error", "summary": "Command cancelled",
                                                    "cause": "Cancelled before it started."}
        elif cmd.status == "Running":
            cmd.status = "Cancelling"
            if ctx.restarting:
                return  # its code is over; a signal now could kill the new process while it starts
            try:
                ctx.kernel.interrupt_kernel()
            except Exception:  # noqa: BLE001 - the kernel may be gone already
                log.exception("interrupting context %s", ctx.id)

    # ---- internals -----------------------------------------------------------------------
    def _language(self, language: object) -> str:
        if not isinstance(language, str) or language.lower() not in LANGUAGES:
            raise invalid(f"language must be one of {', '.join(LANGUAGES)}.")
        return language.lower()

    def _running_cluster(self, cluster_id: object):  # noqa: ANN202
        info = self.clusters.get(cluster_id)  # raises for a missing cluster
        procs = self.clusters.procs.get(cluster_id)
        if info["state"] != "RUNNING" or procs is None:
            raise BrickyardError("INVALID_STATE", f"Cluster {cluster_id} is not running (state {info['state']}).")
        return procs

    def _context(self, caller: Principal, cluster_id: object, context_id: object) -> Context:
        ctx = self.contexts.get(context_id) if isinstance(context_id, str) else None
        if ctx is None or ctx.cluster_id != cluster_id:
            raise invalid(f"Context {context_id} does not exist on cluster {cluster_id}.")
        if ctx.owner_id != caller.id and not caller.is_admin:
            raise BrickyardError("PERMISSION_DENIED", f"Context {context_id} belongs to another user.")
        return ctx

    def kernel_env(self, ctx_id: str, procs, extra: dict | None = None) -> dict:  # noqa: ANN001
        """The environment of a kernel on this cluster: the driver's gateway, the workspace URL, DBFS, libraries."""
        cluster_id = procs.cluster_dir.name
        spec = self.clusters.spec_of(cluster_id)
        libs = library_dir(self.clusters, procs)
        env = user_environ()
        env.update(spec.get("spark_env_vars") or {})
        env.update({
            "PYSPARK_GATEWAY_PORT": str(procs.info["gateway_port"]),
            "PYSPARK_GATEWAY_SECRET": procs.info["gateway_secret"],
            "BRICKYARD_CONTEXT_ID": f"ctx-{ctx_id}",
            "BRICKYARD_CLUSTER_ID": cluster_id,
            "BRICKYARD_WORKSPACE_ID": str(self.ws.workspace_id),
            "BRICKYARD_HOST": local_api_url(self.ws.settings),
            # For links shown to people (MLflow run links after a cell); the kernel's API calls stay on loopback.
            "BRICKYARD_PUBLIC_URL": public_link_url(self.ws.settings),
            "BRICKYARD_DBFS_ROOT": str(self.ws.settings.dbfs_root),
            "BRICKYARD_LIBRARY_DIR": str(libs),
            "PYSPARK_PYTHON": sys.executable,
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        })
        # The cluster's own packages come first, for the kernel and the processes it starts (%sh python).
        env["PYTHONPATH"] = ":".join(p for p in (str(libs), env.get("PYTHONPATH", "")) if p)
        env.update(extra or {})
        return env

    def start_kernel(self, procs, workdir: Path, user: Principal, env_extra: dict | None = None,  # noqa: ANN001
                     token_lifetime: int = CONTEXT_TOKEN_SECONDS, kernel_id: str | None = None):  # noqa: ANN201
        """Start a kernel attached to the cluster, running as `user` with a token minted for it.

        Returns (kernel manager, client, token id); give all three to stop_kernel.
        """
        token, token_id = mint_kernel_token(self.ws, user, token_lifetime)
        try:
            km, client = self._launch(procs, workdir, kernel_id or workdir.name,
                                      {**self.user_env(user, token), **(env_extra or {})})
        except BaseException:
            revoke_kernel_token(self.ws, token_id)
            raise
        return km, client, token_id

    def user_env(self, user: Principal, token: str) -> dict:
        """The variables that make a kernel its user's (USER_ENV, and the host they go with)."""
        return {"BRICKYARD_TOKEN": token, "DATABRICKS_TOKEN": token,
                "DATABRICKS_HOST": local_api_url(self.ws.settings), "BRICKYARD_USER": user.user_name}

    def _launch(self, procs, workdir: Path, kernel_id: str, env_extra: dict,  # noqa: ANN001, ANN202
                spare: Spare | None = None):
        """A kernel process attached to the cluster's driver, ready; returns (kernel manager, client).

        A spare gets its kernel manager as soon as the process exists, so that a cluster stopping
        meanwhile can stop it.
        """
        from jupyter_client import KernelManager

        from brickyard.runtime.dbfs_paths import namespace_argv

        km = KernelManager()
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                "--IPKernelApp.exec_lines=['from brickyard.runtime.kernel_init import *']",
                "--HistoryManager.enabled=False", "--IPKernelApp.quiet=False"]
        argv = (namespace_argv(str(self.ws.settings.dbfs_root)) or []) + argv
        km._kernel_spec = _spec(argv)  # noqa: SLF001 - a kernel spec without a kernels dir
        workdir.mkdir(parents=True, exist_ok=True)
        km.connection_file = str(workdir / "connection.json")
        env = self.kernel_env(kernel_id, procs, env_extra)
        log_file = open(workdir / "kernel.log", "ab")  # noqa: SIM115 - owned by the kernel process
        try:
            km.start_kernel(env=env, cwd=str(workdir), stdout=log_file, stderr=subprocess.STDOUT)
        finally:
            log_file.close()
        client = km.client()
        try:
            if spare is not None:
                spare.kernel = km
                if spare.cancelled:
                    raise RuntimeError("The cluster stopped while its spare kernel started.")
            client.start_channels()
            client.wait_for_ready(timeout=KERNEL_START_TIMEOUT)
        except BaseException:
            if spare is not None:
                spare.client = client
                self._stop_spare(spare)
            else:
                self.stop_kernel(km, client, None)
            raise
        return km, client

    def stop_kernel(self, km, client, token_id: str | None) -> None:  # noqa: ANN001
        try:
            if client is not None:
                client.stop_channels()
            if km is not None:
                km.shutdown_kernel(now=True)
        finally:
            revoke_kernel_token(self.ws, token_id)

    def _start_kernel(self, ctx: Context, procs):  # noqa: ANN001, ANN202
        owner = ctx.owner or self._owner(ctx.owner_id)
        workdir = Path(procs.cluster_dir) / "contexts" / ctx.id
        km, client, ctx.token_id = self.start_kernel(procs, workdir, owner, kernel_id=ctx.id)
        return km, client

    def _owner(self, user_id: int) -> Principal:
        from brickyard.services.users import principal_of

        with self.ws.store.session() as sess:
            return principal_of(self.ws.services["users"].get(sess, user_id))

    def _run(self, ctx: Context | Spare, code: str, timeout: float | None = None,
             msgs: list[dict] | None = None) -> dict:
        """Run code; its Databricks results. `msgs`, when given, receives the IOPub messages."""
        msgs = [] if msgs is None else msgs
        reply = ctx.client.execute_interactive(code, timeout=timeout, output_hook=msgs.append, allow_stdin=False,
                                               store_history=True)
        if reply["content"].get("status") == "error" and not any(m["msg_type"] == "error" for m in msgs):
            msgs.append({"msg_type": "error", "content": reply["content"]})
        return results_from_messages(msgs, self._save_image)

    def _save_image(self, png: bytes) -> str:
        """Store a plot in dbfs:/FileStore/plots/, as Databricks does; returns its /plots/ name."""
        name = f"{uuid.uuid4()}.png"
        folder = self.ws.settings.dbfs_root / "FileStore" / "plots"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(png)
        tmp.replace(folder / name)
        return f"/plots/{name}"

    def _run_context(self, ctx: Context, procs, spare: Spare | None = None) -> None:  # noqa: ANN001
        try:
            if spare is not None and not spare.ready.wait(KERNEL_START_TIMEOUT + 30):
                spare = None  # its starter stops it when it is done
            if spare is not None and (spare.cancelled or not self._bind(ctx, spare)):
                spare = None
            if spare is None:
                ctx.kernel, ctx.client = self._start_kernel(ctx, procs)
                self._check(ctx)
            ctx.status = "Running"
        except Exception as exc:  # noqa: BLE001 - reported through contexts/status
            log.warning("context %s failed to start: %s", ctx.id, exc)
            ctx.status, ctx.error = "Error", f"The execution context could not start: {exc}"
            self._shutdown(ctx, forget=False)
            return
        while True:
            cmd = ctx.work.get()
            if cmd is None:
                return
            if cmd.status == "Cancelled":
                continue
            if ctx.status == "Error":  # a restart failed: the context has no kernel any more
                cmd.status, cmd.results = "Finished", {"resultType": "error", "summary": "The execution context "
                                                       "stopped", "cause": ctx.error or ""}
                continue
            cmd.status = "Running"
            ctx.running = cmd
            self._mark_busy(ctx, +1)
            try:
                code = cmd.code if cmd.language == "python" else f"_brickyard_sql({cmd.code!r})"
                msgs: list[dict] = []
                results = self._run(ctx, code, msgs=msgs)
                if wants_restart(msgs):
                    results = self._restart_or_fail(ctx, results)
            except Exception as exc:  # noqa: BLE001 - the kernel died or the channel broke
                results = {"resultType": "error", "summary": "The execution context stopped",
                           "cause": str(exc)}
            finally:
                self._mark_busy(ctx, -1)
                ctx.running = None
            if cmd.status == "Cancelling":
                cmd.status = "Cancelled"
            else:
                cmd.status = "Finished"  # as on Databricks, failed code is Finished with an error result
            cmd.results = results

    def _restart_or_fail(self, ctx: Context, results: dict) -> dict:
        """Restart the context's Python after a command asked for it; the command's results (an error if it failed)."""
        try:
            self._restart(ctx)
            return results
        except Exception as exc:  # noqa: BLE001 - the context ends in Error, reported on the command too
            log.warning("context %s: Python could not be restarted: %s", ctx.id, exc)
            ctx.status, ctx.error = "Error", f"Python could not be restarted: {exc}"
            self._shutdown(ctx, forget=False)
            return {"resultType": "error", "summary": "Python could not be restarted", "cause": str(exc)}

    def _restart(self, ctx: Context) -> None:
        """dbutils.library.restartPython(): a fresh process for the context's kernel, ready and attached to Spark.

        The kernel manager stays (so cancel and destroy keep working on it); a destroy or cluster
        stop while the process is replaced finds `restarting` set and leaves the stop to this method.
        """
        with ctx.lock:
            if ctx.closed:
                return
            ctx.restarting = True
        try:
            env = None
            launched = getattr(ctx.kernel, "_launch_args", None) or {}
            if (launched.get("env") or {}).get(SPARE_ENV) == "1":
                # A spare bound to its user: the new process starts bound (the user's variables in its
                # environment, as a kernel started for a context), the same token.
                if not ctx.token:
                    raise RuntimeError("the context's token is unknown")
                env = {k: v for k, v in launched["env"].items() if k != SPARE_ENV}
                env.update(self.user_env(ctx.owner or self._owner(ctx.owner_id), ctx.token))
            old, ctx.client = ctx.client, None
            if old is not None:
                old.stop_channels()
            ctx.client = self.restart_kernel(ctx.kernel, env)
            self._check(ctx, timeout=KERNEL_START_TIMEOUT)
        finally:
            with ctx.lock:
                ctx.restarting = False
                closed = ctx.closed
            if closed:
                self.stop_kernel(ctx.kernel, ctx.client, ctx.token_id)
                ctx.token_id = None

    def restart_kernel(self, km, env: dict | None = None):  # noqa: ANN001, ANN201
        """Replace the process of a kernel started by _launch; returns a new client, ready.

        The old process group is killed first (SIGKILL, as a destroy does, and waited for); the new
        process gets the same command line, connection file (ports and key: a relay's sockets
        reconnect by themselves), working folder and kernel log, and the same environment unless
        `env` replaces it.
        """
        log_file = open(Path(km.connection_file).parent / "kernel.log", "ab")  # noqa: SIM115 - the kernel's
        try:
            extra = {"stdout": log_file, "stderr": subprocess.STDOUT}
            if env is not None:
                extra["env"] = env
            km.restart_kernel(now=True, **extra)
        finally:
            log_file.close()
        client = km.client()
        try:
            client.start_channels()
            client.wait_for_ready(timeout=KERNEL_START_TIMEOUT)
        except BaseException:
            client.stop_channels()
            raise
        return client

    def _mark_busy(self, ctx: Context, delta: int) -> None:
        """Tell the cluster a command runs (auto-termination); a store hiccup must not wedge the context."""
        try:
            self.clusters.mark_busy(ctx.cluster_id, delta)
        except Exception:  # noqa: BLE001
            log.exception("context %s: marking cluster %s busy", ctx.id, ctx.cluster_id)

    def _check(self, ctx: Context | Spare, timeout: float | None = None) -> None:
        """The kernel reaches Spark (raises with the error otherwise)."""
        check = self._run(ctx, "spark.range(1).count()", timeout)
        if check["resultType"] == "error":
            raise RuntimeError(f"{check['summary']}\n{check.get('cause', '')[-2000:]}")

    # ---- spare kernels -------------------------------------------------------------------
    def spare_pid(self, cluster_id: str) -> int | None:
        """The process id of the cluster's ready spare kernel, if it has one."""
        spare = self.spares.get(cluster_id)
        return spare.pid if spare is not None else None

    def cluster_started(self, cluster_id: str) -> None:
        self._schedule_spare(cluster_id, 0)

    def _schedule_spare(self, cluster_id: str, delay: float) -> None:
        if self._closed or not self.ws.settings.context_spares:
            return
        timer = threading.Timer(delay, self._start_spare, args=(cluster_id,))
        timer.daemon = True
        timer.name = f"spare-{cluster_id}"
        timer.start()

    def _start_spare(self, cluster_id: str) -> None:
        procs = self.clusters.procs.get(cluster_id)
        if procs is None or self._closed:
            return
        try:
            info = self.clusters.get(cluster_id)
        except BrickyardError:
            return
        if info.get("state") != "RUNNING" or info.get("cluster_source") == "JOB":
            return  # job clusters run job tasks, not execution contexts
        spare = Spare(ctx_id=new_context_id(), cluster_id=cluster_id, procs=procs)
        with self._lock:
            if cluster_id in self.spares or cluster_id in self._starting:
                return
            self._starting[cluster_id] = spare
        try:
            workdir = Path(procs.cluster_dir) / "contexts" / spare.ctx_id
            spare.kernel, spare.client = self._launch(procs, workdir, spare.ctx_id, {SPARE_ENV: "1"}, spare)
            self._check(spare, timeout=KERNEL_START_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - contexts then start kernels the slow way
            if not spare.cancelled:
                log.warning("cluster %s: spare kernel failed to start: %s", cluster_id, exc)
            spare.cancelled = True
        with self._lock:
            if self._starting.get(cluster_id) is spare:
                del self._starting[cluster_id]
            keep = (not spare.cancelled and not self._closed and self.clusters.procs.get(cluster_id) is procs)
            if not keep:
                spare.cancelled = True
            elif not spare.claimed:
                self.spares[cluster_id] = spare
        if not keep:
            self._stop_spare(spare)
        spare.ready.set()
        if keep and spare.claimed:
            self._schedule_spare(cluster_id, SPARE_REFILL_DELAY)

    def _take_spare(self, cluster_id: str, procs) -> Spare | None:  # noqa: ANN001
        with self._lock:
            spare = self.spares.pop(cluster_id, None)
        if spare is None:
            return None
        if spare.procs is not procs or not spare.kernel.is_alive():
            self._stop_spare(spare)
            spare = None
        self._schedule_spare(cluster_id, SPARE_REFILL_DELAY)
        return spare

    def _claim_starting(self, cluster_id: str, procs) -> Spare | None:  # noqa: ANN001
        """The cluster's spare still starting, for a context to wait for: sooner than a kernel of its own."""
        with self._lock:
            spare = self._starting.get(cluster_id)
            if spare is None or spare.claimed or spare.cancelled or spare.procs is not procs:
                return None
            spare.claimed = True
            return spare

    def _bind(self, ctx: Context, spare: Spare) -> bool:
        """Make the spare kernel the caller's context; False (spare stopped) when that fails."""
        ctx.kernel, ctx.client = spare.kernel, spare.client
        token_id = None
        path = Path(spare.procs.cluster_dir) / "contexts" / spare.ctx_id / f".bind-{secrets.token_hex(8)}.json"
        try:
            owner = ctx.owner or self._owner(ctx.owner_id)
            token, token_id = mint_kernel_token(self.ws, owner, CONTEXT_TOKEN_SECONDS)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.user_env(owner, token), f)
            reply = ctx.client.execute_interactive(
                f"from brickyard.runtime.kernel_init import _bind as _brickyard_bind\n"
                f"_brickyard_bind({str(path)!r})\ndel _brickyard_bind",
                silent=True, store_history=False, allow_stdin=False, timeout=KERNEL_START_TIMEOUT,
                output_hook=lambda msg: None)
            if reply["content"].get("status") != "ok":
                raise RuntimeError(f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}")
            ctx.token_id, ctx.token = token_id, token
            return True
        except Exception as exc:  # noqa: BLE001 - the context starts a kernel of its own instead
            log.warning("context %s: the spare kernel could not be bound: %s", ctx.id, exc)
            ctx.kernel = ctx.client = None
            self.stop_kernel(spare.kernel, spare.client, token_id)
            return False
        finally:
            path.unlink(missing_ok=True)  # the kernel deletes it once read; never leave a token behind

    def _stop_spare(self, spare: Spare) -> None:
        with self._lock:
            spare.cancelled = True
            first, spare.stopped = not spare.stopped, True
        try:
            if spare.client is not None:
                spare.client.stop_channels()
            if first and spare.kernel is not None:
                spare.kernel.shutdown_kernel(now=True)
        except Exception:  # noqa: BLE001
            log.exception("stopping the spare kernel of cluster %s", spare.cluster_id)

    def _shutdown(self, ctx: Context, forget: bool = True) -> None:
        if forget:
            with self._lock:
                self.contexts.pop(ctx.id, None)
        ctx.work.put(None)
        with ctx.lock:
            ctx.closed = True
            if ctx.restarting:
                return  # _restart stops the kernel once its new process is up
        try:
            self.stop_kernel(ctx.kernel, ctx.client, ctx.token_id)
            ctx.token_id = None
        except Exception:  # noqa: BLE001
            log.exception("stopping context %s", ctx.id)

    def cluster_stopped(self, cluster_id: str) -> None:
        with self._lock:
            spare = self.spares.pop(cluster_id, None)
            starting = self._starting.get(cluster_id)
            if starting is not None:
                starting.cancelled = True  # its starter stops it too, and forgets it
        for gone in (spare, starting):
            if gone is not None and gone.kernel is not None:
                self._stop_spare(gone)
        for ctx in [c for c in self.contexts.values() if c.cluster_id == cluster_id]:
            self._shutdown(ctx)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spares = list(self.spares.values())
            self.spares.clear()
            for starting in self._starting.values():
                starting.cancelled = True
            spares += [s for s in self._starting.values() if s.kernel is not None]
        for spare in spares:
            self._stop_spare(spare)
        for ctx in list(self.contexts.values()):
            self._shutdown(ctx)


def new_context_id() -> str:
    return str(secrets.randbelow(9 * 10**18) + 10**18)


def local_api_url(settings) -> str:  # noqa: ANN001
    """The workspace URL as kernels on this host reach it (loopback when it listens on every address)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{_bracket(host)}:{settings.port}"


def public_link_url(settings) -> str:  # noqa: ANN001
    """The workspace URL for links people open: BRICKYARD_PUBLIC_URL when set, else the loopback one."""
    return settings.public_url.rstrip("/") or local_api_url(settings)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def library_dir(clusters, procs) -> Path:  # noqa: ANN001
    """The cluster's own Python packages folder (on its driver's, workers' and notebooks' path)."""
    return Path(clusters.launcher.library_dir(procs.cluster_dir.name))


def mint_kernel_token(ws, user: Principal, lifetime_seconds: int) -> tuple[str, str]:  # noqa: ANN001
    """A short-lived token of `user` for one kernel; returns (value, token id)."""
    with ws.store.session() as sess:
        owner = ws.services["users"].get(sess, user.id)
        value, tok = ws.services["tokens"].create(sess, owner, user, comment="Brickyard notebook kernel",
                                                  lifetime_seconds=lifetime_seconds)
        return value, tok.token_id


def revoke_kernel_token(ws, token_id: str | None) -> None:  # noqa: ANN001
    if not token_id:
        return
    from brickyard.store.models import Token

    try:
        with ws.store.session() as sess:
            tok = sess.get(Token, token_id)
            if tok is not None:
                sess.delete(tok)
    except Exception:  # noqa: BLE001 - the token expires on its own anyway
        log.exception("revoking kernel token")


def _spec(argv: list[str]):  # noqa: ANN202
    from jupyter_client.kernelspec import KernelSpec

    return KernelSpec(argv=argv, display_name="Brickyard", language="python", resource_dir="")
