"""Start and stop the processes of one cluster: init scripts, the driver, standalone workers."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from brickyard.compute import catalog

log = logging.getLogger(__name__)
DRIVER_START_TIMEOUT = 240


class LaunchError(Exception):
    """A cluster could not start; code is a Databricks TerminationReasonCode."""

    def __init__(self, code: str, message: str, kind: str = "CLIENT_ERROR"):
        super().__init__(message)
        self.code = code
        self.message = message
        self.kind = kind


@dataclass
class ClusterProcesses:
    cluster_dir: Path
    driver: subprocess.Popen
    info: dict
    standalone: object | None = None
    extra: dict = field(default_factory=dict)

    def alive(self) -> bool:
        return self.driver.poll() is None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Launcher:
    """Turns a cluster spec into running processes on this host."""

    def __init__(self, settings, conf_builder=None):  # noqa: ANN001
        self.settings = settings
        self.conf_builder = conf_builder  # callable(cluster_id, spec, cores) -> (spark_conf, hive)
        self.root = settings.home / "clusters"

    def cluster_dir(self, cluster_id: str) -> Path:
        return self.root / cluster_id

    def run_init_scripts(self, cluster_id: str, scripts: list[tuple[str, bytes]], env: dict) -> list[dict]:
        """Run each script with bash; the first failure raises with the script's output."""
        results = []
        workdir = self.cluster_dir(cluster_id) / "init_scripts"
        workdir.mkdir(parents=True, exist_ok=True)
        for i, (name, body) in enumerate(scripts):
            path = workdir / f"{i:02d}.sh"
            path.write_bytes(body)
            started = time.time()
            proc = subprocess.run(["bash", str(path)], env=env, cwd=workdir, capture_output=True, timeout=600)
            out = (proc.stdout + proc.stderr).decode(errors="replace")
            (workdir / f"{i:02d}.log").write_text(out)
            results.append({"destination": name, "exit_code": proc.returncode,
                            "execution_duration_seconds": round(time.time() - started, 3)})
            if proc.returncode != 0:
                raise LaunchError(
                    "INIT_SCRIPT_FAILURE",
                    f"Init script {name} failed with exit code {proc.returncode}: {out[-2000:]}",
                )
        return results

    def start(self, cluster_id: str, spec: dict, env_extra: dict, scripts: list[tuple[str, bytes]]) -> ClusterProcesses:
        cdir = self.cluster_dir(cluster_id)
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / "driver.json").unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(spec.get("spark_env_vars") or {})
        env.update(env_extra)
        env["PYSPARK_PYTHON"] = env.get("PYSPARK_PYTHON") or sys.executable
        env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        if scripts:
            self.run_init_scripts(cluster_id, scripts, env)
        nt = catalog.node_type(spec.get("driver_node_type_id") or spec.get("node_type_id") or "local.small") \
            if (spec.get("driver_node_type_id") or spec.get("node_type_id")) else catalog.SMALLEST_LOCAL
        cores, _mem, _ = catalog.capped(nt)
        spark_conf, hive = self.conf_builder(cluster_id, spec, cores) if self.conf_builder else ({}, False)
        spark_conf.setdefault("spark.master", f"local[{cores}]")
        conf = {"app_name": spec.get("cluster_name", cluster_id), "spark_conf": spark_conf, "hive": hive}
        (cdir / "driver-conf.json").write_text(json.dumps(conf, indent=1))
        logf = open(cdir / "driver.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "brickyard.compute.driver", str(cdir)],
            env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=cdir,
        )
        logf.close()
        deadline = time.time() + DRIVER_START_TIMEOUT
        while time.time() < deadline:
            if (cdir / "driver.json").exists():
                info = json.loads((cdir / "driver.json").read_text())
                return ClusterProcesses(cdir, proc, info)
            if proc.poll() is not None:
                raise LaunchError(
                    "DRIVER_UNEXPECTED_FAILURE",
                    f"The Spark driver exited with code {proc.returncode} while starting:\n"
                    + _tail(cdir / "driver.log"),
                    "SERVICE_FAULT",
                )
            time.sleep(0.1)
        self._kill(proc)
        raise LaunchError("DRIVER_LAUNCH_TIMEOUT", "The Spark driver did not start in time:\n"
                          + _tail(cdir / "driver.log"), "SERVICE_FAULT")

    def stop(self, procs: ClusterProcesses) -> None:
        self._kill(procs.driver)
        if procs.standalone is not None:
            procs.standalone.stop()
        (procs.cluster_dir / "driver.json").unlink(missing_ok=True)

    @staticmethod
    def _kill(proc: subprocess.Popen, grace: float = 20) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def remove(self, cluster_id: str) -> None:
        shutil.rmtree(self.cluster_dir(cluster_id), ignore_errors=True)
