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
    """Run `brickyard demo --exit ARGS`. Past `timeout` it gets SIGTERM (it then stops its workspace and
    everything the workspace started) and the test fails with what it printed and its logs' tails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "BRICKYARD_", "MLFLOW_"))}
    proc = subprocess.Popen([sys.executable, "-m", "brickyard.cli", "demo", "--exit", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        home = Path(args[args.index("--home") + 1]) if "--home" in args else None
        pytest.fail(f"the demo did not finish within {timeout:.0f} s; it printed:\n{out}\n{err[-3000:]}"
                    + (_log_tails(home) if home else ""))
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _log_tails(base: Path, lines: int = 40) -> str:
    """The last lines of the demo workspace's logs (workspace, clusters' drivers, kernels, metastore)."""
    parts = []
    patterns = ("workspace.log", "home/clusters/*/driver.log", "home/clusters/*/runs/*/kernel.log",
                "home/metastore/metastore.log")
    for pattern in patterns:
        for path in sorted(base.glob(pattern))[-4:]:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"\n---- {path.relative_to(base)} (last {len(text)} lines)\n" + "\n".join(text))
    return "".join(parts)


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


def test_a_step_not_done_makes_the_demo_exit_1_naming_it(tmp_path):
    """A lab the workspace could only partly do is not a success: the other steps still run, then the
    demo ends with status 1 and a line naming what was not done. (The steps here stand in for a
    workspace without a Libraries API; the reporting and exit status are the demo's own.)"""
    import io

    from brickyard import demo

    ran = []

    steps = ("start", "secrets", "cluster", "notebooks", "upload", "job", "check", "results")

    class Partial(demo.Demo):
        def library(self) -> None:
            raise demo.Unavailable("the workspace has no Libraries API")

    for name in steps:
        setattr(Partial, name, lambda self, step=name: ran.append(step))

    out = io.StringIO()
    code = Partial(demo.Options(home=tmp_path), out).run_all()
    text = out.getvalue()
    assert code == 1, text
    assert ran == list(steps), text
    assert "UNAVAILABLE: the workspace has no Libraries API" in text
    assert "INCOMPLETE: not done: install the mlflow library on the cluster" in text
    assert "ran end to end" not in text


def test_bad_sweep_size_is_refused():
    proc = run_demo("--max-evals", "0")
    assert proc.returncode == 2 and "--max-evals" in proc.stderr


@pytest.mark.slow
def test_sigterm_stops_the_demo_and_everything_it_started(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "BRICKYARD_", "MLFLOW_"))}
    base = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "brickyard.cli", "demo", "--exit", "--home", str(base)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until the cluster runs: JVMs, the metastore and kernels exist
        lines.append(line)
        if line.startswith("[4/9]"):
            break
    else:
        pytest.fail("".join(lines))
    assert _processes_under(base), "the running cluster should have processes under the demo's home"
    proc.terminate()
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Interrupted"):
            proc.terminate()  # a second SIGTERM during the clean-up does not cut it short
            break
    out = "".join(lines) + proc.stdout.read()  # (the iterator's read-ahead buffer is in the file object)
    proc.wait(timeout=180)
    assert proc.returncode == 130, out
    assert "Interrupted: stopping." in out and "Stopping the workspace" in out
    deadline = time.monotonic() + 30
    while _processes_under(base) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _processes_under(base), _processes_under(base)


def _processes_under(base: Path) -> list[str]:
    """Live processes that run in `base` or name it (clusters, kernels, metastore of that home)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(base) in cmd or cwd.startswith(str(base)):
            found.append(f"{entry.name} (in {cwd}): {cmd[:300]}")
    return found


# ---- the main job ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(DEMO_BUDGET_SECONDS + 300)
def test_the_lab_runs_end_to_end(tmp_path):
    t0 = time.monotonic()
    # The job's own timeout comes first, so a stuck notebook fails the demo naming its command; the
    # subprocess timeout only guards against a hang (the time taken is printed, not asserted).
    proc = run_demo("--home", str(tmp_path / "demo"), "--job-timeout", str(DEMO_BUDGET_SECONDS - 300),
                    timeout=DEMO_BUDGET_SECONDS + 120)
    print(f"the demo took {time.monotonic() - t0:.0f} s (budget {DEMO_BUDGET_SECONDS} s)")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:] + _log_tails(tmp_path / "demo")
    for n in range(1, 10):
        assert f"[{n}/9]" in out
    assert "UNAVAILABLE" not in out and "INCOMPLETE" not in out, out
    # The notebook picks per-user names (the demo runs as admin) and says so in its exit value.
    params = re.search(r"parameters: (\{.*\})", out)
    assert params and "model_name" not in params[1] and "endpoint_name" not in params[1], out
    assert '"model_name": "admin_wine_quality"' in out and '"endpoint_name": "admin-wine-quality"' in out, out
    assert re.search(r"RUNNING \(\d+ s, command \d+ of \d+\)", out), out  # the job's progress
    aucs = re.search(r"AUC: random forest (\d\.\d+), tuned xgboost (\d\.\d+)", out)
    assert aucs and float(aucs[1]) >= 0.85 and float(aucs[2]) >= float(aucs[1]), out
    assert "registry: admin_wine_quality v1 Archived, v2 Production" in out
    assert "6497 rows, all scored" in out
    assert re.search(r"endpoint admin-wine-quality answered \d\.\d{3}, \d\.\d{3}, \d\.\d{3}", out), out
    # The printed URLs: browser pages (checked by the demo with a signed-in web session), then the
    # scoring URL for curl, and the saved HTML.
    host = r"http://127\.0\.0\.1:\d+"
    for label, shape in (("run page", r"/jobs/runs/\d+"), ("MLflow experiment", r"/ml/#/experiments/\d+"),
                         ("serving endpoint", r"/serving/endpoints/admin-wine-quality"),
                         ("scoring URL (POST)", r"/serving-endpoints/admin-wine-quality/invocations")):
        assert re.search(rf"^  {re.escape(label)}:\s+{host}{shape}$", out, re.M), (label, out)
    assert "/api/2.0/jobs/runs/export" not in out
    assert "signed in to the web UI with the token: run page, MLflow experiment, serving endpoint open" in out
    saved = re.search(r"^  run HTML \(saved\):\s+(\S+)$", out, re.M)
    assert saved and Path(saved[1]) == tmp_path / "demo" / "FullExperiment-run.html", out
    html = (tmp_path / "demo" / "FullExperiment-run.html").read_text()
    assert "FullExperiment" in html and len(html) > 10_000
