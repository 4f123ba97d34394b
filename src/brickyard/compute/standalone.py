"""A Spark standalone master and its worker processes (one JVM each) on this host.

pip's pyspark has no sbin/start-*.sh scripts, so the daemons run through bin/spark-class.
Every process leads its own process group (its executors belong to it), logs to
<base_dir>/logs/<name>.log and is recorded in <base_dir>/standalone.json, so that
stop_recorded() can clean up after a workspace that died.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from brickyard.compute import runtime
from brickyard.compute.environment import user_environ

log = logging.getLogger(__name__)

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class StandaloneError(RuntimeError):
    """A daemon did not start or register in time (the message quotes its log)."""


@dataclass
class Daemon:
    name: str  # "master" or the worker's name
    pid: int
    port: int
    webui_port: int
    cores: int = 0
    memory_mb: int = 0

    @property
    def main_class(self) -> str:
        return MASTER_CLASS if self.name == "master" else WORKER_CLASS


class StandaloneCluster:
    """One standalone master plus N workers, started and stopped by the cluster supervisor."""

    def __init__(self, base_dir: Path | str, *, host: str = "127.0.0.1", daemon_memory: str = "512m",
                 env: dict[str, str] | None = None):
        self.base_dir = Path(base_dir)
        self.host = host
        self.daemon_memory = daemon_memory
        self.extra_env = dict(env or {})
        self.daemons: dict[str, Daemon] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.RLock()
        self._counter = 0

    # ---- public ---------------------------------------------------------------------------
    @property
    def master(self) -> Daemon:
        try:
            return self.daemons["master"]
        except KeyError:
            raise StandaloneError("the standalone master is not started") from None

    @property
    def master_url(self) -> str:
        """spark://host:port, the `spark.master` of the cluster's driver."""
        return f"spark://{self.host}:{self.master.port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.master.webui_port}"

    def start_master(self, timeout: float = 60.0) -> str:
        """Start the master (idempotent) and wait until it is ALIVE; returns its spark:// URL."""
        with self._lock:
            if "master" not in self.daemons:
                port, webui = runtime.free_port(self.host), runtime.free_port(self.host)
                args = ["--host", self.host, "--port", str(port), "--webui-port", str(webui)]
                self._spawn(Daemon("master", 0, port, webui), MASTER_CLASS, args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self._try_state()
            if state and state.get("status") == "ALIVE":
                return self.master_url
            self._check_running("master")
            time.sleep(0.2)
        raise StandaloneError(f"the standalone master was not ALIVE within {timeout:.0f} s: {self._log_tail('master')}")

    def add_worker(self, cores: int, memory_mb: int, name: str | None = None) -> str:
        """Start one worker process (cores, memory for its executors); returns its name. Does not wait."""
        if cores < 1 or memory_mb < 1:
            raise ValueError("a worker needs at least 1 core and 1 MB of memory")
        with self._lock:
            master = self.master_url
            if name is None:
                self._counter += 1
                name = f"worker-{self._counter}"
                while name in self.daemons:
                    self._counter += 1
                    name = f"worker-{self._counter}"
            elif name in self.daemons or name == "master" or "/" in name:
                raise ValueError(f"bad or duplicate worker name: {name!r}")
            port, webui = runtime.free_port(self.host), runtime.free_port(self.host)
            work = self.base_dir / "work" / name
            work.mkdir(parents=True, exist_ok=True)
            args = ["--host", self.host, "--port", str(port), "--webui-port", str(webui), "--cores", str(cores),
                    "--memory", f"{memory_mb}m", "--work-dir", str(work), master]
            self._spawn(Daemon(name, 0, port, webui, cores, memory_mb), WORKER_CLASS, args)
            return name

    def remove_worker(self, name: str, timeout: float = 15.0) -> None:
        """Stop one worker and its executors (the master marks it DEAD; running tasks are retried elsewhere)."""
        with self._lock:
            daemon = self.daemons.pop(name, None)
            proc = self._procs.pop(name, None)
            self._save()
        if daemon is not None:
            runtime.terminate(daemon.pid, proc, WORKER_CLASS, timeout, group=True)

    def wait_for_workers(self, names: list[str] | None = None, timeout: float = 90.0) -> list[dict]:
        """Wait until the named workers (default: all started) are ALIVE at the master; returns their entries."""
        names = list(names if names is not None else [n for n in self.daemons if n != "master"])
        deadline = time.monotonic() + timeout
        while True:
            alive = {w["port"]: w for w in (self._try_state() or {}).get("workers", []) if w.get("state") == "ALIVE"}
            entries = [alive.get(self.daemons[n].port) for n in names if n in self.daemons]
            if len(entries) == len(names) and all(entries):
                return entries
            for n in names:
                self._check_running(n)
            if time.monotonic() > deadline:
                missing = [n for n, e in zip(names, entries) if not e]
                raise StandaloneError(f"workers {missing} did not register within {timeout:.0f} s: "
                                      f"{self._log_tail(missing[0]) if missing else ''}")
            time.sleep(0.25)

    def master_state(self) -> dict:
        """The master's JSON status (workers, aliveworkers, cores, activeapps, ...)."""
        with urllib.request.urlopen(f"{self.webui_url}/json/", timeout=5) as resp:
            return json.load(resp)

    def workers(self) -> list[str]:
        return [n for n in self.daemons if n != "master"]

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every worker, then the master."""
        for name in self.workers():
            self.remove_worker(name, timeout)
        with self._lock:
            daemon = self.daemons.pop("master", None)
            proc = self._procs.pop("master", None)
        if daemon is not None:
            runtime.terminate(daemon.pid, proc, MASTER_CLASS, timeout, group=True)
        (self.base_dir / "standalone.json").unlink(missing_ok=True)

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of each daemon JVM in MiB."""
        return {n: runtime.rss_mib(d.pid) for n, d in self.daemons.items()}

    # ---- internals ------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        conf_dir = self.base_dir / "conf"  # empty: no stray spark-defaults.conf / spark-env.sh
        conf_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.base_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**user_environ(), **self.extra_env}
        for key in ("SPARK_MASTER", "MASTER", "PYSPARK_SUBMIT_ARGS", "HADOOP_CONF_DIR"):
            env.pop(key, None)
        env.update({
            "SPARK_HOME": str(runtime.spark_home()),
            "SPARK_CONF_DIR": str(conf_dir),
            "SPARK_LOCAL_IP": self.host,
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
            "SPARK_DAEMON_JAVA_OPTS": f"-Djava.io.tmpdir={tmp}",
        })
        return env

    def _spawn(self, daemon: Daemon, main_class: str, args: list[str]) -> None:
        logs = self.base_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{daemon.name}.log", "ab") as out:
            proc = subprocess.Popen(runtime.spark_class(main_class, *args), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.base_dir, env=self._env(),
                                    start_new_session=True)
        daemon.pid = proc.pid  # spark-class execs java, so this stays the JVM's pid
        self.daemons[daemon.name] = daemon
        self._procs[daemon.name] = proc
        self._save()
        log.info("started standalone %s (pid %s)", daemon.name, proc.pid)

    def _save(self) -> None:
        state = {"host": self.host, "daemons": [asdict(d) for d in self.daemons.values()]}
        path = self.base_dir / "standalone.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    def _try_state(self) -> dict | None:
        try:
            return self.master_state()
        except (OSError, ValueError):
            return None

    def _check_running(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise StandaloneError(f"standalone {name} exited (code {proc.returncode}): {self._log_tail(name)}")

    def _log_tail(self, name: str, lines: int = 15) -> str:
        path = self.base_dir / "logs" / f"{name}.log"
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) + f"\n(log: {path})"


def stop_recorded(base_dir: Path | str, timeout: float = 15.0) -> int:
    """Stop the daemons a previous process recorded in base_dir (after a workspace restart); returns how many."""
    path = Path(base_dir) / "standalone.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    stopped = 0
    for d in sorted(state.get("daemons", []), key=lambda d: d["name"] == "master"):  # workers first
        daemon = Daemon(**d)
        if runtime.pid_alive(daemon.pid, daemon.main_class):
            runtime.terminate(daemon.pid, None, daemon.main_class, timeout, group=True)
            stopped += 1
    path.unlink(missing_ok=True)
    return stopped
