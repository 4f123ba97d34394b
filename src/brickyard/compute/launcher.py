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

from brickyard.compute.environment import user_environ
from brickyard.secrets.crypto import write_private_file
from brickyard.compute import catalog, cds, driver_control, runtime
from brickyard.compute.metastore import Metastore, MetastoreError
from brickyard.compute.spark_conf import cluster_jvm_classpath, cluster_spark_conf, local_master
from brickyard.compute.standalone import StandaloneCluster, StandaloneError, stop_recorded

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


def site_dir(prefix: Path) -> Path:
    """The site-packages folder pip fills under a --prefix."""
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _write_private_json(path: Path, data: dict) -> None:
    write_private_file(path, json.dumps(data))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Launcher:
    """Turns a cluster spec into running processes on this host."""

    def __init__(self, settings):  # noqa: ANN001
        self.settings = settings
        self.root = settings.home / "clusters"
        # The workspace's one catalog, shared by every cluster; started with the first cluster.
        self.metastore = Metastore.from_settings(settings)  # Derby, or schema `hive` of the workspace's PostgreSQL
        self.metastore.claim()  # a service a killed workspace left running is kept for this one (its watchdog)
        self.mounts = lambda: []  # the mount table (mount_point, target[, hadoop conf]) as clusters see it

    def cluster_dir(self, cluster_id: str) -> Path:
        return self.root / cluster_id

    def library_prefix(self, cluster_id: str) -> Path:
        """The pip --prefix of the cluster's own Python packages (Libraries API and %pip alike)."""
        return self.cluster_dir(cluster_id) / "python"

    def library_dir(self, cluster_id: str) -> Path:
        """The cluster's own Python packages, first on the path of its driver, workers and notebooks."""
        return site_dir(self.library_prefix(cluster_id))

    def reset_libraries(self, cluster_id: str) -> Path:
        """An empty library folder: libraries are installed afresh at every (re)start, as on Databricks."""
        shutil.rmtree(self.library_prefix(cluster_id), ignore_errors=True)
        path = self.library_dir(cluster_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def spark_conf(self, cluster_id: str, spec: dict, master: str, env: dict, *, cdir: Path | None = None,
                   library_dir: Path | None = None, jars: list[str] = ()) -> dict:
        mounts = list(self.mounts())
        try:
            metastore_url = self.metastore.start()
            delta = runtime.delta_jars()
            classpath = cluster_jvm_classpath(mounts)
        except (MetastoreError, FileNotFoundError) as exc:
            raise LaunchError("SPARK_STARTUP_FAILURE", f"The cluster's Spark environment is not ready: {exc}",
                              "SERVICE_FAULT") from exc
        cdir = cdir or self.cluster_dir(cluster_id)
        conf = cluster_spark_conf(
            app_name=spec.get("cluster_name", cluster_id), master=master, dbfs_root=self.settings.dbfs_root,
            metastore_uri=metastore_url, delta_jars=delta, tmp_dir=cdir / "tmp", mounts=mounts,
            classpath_jars=classpath, ui_port=runtime.free_port(), local_dir=cdir / "local",
            library_dir=library_dir or self.library_dir(cluster_id), env=spec.get("spark_env_vars") or {},
            user_jars=list(jars),
            user_conf=spec.get("spark_conf") or {},
        )
        cds_opts = cds.java_options()
        if cds_opts:
            conf["spark.driver.extraJavaOptions"] = f"{conf.get('spark.driver.extraJavaOptions', '')} {cds_opts}".strip()
        return conf

    def start_workers(self, cluster_id: str, spec: dict, count: int, env: dict,
                      base_dir: Path | None = None) -> StandaloneCluster:
        """A standalone master and one worker JVM per node, each sized by the node type (capped to the host)."""
        nt = catalog.node_type(spec["node_type_id"]) if spec.get("node_type_id") else catalog.SMALLEST_LOCAL
        cores, mem_mb, _ = catalog.capped(nt)
        standalone = StandaloneCluster(base_dir or self.cluster_dir(cluster_id) / "standalone", env=env)
        try:
            standalone.start_master()
            names = [standalone.add_worker(cores, mem_mb) for _ in range(count)]
            standalone.wait_for_workers(names)
        except (StandaloneError, ValueError) as exc:
            standalone.stop()
            raise LaunchError("SPARK_STARTUP_FAILURE", f"The cluster's workers did not start: {exc}",
                              "SERVICE_FAULT") from exc
        return standalone

    def resize(self, procs: "ClusterProcesses", spec: dict, count: int) -> int:
        """Add or remove standalone workers; returns the number of workers now running."""
        standalone = procs.standalone
        if standalone is None:
            return 0
        current = standalone.workers()
        if count > len(current):
            nt = catalog.node_type(spec["node_type_id"]) if spec.get("node_type_id") else catalog.SMALLEST_LOCAL
            cores, mem_mb, _ = catalog.capped(nt)
            names = [standalone.add_worker(cores, mem_mb) for _ in range(count - len(current))]
            standalone.wait_for_workers(names)
        for name in current[count:][::-1]:
            standalone.remove_worker(name)
        return len(standalone.workers())

    def cleanup_leftovers(self) -> None:
        """Stop standalone daemons a previous (crashed) workspace process left behind."""
        if self.root.exists():
            for cdir in self.root.iterdir():
                if (cdir / "standalone").exists():
                    stop_recorded(cdir / "standalone")

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

    def _env(self, spec: dict, env_extra: dict, library_dir: Path) -> dict:
        env = user_environ()  # never the workspace's own keys and tokens
        env.update(spec.get("spark_env_vars") or {})
        env.update(env_extra)
        env["PYSPARK_PYTHON"] = env.get("PYSPARK_PYTHON") or sys.executable
        env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        env["PYTHONPATH"] = ":".join(p for p in (str(library_dir), env.get("PYTHONPATH")) if p)
        return env

    def script_env(self, cluster_id: str, spec: dict, env: dict) -> dict:
        """What an init script sees: the variables Databricks sets, and the cluster's library folder."""
        return {**env, "DB_CLUSTER_ID": cluster_id, "DB_CLUSTER_NAME": spec.get("cluster_name", cluster_id),
                "DB_IS_DRIVER": "TRUE", "DB_DRIVER_IP": "127.0.0.1", "DB_IS_JOB_CLUSTER": "FALSE",
                "BRICKYARD_LIBRARY_DIR": str(self.library_dir(cluster_id)),
                "BRICKYARD_LIBRARY_PREFIX": str(self.library_prefix(cluster_id))}

    def start(self, cluster_id: str, spec: dict, env_extra: dict, scripts: list[tuple[str, bytes]],
              jars: list[str] = ()) -> ClusterProcesses:
        """Run init scripts, start workers (multi-node) and a driver; returns once Spark is up."""
        cdir = self.cluster_dir(cluster_id)
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / "driver.json").unlink(missing_ok=True)
        libdir = self.reset_libraries(cluster_id)
        env = self._env(spec, env_extra, libdir)
        script_results = self.run_init_scripts(cluster_id, scripts, self.script_env(cluster_id, spec, env)) \
            if scripts else []
        driver_type = spec.get("driver_node_type_id") or spec.get("node_type_id")
        nt = catalog.node_type(driver_type) if driver_type else catalog.SMALLEST_LOCAL
        cores, _mem, _ = catalog.capped(nt)
        user_master = (spec.get("spark_conf") or {}).get("spark.master", "")
        workers = 0 if spec.get("spark_conf", {}).get("spark.databricks.cluster.profile") == "singleNode" \
            else (spec["autoscale"]["min_workers"] if spec.get("autoscale") else spec.get("num_workers") or 0)
        standalone = None
        if user_master.startswith(("spark://", "k8s://", "yarn")):
            master = user_master  # an external cluster manager, used as is
        elif workers > 0 or spec.get("autoscale"):
            standalone = self.start_workers(cluster_id, spec, workers, {k: v for k, v in env.items()
                                                                        if k in (spec.get("spark_env_vars") or {})})
            master = standalone.master_url
        else:
            master = local_master(cores)
        try:
            spark_conf = self.spark_conf(cluster_id, spec, master, env, jars=jars)
        except LaunchError:
            if standalone is not None:
                standalone.stop()
            raise
        if standalone is not None:
            spark_conf["spark.master"] = master  # the cluster's own master, whatever spark_conf said
        conf = {"app_name": spec.get("cluster_name", cluster_id), "spark_conf": spark_conf, "hive": True,
                "warm_up": "after"}
        try:
            proc, info = self._spawn_driver(cdir, conf, env)
        except LaunchError:
            if standalone is not None:
                standalone.stop()
            raise
        return ClusterProcesses(cdir, proc, info, standalone,
                                {"workers": workers, "init_scripts": script_results})

    def start_warm(self, instance_dir: Path, node_type_id: str | None) -> ClusterProcesses:
        """An idle pool instance: a driver with Spark, Delta and the catalog up, waiting for a cluster."""
        instance_dir.mkdir(parents=True, exist_ok=True)
        nt = catalog.node_type(node_type_id) if node_type_id else catalog.SMALLEST_LOCAL
        cores, _mem, _ = catalog.capped(nt)
        libdir = site_dir(instance_dir / "python")  # replaced by the cluster's own when adopted
        libdir.mkdir(parents=True, exist_ok=True)
        spec = {"cluster_name": f"pool-instance-{instance_dir.name}"}
        env = self._env(spec, {}, libdir)
        spark_conf = self.spark_conf(instance_dir.name, spec, local_master(cores), env, cdir=instance_dir,
                                     library_dir=libdir)
        conf = {"app_name": spec["cluster_name"], "spark_conf": spark_conf, "hive": True, "warm_up": "before"}
        proc, info = self._spawn_driver(instance_dir, conf, env)
        return ClusterProcesses(instance_dir, proc, info, None, {"instance_dir": str(instance_dir)})

    def start_warm_set(self, instance_dir: Path, node_type_id: str | None, workers: int) -> ClusterProcesses:
        """An idle multi-node pool instance: a standalone master, `workers` worker JVMs of the node type
        and a driver whose application already has its executors on them, waiting for a cluster."""
        instance_dir.mkdir(parents=True, exist_ok=True)
        libdir = site_dir(instance_dir / "python")  # the cluster's own comes first once adopted
        libdir.mkdir(parents=True, exist_ok=True)
        spec = {"cluster_name": f"pool-instance-{instance_dir.name}", "node_type_id": node_type_id}
        env = self._env(spec, {}, libdir)
        standalone = self.start_workers(instance_dir.name, spec, workers, {}, base_dir=instance_dir / "standalone")
        try:
            spark_conf = self.spark_conf(instance_dir.name, spec, standalone.master_url, env, cdir=instance_dir,
                                         library_dir=libdir)
            spark_conf["spark.master"] = standalone.master_url
            conf = {"app_name": spec["cluster_name"], "spark_conf": spark_conf, "hive": True, "warm_up": "before"}
            proc, info = self._spawn_driver(instance_dir, conf, env)
        except BaseException:
            standalone.stop()
            raise
        return ClusterProcesses(instance_dir, proc, info, standalone,
                                {"instance_dir": str(instance_dir), "pool_workers": workers})

    def adopt(self, cluster_id: str, spec: dict, warm: ClusterProcesses, scripts: list[tuple[str, bytes]],
              jars: list[str] = ()) -> ClusterProcesses:
        """Make an idle pool instance this cluster's: init scripts, runtime conf, library folder, jars; a
        multi-node instance (driver + standalone workers) is then resized to the cluster's worker count.

        What only applies when a JVM starts (memory, extra class paths, ...) cannot be changed in a
        running driver: it is listed in extra["not_applied"] for an event. The cluster's spark_env_vars
        reach the Python workers of every executor (they travel with each Python function).
        """
        cdir = self.cluster_dir(cluster_id)
        cdir.mkdir(parents=True, exist_ok=True)
        libdir = self.reset_libraries(cluster_id)
        env = self._env(spec, {}, libdir)
        script_results = self.run_init_scripts(cluster_id, scripts, self.script_env(cluster_id, spec, env)) \
            if scripts else []
        env_vars = {**(spec.get("spark_env_vars") or {}), "PYTHONPATH": str(libdir)}
        try:
            applied, not_applied = driver_control.adopt(warm.info, spec.get("spark_conf") or {}, env_vars,
                                                        list(jars))
        except driver_control.ControlError as exc:
            raise LaunchError("INSTANCE_POOL_CLUSTER_FAILURE",
                              f"The pool's idle driver could not be adopted: {exc}", "SERVICE_FAULT") from exc
        procs = ClusterProcesses(cdir, warm.driver, warm.info, warm.standalone, {
            "workers": 0, "init_scripts": script_results, "instance_dir": str(warm.cluster_dir),
            "applied": applied, "not_applied": [k for k in not_applied if k != "spark.master"],
            "pool_workers": warm.extra.get("pool_workers", 0)})
        if warm.standalone is not None:
            target = spec["autoscale"]["min_workers"] if spec.get("autoscale") else spec.get("num_workers") or 0
            try:
                procs.extra["workers"] = self.resize(procs, spec, target)
            except (StandaloneError, ValueError) as exc:
                raise LaunchError("INSTANCE_POOL_CLUSTER_FAILURE",
                                  f"The pool's idle workers could not be resized: {exc}", "SERVICE_FAULT") from exc
        _write_private_json(cdir / "driver.json", {**warm.info, "pool_instance": warm.cluster_dir.name})
        return procs

    def _spawn_driver(self, cdir: Path, conf: dict, env: dict) -> tuple[subprocess.Popen, dict]:
        (cdir / "driver.json").unlink(missing_ok=True)
        # 0600: the Spark conf can carry mount credentials.
        write_private_file(cdir / "driver-conf.json", json.dumps(conf, indent=1))
        logf = open(cdir / "driver.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "brickyard.compute.driver", str(cdir)],
            env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=cdir,
        )
        logf.close()
        deadline = time.time() + DRIVER_START_TIMEOUT
        while time.time() < deadline:
            if (cdir / "driver.json").exists():
                return proc, json.loads((cdir / "driver.json").read_text())
            if proc.poll() is not None:
                raise LaunchError(
                    "DRIVER_UNEXPECTED_FAILURE",
                    f"The Spark driver exited with code {proc.returncode} while starting:\n"
                    + _tail(cdir / "driver.log"),
                    "SERVICE_FAULT",
                )
            time.sleep(0.05)
        self._kill(proc)
        raise LaunchError("DRIVER_LAUNCH_TIMEOUT", "The Spark driver did not start in time:\n"
                          + _tail(cdir / "driver.log"), "SERVICE_FAULT")

    def stop(self, procs: ClusterProcesses) -> None:
        self._kill(procs.driver)
        if procs.standalone is not None:
            procs.standalone.stop()
        (procs.cluster_dir / "driver.json").unlink(missing_ok=True)
        if procs.extra.get("instance_dir"):  # a used pool instance is not reused: its driver is gone
            shutil.rmtree(procs.extra["instance_dir"], ignore_errors=True)

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

    def close(self) -> None:
        self.metastore.release()  # stopped unless another workspace process on the home still uses it
