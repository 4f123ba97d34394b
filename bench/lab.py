"""The wine lab's compute through Brickyard vs as a plain PySpark script, in one run, as a ratio.

bench/lab/experiment.py (reads, UDFs, tables, the random forest with MLflow and the registry,
the hyperopt SparkTrials sweep, Delta + spark_udf batch inference) runs twice on this machine:
1. as a notebook job on a Single Node cluster (local[2]) of a fresh embedded workspace, MLflow
   going to the workspace over HTTP;
2. as `python bench/lab/experiment.py` with its own local[2] SparkSession and MLflow on a SQLite
   file.
Each run times its own parts once Spark is up (so neither JVM start counts). Target: the
workspace's total <= 1.15 x the plain script's.

    python bench/lab.py [--max-evals 8]
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "wine-lab" / "data"
EXPERIMENT = Path(__file__).resolve().parent / "lab" / "experiment.py"
NAMES = {"winequality-red.csv": "winequality_red.csv", "winequality-white.csv": "winequality_white.csv"}
TARGET = 1.15


def through_workspace(tmp: Path, max_evals: int) -> dict:
    from datetime import timedelta

    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config
    from databricks.sdk.service.jobs import NotebookTask, SubmitTask
    from databricks.sdk.service.workspace import ImportFormat, Language

    from brickyard.demo import Embedded

    logging.basicConfig(filename=tmp / "workspace.log", level=logging.INFO)
    ws = Embedded(tmp / "home", 0)
    import mlflow  # noqa: F401 - configures its logger, quieted next

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        w = WorkspaceClient(config=Config(host=ws.url, token=ws.token, auth_type="pat", retry_timeout_seconds=60))
        cluster = w.clusters.create_and_wait(
            cluster_name="lab-bench", spark_version="17.3.x-cpu-ml-scala2.13", node_type_id="local.medium",
            num_workers=0, spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[2]"},
            custom_tags={"ResourceClass": "SingleNode"}, timeout=timedelta(minutes=10))
        for local, remote in NAMES.items():
            with open(DATA / local, "rb") as fh:
                w.dbfs.upload(f"/FileStore/bench/{remote}", fh, overwrite=True)
        w.workspace.import_("/Shared/wine-bench", content=base64.b64encode(EXPERIMENT.read_bytes()).decode(),
                            format=ImportFormat.SOURCE, language=Language.PYTHON, overwrite=True)
        params = {"spark_data": "dbfs:/FileStore/bench", "local_data": "/dbfs/FileStore/bench",
                  "work_dir": "dbfs:/tmp/bench", "max_evals": str(max_evals)}
        run = w.jobs.submit(run_name="lab bench", tasks=[SubmitTask(
            task_key="bench", existing_cluster_id=cluster.cluster_id,
            notebook_task=NotebookTask(notebook_path="/Shared/wine-bench", base_parameters=params))]
        ).result(timeout=timedelta(minutes=30))
        output = w.jobs.get_run_output(run.tasks[0].run_id)
        if run.state.result_state.value != "SUCCESS":
            raise SystemExit(f"the workspace run failed: {output.error}\n{output.error_trace}")
        return json.loads(output.notebook_output.result)
    finally:
        ws.stop()


def as_plain_script(tmp: Path, max_evals: int) -> dict:
    data = tmp / "data"
    data.mkdir(parents=True)
    for local, remote in NAMES.items():
        shutil.copy(DATA / local, data / remote)
    work = tmp / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(EXPERIMENT), str(data), str(work), str(max_evals)], cwd=work,
                          capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the plain script failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--max-evals", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "ws").mkdir()
        t0 = time.monotonic()
        ours = through_workspace(tmp / "ws", args.max_evals)
        plain = as_plain_script(tmp / "plain", args.max_evals)
        elapsed = time.monotonic() - t0
    print(f"wine lab compute, sweep of {args.max_evals} evaluations ({elapsed:.0f} s in all)")
    print(f"{'part':<12}{'brickyard s':>13}{'plain s':>10}{'ratio':>8}")
    for part, seconds in ours["timings"].items():
        other = plain["timings"].get(part) or float("nan")
        print(f"{part:<12}{seconds:>13.1f}{other:>10.1f}{seconds / other:>8.2f}")
    ratio = ours["total"] / plain["total"]
    print(f"{'total':<12}{ours['total']:>13.1f}{plain['total']:>10.1f}{ratio:>8.2f}   "
          f"(target <= {TARGET}: {'met' if ratio <= TARGET else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
