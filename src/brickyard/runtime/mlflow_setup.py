"""MLflow on a cluster: the workspace is the tracking server and registry of a notebook kernel or
job process and of the Spark Python workers it starts; each notebook cell links to its runs.

Everything goes through variables that stock MLflow reads, so no MLflow plugin is needed:
MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI=databricks with DATABRICKS_HOST/TOKEN (the user's own
token; set by the workspace, ``TRACKING_ENV``), MLFLOW_EXPERIMENT_NAME=the notebook's path (a run
started without an experiment goes to the notebook's experiment, created on first use), and
MLFLOW_RUN_CONTEXT, a JSON object of tags MLflow puts on every run it starts (the notebook, the
cluster, the kernel; in a worker, the parent run).

Python workers are started by the cluster's shared driver JVM, so they inherit the driver's
environment, not this process's. PySpark ships ``sc.environment`` with every Python function
(UDFs, RDD closures, hyperopt trials); ``install`` makes it a ``WorkerEnvironment``, turned into
a Java map by our own py4j converter at the moment a function is shipped. Once this process uses
MLflow, the map gets its tracking set-up and credentials, and the run active here (in any thread:
SparkTrials ships each trial from a thread of its own) as the parent and experiment of the runs
the workers start. Stock MLflow leaves `mlflow.parentRunId` empty there: a worker has no active run.

Spark keeps one Python worker daemon per distinct environment: notebooks that do not use MLflow
share the driver's; one that does gets its own, and one more per parent run that ships work.
"""
from __future__ import annotations

import html
import json
import logging
import os
import sys
import time

log = logging.getLogger(__name__)

# The workspace stays offline: MLflow's usage telemetry is off, as for the UI it serves.
TRACKING_ENV = {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_REGISTRY_URI": "databricks",
                "MLFLOW_DISABLE_TELEMETRY": "true"}
NOTEBOOK_PATH_ENV = "BRICKYARD_NOTEBOOK_PATH"
KERNEL_ENV = "BRICKYARD_CONTEXT_ID"
CLUSTER_ENV = "BRICKYARD_CLUSTER_ID"
RUN_CONTEXT_ENV = "MLFLOW_RUN_CONTEXT"
KERNEL_TAG = "brickyard.kernelId"
PARENT_TAG = "mlflow.parentRunId"
# What a worker needs to log to the workspace as this process's user, about this notebook.
WORKER_ENV = ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
              "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_DISABLE_TELEMETRY",
              "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", RUN_CONTEXT_ENV)
MAX_LINKED_RUNS = 20
# The workspace's URL for people (BRICKYARD_PUBLIC_URL of the workspace), set by it in every kernel;
# DATABRICKS_HOST is the URL this process calls, loopback on the workspace's host.
PUBLIC_URL_ENV = "BRICKYARD_PUBLIC_URL"


def notebook_tags(environ) -> dict[str, str]:  # noqa: ANN001
    """The tags of runs started in this process: its notebook (as Databricks sets them), cluster, kernel."""
    tags: dict[str, str] = {}
    if path := environ.get(NOTEBOOK_PATH_ENV):
        tags.update({"mlflow.source.name": path, "mlflow.source.type": "NOTEBOOK",
                     "mlflow.databricks.notebookPath": path})
    if cluster := environ.get(CLUSTER_ENV):
        tags["mlflow.databricks.cluster.id"] = cluster
    if kernel := environ.get(KERNEL_ENV):
        tags[KERNEL_TAG] = kernel
    return tags


def _run_context(environ) -> dict:  # noqa: ANN001
    try:
        value = json.loads(environ.get(RUN_CONTEXT_ENV) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def configure_process(environ=os.environ) -> None:  # noqa: ANN001
    """Set this process's MLflow variables (the cluster's spark_env_vars win where they set one)."""
    for key, value in TRACKING_ENV.items():
        environ.setdefault(key, value)
    tags = notebook_tags(environ)
    if tags:
        environ[RUN_CONTEXT_ENV] = json.dumps({**tags, **_run_context(environ)})
    path = environ.get(NOTEBOOK_PATH_ENV)
    if path and not environ.get("MLFLOW_EXPERIMENT_NAME") and not environ.get("MLFLOW_EXPERIMENT_ID"):
        environ["MLFLOW_EXPERIMENT_NAME"] = path


def worker_mlflow_env() -> dict[str, str]:
    """This process's MLflow set-up for the workers, once it uses MLflow (else nothing)."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None or not hasattr(mlflow, "get_tracking_uri"):
        return {}
    out = {k: os.environ[k] for k in WORKER_ENV if os.environ.get(k)}
    try:
        from mlflow.tracking import fluent

        out["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
        out["MLFLOW_REGISTRY_URI"] = mlflow.get_registry_uri()
        # The run of this thread, else the newest active run of any thread.
        run = fluent.active_run() or fluent._get_latest_active_run()  # noqa: SLF001
        experiment = fluent._active_experiment_id  # noqa: SLF001 - mlflow.set_experiment() here
        if run is not None:
            out[RUN_CONTEXT_ENV] = json.dumps({**_run_context(os.environ), PARENT_TAG: run.info.run_id})
            experiment = run.info.experiment_id
        if experiment:
            out["MLFLOW_EXPERIMENT_ID"] = experiment
            out.pop("MLFLOW_EXPERIMENT_NAME", None)  # MLflow refuses a name and an id that differ
    except Exception:  # noqa: BLE001 - never break a Spark job over MLflow set-up
        log.debug("MLflow worker environment", exc_info=True)
    return out


class WorkerEnvironment(dict):
    """sc.environment: the user's entries, plus this process's MLflow set-up when shipped."""

    def snapshot(self) -> dict[str, str]:
        live = worker_mlflow_env()
        merged = {**self, **live}
        if "MLFLOW_EXPERIMENT_ID" in live and "MLFLOW_EXPERIMENT_NAME" not in live:
            merged.pop("MLFLOW_EXPERIMENT_NAME", None)
        return merged


class _WorkerEnvironmentConverter:
    """py4j input converter: a WorkerEnvironment becomes a java.util.HashMap of its snapshot."""

    def can_convert(self, obj) -> bool:  # noqa: ANN001
        return isinstance(obj, WorkerEnvironment)

    def convert(self, obj, gateway_client):  # noqa: ANN001, ANN201
        from py4j.java_gateway import JavaClass

        java_map = JavaClass("java.util.HashMap", gateway_client)()
        for key, value in obj.snapshot().items():
            java_map[key] = value
        return java_map


_converter_installed = False


def install(sc) -> None:  # noqa: ANN001
    """Set up MLflow for this process and its Spark workers and, in a notebook kernel, the run links."""
    global _converter_installed
    configure_process()
    if not _converter_installed:
        from py4j.protocol import register_input_converter

        register_input_converter(_WorkerEnvironmentConverter(), prepend=True)
        _converter_installed = True
    env = WorkerEnvironment(sc.environment)
    # Workers never fall back to ./mlflow.db, even for notebooks that do not use MLflow themselves.
    for key in TRACKING_ENV:
        env.setdefault(key, os.environ[key])
    sc.environment = env
    shell = _shell()
    if shell is not None:
        # The cell's links replace MLflow's own "View run at" lines (as in Databricks notebooks), which
        # name the URL this kernel calls (loopback), not the workspace's public one.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        CellRunLinks(shell).register()


def _shell():  # noqa: ANN202
    """The IPython shell of a notebook kernel, or None (a job's Python process)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


def _known_run_ids() -> set[str]:
    """Runs this process has active or last ended, in every thread (no request made)."""
    fluent = sys.modules.get("mlflow.tracking.fluent")
    if fluent is None:
        return set()
    ids = {r.info.run_id for stack in fluent._active_run_stack.get_all_thread_values().values()  # noqa: SLF001
           for r in stack}
    ids.update(i for i in fluent._last_active_run_id.get_all_thread_values().values() if i)  # noqa: SLF001
    return ids


class CellRunLinks:
    """After a cell that started MLflow runs, show links to them (as Databricks notebooks do)."""

    def __init__(self, shell):  # noqa: ANN001
        self.shell = shell
        self.started_ms = 0
        self.before: set[str] = set()

    def register(self) -> None:
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)

    def pre_run_cell(self, info=None) -> None:  # noqa: ANN001, ARG002
        self.started_ms = int(time.time() * 1000) - 1000  # the server's clock is this host's
        self.before = _known_run_ids()

    def post_run_cell(self, result=None) -> None:  # noqa: ANN001, ARG002
        new = _known_run_ids() - self.before
        if not new:
            return
        try:
            runs, names = self._cell_runs(new)
        except Exception:  # noqa: BLE001 - links are a convenience; never fail the cell
            log.debug("MLflow run links", exc_info=True)
            return
        if runs:
            from IPython.display import display

            display(link_bundle(runs, names, link_host()), raw=True)

    def _cell_runs(self, new: set[str]) -> tuple[list, dict[str, str]]:
        """The runs this kernel and its workers started during the cell, and their experiments' names."""
        import mlflow

        client = mlflow.MlflowClient()
        experiments = {client.get_run(run_id).info.experiment_id for run_id in new}
        kernel = os.environ.get(KERNEL_ENV)
        where = f"attributes.start_time >= {self.started_ms}"
        found = list(client.search_runs(sorted(experiments), f"tags.`{KERNEL_TAG}` = '{kernel}' and {where}",
                                        max_results=200, order_by=["attributes.start_time ASC"])) if kernel else []
        if not found:  # the user replaced MLFLOW_RUN_CONTEXT: link what this process knows of
            found = [client.get_run(run_id) for run_id in sorted(new)]
        names = {e: client.get_experiment(e).name for e in {r.info.experiment_id for r in found}}
        return found, names


def link_host(environ=os.environ) -> str:  # noqa: ANN001
    """The base URL of run links: the workspace's public URL, else the one this process calls."""
    return environ.get(PUBLIC_URL_ENV) or environ.get("DATABRICKS_HOST", "")


def link_bundle(runs: list, names: dict[str, str], host: str) -> dict:
    """A display bundle (HTML and text) linking to runs in the workspace's MLflow UI."""
    base = host.rstrip("/") + "/ml/#/experiments"
    exp_ids = sorted({r.info.experiment_id for r in runs})
    what = f"MLflow: logged {len(runs)} run{'s' if len(runs) != 1 else ''} to experiment"
    text, items = [f"{what} {', '.join(names.get(e, e) for e in exp_ids)}"], []
    for r in runs[:MAX_LINKED_RUNS]:
        url = f"{base}/{r.info.experiment_id}/runs/{r.info.run_id}"
        name = r.info.run_name or r.info.run_id
        text.append(f"  {name}: {url}")
        items.append(f'<li><a href="{html.escape(url)}" target="_blank">{html.escape(name)}</a></li>')
    if len(runs) > MAX_LINKED_RUNS:
        text.append(f"  … and {len(runs) - MAX_LINKED_RUNS} more")
    exp_links = ", ".join(f'<a href="{html.escape(f"{base}/{e}")}" target="_blank">'
                          f'{html.escape(names.get(e, e))}</a>' for e in exp_ids)
    return {"text/plain": "\n".join(text),
            "text/html": f'<div class="mlflow-runs">{what} {exp_links}<ul>{"".join(items)}</ul></div>'}


__all__ = ["TRACKING_ENV", "WorkerEnvironment", "configure_process", "install", "link_bundle", "link_host",
           "notebook_tags", "worker_mlflow_env"]
