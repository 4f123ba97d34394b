"""`brickyard demo`: the wine lab end to end through the public API (the project's main job)."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brickyard.runtime.formats import read_archive, read_jupyter

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "examples" / "wine-lab"
SHARED_DATA = REPO.parent / "shared" / "data" / "wine-quality"
DEMO_BUDGET_SECONDS = 15 * 60


def run_demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "BRICKYARD_", "MLFLOW_"))}
    return subprocess.run([sys.executable, "-m", "brickyard.cli", "demo", "--exit", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


# ---- the lab's files -------------------------------------------------------------------------
def test_built_notebooks_match_their_sources():
    proc = subprocess.run([sys.executable, str(LAB / "pack.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_data_and_attribution_ship_with_the_lab():
    source = (LAB / "data" / "SOURCE.md").read_text()
    assert "CC BY 4.0" in source and "Cortez" in source
    for name in ("winequality-red.csv", "winequality-white.csv"):
        ours = (LAB / "data" / name).read_bytes()
        assert ours.splitlines()[0].count(b";") == 11
        if SHARED_DATA.exists():
            assert hashlib.sha256(ours).digest() == hashlib.sha256((SHARED_DATA / name).read_bytes()).digest()
    rows = sum(len((LAB / "data" / n).read_bytes().splitlines()) - 1 for n in ("winequality-red.csv",
                                                                               "winequality-white.csv"))
    assert rows == 6497


def test_notebooks_cover_the_seed_lab():
    nb = read_jupyter((LAB / "FullExperiment.ipynb").read_bytes(), "FullExperiment")
    text = "\n".join(c.source for c in nb.cells)
    magics = [c.magic for c in nb.cells]
    assert "run" in magics and "sql" in magics and "md" in magics
    for needle in ("dbutils.fs.ls(", "dbutils.fs.mounts()", "%run /Shared/HelperFunctions", "pd.read_csv(",
                   'option("sep", ";")', 'withColumn("is_red", lit(1))', ".union(", ".describe()",
                   "monotonically_increasing_id()", "@udf(", "spark.udf.register(", "CREATE DATABASE",
                   ".toDF(*[c.replace(", ".saveAsTable(", "sns.histplot(", "sns.boxplot(",
                   "mlflow.pyfunc.PythonModel", "infer_signature(", 'log_metric("auc"', "register_model(",
                   'stage="Production"', "models:/{model_name}/production", "SparkTrials(", "autolog(",
                   "metrics.auc DESC", 'stage="Archived"', "USING DELTA LOCATION", "REFRESH TABLE",
                   "spark_udf(", "/api/2.0/serving-endpoints", "/invocations", 'dbutils.widgets.text("max_evals"',
                   "dbutils.notebook.exit("):
        assert needle in text, needle
    helper = read_archive((LAB / "HelperFunctions.dbc").read_bytes(), 1 << 24, 1 << 26)
    assert [e.path for e in helper] == [""]
    helper_text = "\n".join(c.source for c in helper[0].notebook.cells)
    assert "class Helper" in helper_text and "dbutils.secrets.get(" in helper_text
    assert "dbutils.fs.mount(" in helper_text and "def mount_folder" in helper_text


# ---- a failing step ----------------------------------------------------------------------------
def test_a_failing_step_exits_non_zero_naming_it(server):
    proc = run_demo("--host", server.url, "--token", "dapi" + "0" * 32)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED at step 'start the workspace'" in proc.stdout
    assert "[2/" not in proc.stdout  # nothing after the failing step ran


def test_a_used_home_is_refused_at_the_first_step(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "workspace.db").write_text("")
    proc = run_demo("--home", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED at step 'start the workspace'" in proc.stdout and "not empty" in proc.stdout


def test_bad_sweep_size_is_refused():
    proc = run_demo("--max-evals", "0")
    assert proc.returncode == 2 and "--max-evals" in proc.stderr


# ---- the main job ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(DEMO_BUDGET_SECONDS + 300)
def test_the_lab_runs_end_to_end(tmp_path):
    t0 = time.monotonic()
    proc = run_demo("--home", str(tmp_path / "demo"), timeout=DEMO_BUDGET_SECONDS + 240)
    elapsed = time.monotonic() - t0
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert elapsed <= DEMO_BUDGET_SECONDS, f"the demo took {elapsed:.0f} s:\n{out}"
    for n in range(1, 10):
        assert f"[{n}/9]" in out
    assert "UNAVAILABLE" not in out, out
    aucs = re.search(r"AUC: random forest (\d\.\d+), tuned xgboost (\d\.\d+)", out)
    assert aucs and float(aucs[1]) >= 0.85 and float(aucs[2]) >= float(aucs[1]), out
    assert "registry: wine_quality v1 Archived, v2 Production" in out
    assert "6497 rows, all scored" in out
    assert re.search(r"endpoint wine-quality answered \d\.\d{3}, \d\.\d{3}, \d\.\d{3}", out), out
    for label in ("run HTML", "MLflow experiment", "serving endpoint"):
        assert re.search(rf"{label}:\s+http://127\.0\.0\.1:\d+/", out), label
    html = (tmp_path / "demo" / "FullExperiment-run.html").read_text()
    assert "FullExperiment" in html and len(html) > 10_000
