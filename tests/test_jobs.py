"""Jobs API (2.0/2.1/2.2) through databricks-sdk and raw HTTP, with runs on real Spark clusters."""
from __future__ import annotations

import base64
import io
import time
from datetime import timedelta

import pytest
import requests
from databricks.sdk.errors import InvalidParameterValue, NotFound, OperationFailed, PermissionDenied, Unauthenticated
from databricks.sdk.service import jobs
from databricks.sdk.service.compute import ClusterSpec
from databricks.sdk.service.workspace import ImportFormat, Language

from conftest import ThreadedServer, make_settings

NEW_CLUSTER = dict(spark_version="17.3.x-cpu-ml-scala2.13", node_type_id="local.small", num_workers=0,
                   spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[2]"},
                   custom_tags={"ResourceClass": "SingleNode"})
WAIT = timedelta(minutes=5)


def nb_task(key: str, path: str, cluster: str | None = None, **kw) -> jobs.Task:
    compute = {"existing_cluster_id": cluster} if cluster else {"new_cluster": ClusterSpec.from_dict(NEW_CLUSTER)}
    return jobs.Task(task_key=key, notebook_task=jobs.NotebookTask(notebook_path=path), **compute, **kw)


def py_task(key: str, file: str, cluster: str, params: list[str] | None = None, **kw) -> jobs.Task:
    return jobs.Task(task_key=key, existing_cluster_id=cluster,
                     spark_python_task=jobs.SparkPythonTask(python_file=file, parameters=params or []), **kw)


def put_dbfs(w, path: str, text: str) -> str:
    w.dbfs.upload(path, io.BytesIO(text.encode()), overwrite=True)
    return "dbfs:" + path


def wait_run(w, run_id: int) -> jobs.Run:
    return w.jobs.wait_get_run_job_terminated_or_skipped(run_id, timeout=WAIT)


def wait_state(w, run_id: int, states: tuple, timeout: float = 120) -> jobs.Run:
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = w.jobs.get_run(run_id)
        if run.state.life_cycle_state.value in states:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} never reached {states}: {run.state}")


# ---- settings, validation, permissions (no Spark) ------------------------------------------

def test_job_crud(server, w, unique):
    name = unique("job")
    created = w.jobs.create(name=name, tasks=[nb_task("a", "/Shared/x")], max_concurrent_runs=2,
                            tags={"team": "lab"},
                            parameters=[jobs.JobParameterDefinition(name="alpha", default="0.5")])
    job = w.jobs.get(created.job_id)
    assert job.creator_user_name == "admin" and job.created_time > 0
    assert job.settings.name == name and job.settings.max_concurrent_runs == 2
    assert job.settings.tasks[0].notebook_task.notebook_path == "/Shared/x"
    assert job.settings.tasks[0].new_cluster.spark_version == NEW_CLUSTER["spark_version"]
    assert job.settings.parameters[0].default == "0.5"
    listed = [j for j in w.jobs.list(name=name)]
    assert [j.job_id for j in listed] == [created.job_id]
    assert not listed[0].settings.tasks  # tasks only with expand_tasks
    assert [j for j in w.jobs.list(name=name, expand_tasks=True)][0].settings.tasks[0].task_key == "a"
    # update merges tasks by key and removes fields; reset replaces everything
    w.jobs.update(created.job_id, new_settings=jobs.JobSettings(
        name=name + "-2", tasks=[nb_task("b", "/Shared/y", depends_on=[jobs.TaskDependency("a")])]),
        fields_to_remove=["tags"])
    job = w.jobs.get(created.job_id)
    assert job.settings.name == name + "-2" and [t.task_key for t in job.settings.tasks] == ["a", "b"]
    assert not job.settings.tags
    w.jobs.update(created.job_id, fields_to_remove=["tasks/b"])
    assert [t.task_key for t in w.jobs.get(created.job_id).settings.tasks] == ["a"]
    w.jobs.reset(created.job_id, new_settings=jobs.JobSettings(name=name + "-3", tasks=[nb_task("c", "/Shared/z")]))
    job = w.jobs.get(created.job_id)
    assert job.settings.name == name + "-3" and [t.task_key for t in job.settings.tasks] == ["c"]
    assert job.settings.max_concurrent_runs == 1 and not job.settings.parameters
    # paging through the SDK iterator
    ids = [w.jobs.create(name=f"{name}-p{i}").job_id for i in range(3)]
    seen = [j.job_id for j in w.jobs.list(limit=1)]
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    w.jobs.delete(created.job_id)
    with pytest.raises(NotFound, match="does not exist"):
        w.jobs.get(created.job_id)
    for i in ids:
        w.jobs.delete(i)


@pytest.mark.parametrize("settings,field", [
    ({"tasks": [{"notebook_task": {"notebook_path": "/a"}, "new_cluster": NEW_CLUSTER}]}, "task_key"),
    ({"tasks": [{"task_key": "a", "new_cluster": NEW_CLUSTER}]}, "task type"),
    ({"tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"},
                 "spark_python_task": {"python_file": "dbfs:/a.py"}, "new_cluster": NEW_CLUSTER}]}, "task type"),
    ({"tasks": [{"task_key": "a", "spark_jar_task": {"main_class_name": "A"}, "new_cluster": NEW_CLUSTER}]},
     "spark_jar_task"),
    ({"tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "relative"}, "new_cluster": NEW_CLUSTER}]},
     "notebook_path"),
    ({"tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"}}]}, "existing_cluster_id"),
    ({"tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"},
                 "existing_cluster_id": "0000-000000-nothere0"}]}, "tasks[0].existing_cluster_id"),
    ({"tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"},
                 "new_cluster": {**NEW_CLUSTER, "node_type_id": "huge.box"}}]}, "tasks[0].new_cluster"),
    ({"tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"}, "new_cluster": NEW_CLUSTER,
                 "depends_on": [{"task_key": "zz"}]}]}, "depends_on"),
    ({"tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"}, "new_cluster": NEW_CLUSTER,
                 "depends_on": [{"task_key": "b"}]},
                {"task_key": "b", "notebook_task": {"notebook_path": "/a"}, "new_cluster": NEW_CLUSTER,
                 "depends_on": [{"task_key": "a"}]}]}, "cycle"),
    ({"tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"}, "new_cluster": NEW_CLUSTER},
                {"task_key": "a", "notebook_task": {"notebook_path": "/b"}, "new_cluster": NEW_CLUSTER}]},
     "duplicated"),
    ({"tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"}, "new_cluster": NEW_CLUSTER,
                 "max_retries": -5}]}, "max_retries"),
    ({"tasks": [{"task_key": "a", "notebook_task": {"notebook_path": "/a"}, "job_cluster_key": "nope"}]},
     "job_cluster_key"),
    ({"schedule": {"quartz_cron_expression": "0 * * * *", "timezone_id": "UTC"}}, "schedule"),
    ({"schedule": {"quartz_cron_expression": "0 0 * * * ?", "timezone_id": "Mars/Olympus"}}, "timezone_id"),
    ({"schedule": {"quartz_cron_expression": "0 0 * * * ?", "timezone_id": "UTC", "pause_status": "NO"}},
     "pause_status"),
    ({"max_concurrent_runs": "many"}, "max_concurrent_runs"),
    ({"parameters": [{"name": "x"}]}, "parameters[0].default"),
])
def test_invalid_settings_name_the_field(server, unique, settings, field):
    name = unique("bad")
    r = server.api("POST", "/api/2.2/jobs/create", json={"name": name, **settings})
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE" and field in r.json()["message"]
    listed = server.api("GET", "/api/2.2/jobs/list", params={"name": name}).json()
    assert not listed.get("jobs")  # nothing half-written


def test_errors_404_403_401(server, w, unique):
    job_id = w.jobs.create(name=unique("own"), tasks=[nb_task("a", "/Shared/x")]).job_id
    with pytest.raises(NotFound):
        w.jobs.get(1)
    with pytest.raises(NotFound):
        w.jobs.get_run(1)
    with pytest.raises(NotFound):
        w.jobs.get_run_output(1)
    r = server.api("GET", "/api/2.1/jobs/get", params={"job_id": 12345})
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    r = server.api("GET", "/api/2.1/jobs/runs/get", params={"run_id": "abc"})
    assert r.status_code == 400 and "run_id" in r.json()["message"]
    r = server.api("POST", "/api/2.2/jobs/delete", json={})
    assert r.status_code == 400 and "job_id" in r.json()["message"]
    _, token = server.new_user(unique("bob") + "@example.com")
    bob = server.client(token)
    for call in (lambda: bob.jobs.get(job_id), lambda: bob.jobs.run_now(job_id),
                 lambda: bob.jobs.delete(job_id), lambda: bob.jobs.reset(job_id, jobs.JobSettings(name="x")),
                 lambda: list(bob.jobs.list_runs(job_id=job_id))):
        with pytest.raises(PermissionDenied):
            call()
    assert job_id not in [j.job_id for j in bob.jobs.list()]
    bobs = bob.jobs.create(name=unique("bobs")).job_id
    assert w.jobs.get(bobs).creator_user_name.startswith("bob")  # admins see every job
    r = server.api("GET", "/api/2.2/jobs/list", token="dapi" + "9" * 32)
    assert r.status_code == 401
    with pytest.raises(Unauthenticated):
        server.client("dapi" + "9" * 32).jobs.get(job_id)
    r = server.api("POST", "/api/2.2/jobs/run-now", json={"job_id": bobs})
    assert r.status_code == 400 and "no tasks" in r.json()["message"]
    w.jobs.delete(job_id)
    w.jobs.delete(bobs)


def test_api_20_single_task_shape(server, unique):
    body = {"name": unique("legacy"), "new_cluster": NEW_CLUSTER, "max_retries": 1,
            "notebook_task": {"notebook_path": "/Shared/legacy", "base_parameters": {"a": "1"}}}
    job_id = server.api("POST", "/api/2.0/jobs/create", json=body).json()["job_id"]
    flat = server.api("GET", "/api/2.0/jobs/get", params={"job_id": job_id}).json()["settings"]
    assert flat["notebook_task"]["notebook_path"] == "/Shared/legacy" and flat["max_retries"] == 1
    assert "tasks" not in flat and flat["new_cluster"]["num_workers"] == 0
    tasks = server.api("GET", "/api/2.1/jobs/get", params={"job_id": job_id}).json()["settings"]["tasks"]
    assert tasks[0]["notebook_task"]["base_parameters"] == {"a": "1"}
    listed = server.api("GET", "/api/2.0/jobs/list").json()["jobs"]
    assert any(j["job_id"] == job_id and j["settings"]["name"] == body["name"] for j in listed)
    r = server.api("POST", "/api/2.0/jobs/update", json={"job_id": job_id, "new_settings": {"max_retries": 3}})
    assert r.status_code == 200, r.text
    flat = server.api("GET", "/api/2.0/jobs/get", params={"job_id": job_id}).json()["settings"]
    assert flat["max_retries"] == 3 and flat["notebook_task"]["notebook_path"] == "/Shared/legacy"
    assert server.api("POST", "/api/2.0/jobs/delete", json={"job_id": job_id}).status_code == 200


# ---- runs on a real cluster -----------------------------------------------------------------

PY_OK = """
import json, os, sys
from pyspark.sql import SparkSession
from databricks.sdk import WorkspaceClient
spark = SparkSession.builder.getOrCreate()
total = spark.range(10).groupBy().sum("id").collect()[0][0]
me = WorkspaceClient().current_user.me().user_name  # the run user's own token, from the environment
print(json.dumps({"argv": sys.argv[1:], "total": total, "me": me,
                  "secret_env": [k for k in os.environ if "MASTER_KEY" in k or "BOOTSTRAP" in k]}))
"""


@pytest.mark.slow
def test_spark_python_task_submit_and_output(server, w, cluster_id, unique):
    file = put_dbfs(w, f"/FileStore/jobs/{unique('ok')}.py", PY_OK)
    waiter = w.jobs.submit(run_name="py-ok", tasks=[jobs.SubmitTask.from_dict(
        py_task("main", file, cluster_id, ["--alpha", "{{job.run_id}}"]).as_dict())])
    run = waiter.result(timeout=WAIT)
    assert run.state.life_cycle_state == jobs.RunLifeCycleState.TERMINATED
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state
    assert run.run_type == jobs.RunType.SUBMIT_RUN and run.creator_user_name == "admin"
    assert run.run_page_url.startswith(server.url) and str(run.run_id) in run.run_page_url
    task = run.tasks[0]
    assert task.run_id != run.run_id and task.cluster_instance.cluster_id == cluster_id
    assert task.start_time and task.end_time >= task.start_time and task.execution_duration > 0
    out = w.jobs.get_run_output(task.run_id)
    assert '"total": 45' in out.logs and f'"argv": ["--alpha", "{run.run_id}"]' in out.logs
    assert '"me": "admin"' in out.logs and '"secret_env": []' in out.logs
    assert out.metadata.run_id == task.run_id and not out.error
    listed = [r.run_id for r in w.jobs.list_runs(run_type=jobs.RunType.SUBMIT_RUN, completed_only=True)]
    assert run.run_id in listed
    # the run token is revoked when the run ends
    assert not [t for t in w.tokens.list() if "job run" in (t.comment or "")]
    w.jobs.delete_run(run.run_id)
    with pytest.raises(NotFound):
        w.jobs.get_run(run.run_id)


@pytest.mark.slow
def test_failing_python_task(w, cluster_id, unique):
    file = put_dbfs(w, f"/FileStore/jobs/{unique('bad')}.py",
                    "def f():\n    raise ValueError('boom from the job')\nprint('before')\nf()\n")
    job_id = w.jobs.create(name=unique("failing"), tasks=[py_task("t", file, cluster_id)]).job_id
    run = w.jobs.run_now_and_wait(job_id, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert "boom from the job" in run.state.state_message
    out = w.jobs.get_run_output(run.tasks[0].run_id)
    assert out.error == "ValueError: boom from the job"
    assert out.error_trace.startswith("Traceback") and "in f" in out.error_trace
    assert "before" in out.logs
    # a missing file fails the task with a clear error, not the supervisor
    w.jobs.reset(job_id, jobs.JobSettings(name="x", tasks=[py_task("t", "dbfs:/nothere/x.py", cluster_id)]))
    run = w.jobs.run_now_and_wait(job_id, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert "nothere" in w.jobs.get_run_output(run.tasks[0].run_id).error
    w.jobs.delete(job_id)


SLOW_PY = """
import time
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
print("started", flush=True)
spark.sparkContext.parallelize(range(60), 2).map(lambda x: time.sleep(1) or x).count()
"""


@pytest.mark.slow
def test_cancel_and_timeout(server, w, cluster_id, unique):
    file = put_dbfs(w, f"/FileStore/jobs/{unique('slow')}.py", SLOW_PY)
    job_id = w.jobs.create(name=unique("slow"), tasks=[py_task("t", file, cluster_id)]).job_id
    run_id = w.jobs.run_now(job_id).run_id
    wait_state(w, run_id, ("RUNNING",))
    time.sleep(3)
    run = w.jobs.cancel_run(run_id).result(timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.CANCELED
    assert run.state.user_cancelled_or_timedout and run.tasks[0].state.result_state == jobs.RunResultState.CANCELED
    # the task's Spark job was cancelled too, not left running on the shared driver
    ui = server.api("GET", "/api/2.1/clusters/get", params={"cluster_id": cluster_id}).json()["spark_ui_url"]
    app = requests.get(f"{ui}/api/v1/applications", timeout=10).json()[0]["id"]
    spark_jobs = requests.get(f"{ui}/api/v1/applications/{app}/jobs", timeout=10).json()
    ours = [j for j in spark_jobs if j.get("jobGroup") == f"job-run-{run.tasks[0].run_id}"]
    assert ours and all(j["status"] != "RUNNING" for j in ours), ours
    # timeout_seconds on the task
    w.jobs.reset(job_id, jobs.JobSettings(name="t", tasks=[py_task("t", file, cluster_id, timeout_seconds=8)]))
    started = time.time()
    run = w.jobs.run_now_and_wait(job_id, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.TIMEDOUT and time.time() - started < 45
    assert "timed out" in w.jobs.get_run_output(run.tasks[0].run_id).error
    # timeout_seconds on the job
    w.jobs.reset(job_id, jobs.JobSettings(name="t", timeout_seconds=8, tasks=[py_task("t", file, cluster_id)]))
    run = w.jobs.run_now_and_wait(job_id, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.TIMEDOUT and run.state.user_cancelled_or_timedout
    w.jobs.delete(job_id)


FLAKY_PY = """
import sys
from databricks.sdk import WorkspaceClient
w = WorkspaceClient()
marker = sys.argv[1]
try:
    w.dbfs.get_status(marker)
except Exception:
    w.dbfs.put(marker, contents="", overwrite=True)
    raise RuntimeError("first attempt fails")
print("second attempt succeeds")
"""


@pytest.mark.slow
def test_retries(w, cluster_id, unique):
    file = put_dbfs(w, f"/FileStore/jobs/{unique('flaky')}.py", FLAKY_PY)
    marker = f"/FileStore/jobs/{unique('marker')}"
    job_id = w.jobs.create(name=unique("flaky"), tasks=[py_task(
        "t", file, cluster_id, [marker], max_retries=2, min_retry_interval_millis=500)]).job_id
    run = w.jobs.run_now_and_wait(job_id, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state
    assert run.tasks[0].attempt_number == 1
    assert "second attempt succeeds" in w.jobs.get_run_output(run.tasks[0].run_id).logs
    first = [r for r in w.jobs.list_runs(job_id=job_id, expand_tasks=True)][0]
    assert first.run_id == run.run_id
    w.jobs.delete(job_id)


@pytest.mark.slow
def test_depends_on(w, cluster_id, unique):
    ok = put_dbfs(w, f"/FileStore/jobs/{unique('ok')}.py", "print('ok')\n")
    bad = put_dbfs(w, f"/FileStore/jobs/{unique('bad')}.py", "raise SystemExit(3)\n")
    tasks = [py_task("first", ok, cluster_id),
             py_task("second", ok, cluster_id, depends_on=[jobs.TaskDependency("first")])]
    run = w.jobs.submit(run_name="dag", tasks=[jobs.SubmitTask.from_dict(t.as_dict()) for t in tasks]).result(
        timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.SUCCESS
    by_key = {t.task_key: t for t in run.tasks}
    assert by_key["second"].start_time >= by_key["first"].end_time
    with pytest.raises(InvalidParameterValue, match="multiple tasks"):
        w.jobs.get_run_output(run.run_id)
    tasks[0] = py_task("first", bad, cluster_id)
    run = w.jobs.submit(run_name="dag", tasks=[jobs.SubmitTask.from_dict(t.as_dict()) for t in tasks]).result(
        timeout=WAIT)
    by_key = {t.task_key: t for t in run.tasks}
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert by_key["first"].state.result_state == jobs.RunResultState.FAILED
    assert by_key["second"].state.life_cycle_state == jobs.RunLifeCycleState.SKIPPED
    assert by_key["second"].state.result_state == jobs.RunResultState.UPSTREAM_FAILED
    assert "exited with code 3" in w.jobs.get_run_output(by_key["first"].run_id).error


NOTEBOOK = """# Databricks notebook source
dbutils.widgets.text("x", "default-x")
x = dbutils.widgets.get("x")
print("x is", x)

# COMMAND ----------

display(spark.range(3).toDF("n"))

# COMMAND ----------

dbutils.notebook.exit(f"result-{x}-{dbutils.widgets.get('y')}")
"""
FAILING_NOTEBOOK = """# Databricks notebook source
print("cell one ran")

# COMMAND ----------

raise RuntimeError("notebook says no")
"""


def import_notebook(w, path: str, source: str) -> str:
    w.workspace.mkdirs(path.rsplit("/", 1)[0])
    w.workspace.import_(path, content=base64.b64encode(source.encode()).decode(), format=ImportFormat.SOURCE,
                        language=Language.PYTHON, overwrite=True)
    return path


@pytest.mark.slow
def test_notebook_job_parameters_exit_value_and_export(server, w, cluster_id, unique):
    path = import_notebook(w, f"/Shared/jobs/{unique('nb')}", NOTEBOOK)
    task = nb_task("nb", path, cluster_id)
    task.notebook_task.base_parameters = {"x": "base", "y": "why"}
    job_id = w.jobs.create(name=unique("nbjob"), tasks=[task]).job_id
    run = w.jobs.run_now_and_wait(job_id, notebook_params={"x": "override"}, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state
    assert run.overriding_parameters.notebook_params == {"x": "override"}
    out = w.jobs.get_run_output(run.tasks[0].run_id)
    assert out.notebook_output.result == "result-override-why" and not out.notebook_output.truncated
    # the executed copy with its outputs, exported as HTML
    views = w.jobs.export_run(run.tasks[0].run_id, views_to_export=jobs.ViewsToExport.ALL).views
    assert len(views) == 1 and views[0].type == jobs.ViewType.NOTEBOOK
    assert "x is override" in views[0].content and "<html" in views[0].content.lower()
    assert w.jobs.export_run(run.tasks[0].run_id, views_to_export=jobs.ViewsToExport.DASHBOARDS).views == []
    # a failing cell fails the run, with the error and its trace
    import_notebook(w, path, FAILING_NOTEBOOK)
    run = w.jobs.run_now_and_wait(job_id, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.FAILED
    out = w.jobs.get_run_output(run.tasks[0].run_id)
    assert "notebook says no" in out.error and "RuntimeError" in (out.error_trace or "")
    assert not out.notebook_output.result
    html = w.jobs.export_run(run.tasks[0].run_id).views[0].content
    assert "cell one ran" in html and "notebook says no" in html
    # a missing notebook fails the task, not the run supervisor
    w.jobs.reset(job_id, jobs.JobSettings(name="x", tasks=[nb_task("nb", "/Shared/jobs/none", cluster_id)]))
    run = w.jobs.run_now_and_wait(job_id, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert "/Shared/jobs/none" in w.jobs.get_run_output(run.run_id).error
    w.jobs.delete(job_id)


PROGRESS_NOTEBOOK = """# Databricks notebook source
print("one")

# COMMAND ----------

# MAGIC %md a markdown cell

# COMMAND ----------

import os, time
deadline = time.time() + 60
while time.time() < deadline and not os.path.exists("/dbfs/FileStore/jobs/" + dbutils.widgets.get("go")):
    time.sleep(0.5)

# COMMAND ----------

print("three")
"""


@pytest.mark.slow
def test_running_notebook_task_says_which_command_runs(w, cluster_id, unique):
    path = import_notebook(w, f"/Shared/jobs/{unique('progress')}", PROGRESS_NOTEBOOK)
    go = unique("go")
    task = jobs.SubmitTask(task_key="nb", existing_cluster_id=cluster_id, notebook_task=jobs.NotebookTask(
        notebook_path=path, base_parameters={"go": go}), timeout_seconds=120)
    run_id = w.jobs.submit(run_name="progress", tasks=[task]).run_id
    deadline, seen = time.time() + 90, None
    while time.time() < deadline:
        seen = w.jobs.get_run(run_id).tasks[0].state.state_message
        if seen == "Running command 3 of 4":  # a %md cell is a command too (Cmd 2), as on Databricks
            break
        time.sleep(0.5)
    assert seen == "Running command 3 of 4"
    put_dbfs(w, f"/FileStore/jobs/{go}", "")
    run = w.jobs.wait_get_run_job_terminated_or_skipped(run_id, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state
    assert run.tasks[0].state.state_message == ""


@pytest.mark.slow
def test_new_cluster_and_job_cluster_are_terminated(w, unique):
    file = put_dbfs(w, f"/FileStore/jobs/{unique('master')}.py",
                    "from pyspark.sql import SparkSession\n"
                    "print('master', SparkSession.builder.getOrCreate().sparkContext.master)\n")
    own = jobs.Task(task_key="own", new_cluster=ClusterSpec.from_dict(NEW_CLUSTER),
                    spark_python_task=jobs.SparkPythonTask(python_file=file))
    shared = jobs.Task(task_key="shared", job_cluster_key="jc", depends_on=[jobs.TaskDependency("own")],
                       spark_python_task=jobs.SparkPythonTask(python_file=file))
    job_id = w.jobs.create(name=unique("jobcluster"), tasks=[own, shared], job_clusters=[
        jobs.JobCluster(job_cluster_key="jc", new_cluster=ClusterSpec.from_dict(NEW_CLUSTER))]).job_id
    run = w.jobs.run_now_and_wait(job_id, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state
    cluster_ids = {t.task_key: t.cluster_instance.cluster_id for t in run.tasks}
    assert len(set(cluster_ids.values())) == 2
    for t in run.tasks:
        assert "master local[" in w.jobs.get_run_output(t.run_id).logs
    deadline = time.time() + 60
    for cid in cluster_ids.values():
        details = w.clusters.get(cid)
        while details.state.value != "TERMINATED" and time.time() < deadline:
            time.sleep(0.5)
            details = w.clusters.get(cid)
        assert details.state.value == "TERMINATED" and details.cluster_source.value == "JOB"
        assert details.termination_reason.code.value == "JOB_FINISHED"
        assert f"job-{job_id}-run-{run.run_id}" in details.cluster_name
    w.jobs.delete(job_id)


@pytest.mark.slow
def test_schedule_max_concurrent_runs_and_queue(w, cluster_id, unique):
    file = put_dbfs(w, f"/FileStore/jobs/{unique('nap')}.py", "import time\ntime.sleep(4)\n")
    schedule = jobs.CronSchedule(quartz_cron_expression="*/2 * * * * ?", timezone_id="Europe/Paris",
                                 pause_status=jobs.PauseStatus.PAUSED)
    job_id = w.jobs.create(name=unique("cron"), schedule=schedule, tasks=[py_task("t", file, cluster_id)]).job_id
    time.sleep(3)
    assert not list(w.jobs.list_runs(job_id=job_id))  # paused: nothing fires
    schedule.pause_status = jobs.PauseStatus.UNPAUSED
    w.jobs.update(job_id, new_settings=jobs.JobSettings(schedule=schedule))
    deadline = time.time() + 60
    while time.time() < deadline and len(list(w.jobs.list_runs(job_id=job_id))) < 3:
        time.sleep(0.5)
    schedule.pause_status = jobs.PauseStatus.PAUSED
    w.jobs.update(job_id, new_settings=jobs.JobSettings(schedule=schedule))
    runs = list(w.jobs.list_runs(job_id=job_id))
    assert len(runs) >= 3 and all(r.trigger == jobs.TriggerType.PERIODIC for r in runs)
    assert runs[0].schedule.quartz_cron_expression == "*/2 * * * * ?"
    # one run at a time (max_concurrent_runs=1): the fires during a run were skipped
    states = {r.state.life_cycle_state for r in runs}
    assert jobs.RunLifeCycleState.SKIPPED in states, states
    skipped = next(r for r in runs if r.state.life_cycle_state == jobs.RunLifeCycleState.SKIPPED)
    assert "maximum concurrent runs" in skipped.state.state_message
    for r in runs:
        if r.state.life_cycle_state not in (jobs.RunLifeCycleState.SKIPPED, jobs.RunLifeCycleState.TERMINATED):
            wait_run(w, r.run_id)
    time.sleep(3)
    assert len(list(w.jobs.list_runs(job_id=job_id))) == len(runs)  # paused again
    # with the queue enabled, an extra run waits instead
    w.jobs.update(job_id, new_settings=jobs.JobSettings(queue=jobs.QueueSettings(enabled=True)))
    first = w.jobs.run_now(job_id).run_id
    second = w.jobs.run_now(job_id).run_id
    assert w.jobs.get_run(second).state.life_cycle_state == jobs.RunLifeCycleState.QUEUED
    assert [r.run_id for r in w.jobs.list_runs(job_id=job_id, active_only=True)] == [second, first]
    done = wait_run(w, second)
    assert done.state.result_state == jobs.RunResultState.SUCCESS and done.queue_duration > 0
    assert wait_run(w, first).end_time <= done.tasks[0].start_time + 1000
    # cancel-all ends queued and running runs
    first, second = w.jobs.run_now(job_id).run_id, w.jobs.run_now(job_id).run_id
    w.jobs.cancel_all_runs(job_id=job_id)
    for run_id in (first, second):
        assert wait_run(w, run_id).state.result_state == jobs.RunResultState.CANCELED
    w.jobs.delete(job_id)


@pytest.mark.slow
def test_restart_marks_active_runs_internal_error(tmp_path):
    home = tmp_path / "home"
    srv = ThreadedServer(make_settings(home))
    srv.start()
    try:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.core import Config

        def client(settings):
            return WorkspaceClient(config=Config(host=f"http://127.0.0.1:{settings.port}", auth_type="pat",
                                                 token=settings.bootstrap_token, retry_timeout_seconds=20))
        w = client(srv.settings)
        file = put_dbfs(w, "/FileStore/jobs/long.py", "import time\nprint('working', flush=True)\ntime.sleep(300)\n")
        run_id = w.jobs.submit(run_name="long", tasks=[jobs.SubmitTask(
            task_key="t", new_cluster=ClusterSpec.from_dict(NEW_CLUSTER),
            spark_python_task=jobs.SparkPythonTask(python_file=file))]).run_id
        run = wait_state(w, run_id, ("RUNNING",), timeout=180)
        assert run.tasks[0].state.life_cycle_state == jobs.RunLifeCycleState.RUNNING
    finally:
        srv.stop()
    srv = ThreadedServer(make_settings(home))
    srv.start()
    try:
        w = client(srv.settings)
        run = w.jobs.get_run(run_id)
        assert run.state.life_cycle_state == jobs.RunLifeCycleState.INTERNAL_ERROR
        assert "restarted" in run.state.state_message
        assert run.tasks[0].state.life_cycle_state == jobs.RunLifeCycleState.INTERNAL_ERROR
        with pytest.raises(OperationFailed, match="INTERNAL_ERROR"):
            w.jobs.wait_get_run_job_terminated_or_skipped(run_id, timeout=timedelta(seconds=30))
        assert not [t for t in w.tokens.list() if "job run" in (t.comment or "")]
    finally:
        srv.stop()


@pytest.mark.slow
def test_workspace_file_job_parameters_and_run_permissions(server, w, cluster_id, unique):
    folder = f"/Users/admin/{unique('files')}"
    w.workspace.mkdirs(folder)
    w.workspace.upload(f"{folder}/echo.py", io.BytesIO(b"import sys\nprint('echo', *sys.argv[1:])\n"))
    task = py_task("t", f"/Workspace{folder}/echo.py", cluster_id,
                   ["{{job.parameters.lr}}", "{{task.name}}", "{{job.id}}"])
    job_id = w.jobs.create(name=unique("params"), tasks=[task],
                           parameters=[jobs.JobParameterDefinition(name="lr", default="0.1")]).job_id
    run = w.jobs.run_now_and_wait(job_id, job_parameters={"lr": "0.5"}, timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state
    assert f"echo 0.5 t {job_id}" in w.jobs.get_run_output(run.tasks[0].run_id).logs
    assert [(p.name, p.default, p.value) for p in run.job_parameters] == [("lr", "0.1", "0.5")]
    # python_params replace the task's parameters
    run = w.jobs.run_now_and_wait(job_id, python_params=["plain"], timeout=WAIT)
    assert "echo plain" in w.jobs.get_run_output(run.run_id).logs  # a one-task run's own id works too
    # the legacy 2.0 shape of a one-task run
    legacy = server.api("GET", "/api/2.0/jobs/runs/get", params={"run_id": run.run_id}).json()
    assert legacy["task"]["spark_python_task"]["parameters"] == ["plain"]
    assert legacy["cluster_instance"]["cluster_id"] == cluster_id
    # other users see none of it
    _, token = server.new_user(unique("eve") + "@example.com")
    eve = server.client(token)
    for call in (lambda: eve.jobs.get_run(run.run_id), lambda: eve.jobs.get_run_output(run.tasks[0].run_id),
                 lambda: eve.jobs.cancel_run(run.run_id), lambda: eve.jobs.delete_run(run.run_id)):
        with pytest.raises(PermissionDenied):
            call()
    assert run.run_id not in [r.run_id for r in eve.jobs.list_runs()]
    # a run of a file eve may not read fails with a clear error
    eve_run = eve.jobs.submit(run_name="peek", tasks=[jobs.SubmitTask.from_dict(task.as_dict())]).result(
        timeout=WAIT)
    assert eve_run.state.result_state == jobs.RunResultState.FAILED
    assert "permission" in eve.jobs.get_run_output(eve_run.run_id).error
    w.jobs.delete(job_id)


@pytest.mark.slow
def test_task_libraries_are_installed_on_the_cluster(w, cluster_id, unique):
    from databricks.sdk.service.compute import Library, PythonPyPiLibrary

    code = ("import pyjokes\nfrom pyspark.sql import SparkSession\n"
            "sc = SparkSession.builder.getOrCreate().sparkContext\n"
            "print('on workers:', sc.parallelize([0], 1).map(lambda _: __import__('pyjokes').__name__).collect())\n")
    file = put_dbfs(w, f"/FileStore/jobs/{unique('libs')}.py", code)
    task = py_task("t", file, cluster_id, libraries=[Library(pypi=PythonPyPiLibrary(package="pyjokes"))])
    run = w.jobs.submit(run_name="with-libs", tasks=[jobs.SubmitTask.from_dict(task.as_dict())]).result(timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state
    assert "on workers: ['pyjokes']" in w.jobs.get_run_output(run.tasks[0].run_id).logs
    statuses = {s.library.pypi.package: s.status.value for s in w.libraries.cluster_status(cluster_id)
                if s.library.pypi}
    assert statuses.get("pyjokes") == "INSTALLED"
    bad = py_task("t", file, cluster_id,
                  libraries=[Library(pypi=PythonPyPiLibrary(package="brickyard-no-such-package-xyz"))])
    run = w.jobs.submit(run_name="bad-libs", tasks=[jobs.SubmitTask.from_dict(bad.as_dict())]).result(timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.FAILED
    assert "Library installation failed" in run.state.state_message


# ---- task values and widgets in SQL cells ----------------------------------------------------
PRODUCER = """# Databricks notebook source
dbutils.jobs.taskValues.set(key="count", value=42)
dbutils.jobs.taskValues.set("meta", {"a": [1, 2], "ok": True})
dbutils.jobs.taskValues.set("food", "beans")
dbutils.jobs.taskValues.set("food", "more beans")
try:
    dbutils.jobs.taskValues.set("bad", {1, 2})
except TypeError as e:
    print("not JSON:", type(e).__name__)

# COMMAND ----------

dbutils.notebook.exit(str(dbutils.jobs.taskValues.get("producer", "count")))
"""
CONSUMER = """# Databricks notebook source
import json
tv = dbutils.jobs.taskValues
out = {"count": tv.get(taskKey="producer", key="count", default=0, debugValue=-1),
       "meta": tv.get("producer", "meta"),
       "missing": tv.get("producer", "nope", default="dflt"),
       "food_param": dbutils.widgets.get("food"),
       "meta_param": dbutils.widgets.get("meta")}
for task_key, key in (("producer", "nope"), ("nosuchtask", "count")):
    try:
        tv.get(task_key, key)
        out[task_key + "/" + key] = "no error"
    except ValueError as e:
        out[task_key + "/" + key] = str(e)
dbutils.notebook.exit(json.dumps(out))
"""


@pytest.mark.slow
def test_task_values_pass_between_tasks(server, w, cluster_id, unique):
    import json

    producer = import_notebook(w, f"/Shared/jobs/{unique('producer')}", PRODUCER)
    consumer = import_notebook(w, f"/Shared/jobs/{unique('consumer')}", CONSUMER)
    after = [jobs.TaskDependency("producer")]
    uses = nb_task("consumer", consumer, cluster_id, depends_on=after)
    uses.notebook_task.base_parameters = {"food": "{{tasks.producer.values.food}}",
                                          "meta": "{{ tasks.producer.values.meta }}"}
    broken = nb_task("broken", consumer, cluster_id, depends_on=after)
    broken.notebook_task.base_parameters = {"food": "{{tasks.producer.values.never_set}}"}
    job_id = w.jobs.create(name=unique("taskvalues"), tasks=[nb_task("producer", producer, cluster_id), uses,
                                                             broken]).job_id
    run = w.jobs.run_now_and_wait(job_id, timeout=WAIT)
    by_key = {t.task_key: t for t in run.tasks}
    assert by_key["producer"].state.result_state == jobs.RunResultState.SUCCESS, by_key["producer"].state
    assert by_key["consumer"].state.result_state == jobs.RunResultState.SUCCESS, by_key["consumer"].state
    assert w.jobs.get_run_output(by_key["producer"].run_id).notebook_output.result == "42"
    out = json.loads(w.jobs.get_run_output(by_key["consumer"].run_id).notebook_output.result)
    assert out["count"] == 42 and out["meta"] == {"a": [1, 2], "ok": True} and out["missing"] == "dflt"
    # {{tasks.<task>.values.<key>}} in parameters: strings as they are, other values as JSON; the latest set wins
    assert out["food_param"] == "more beans" and json.loads(out["meta_param"]) == {"a": [1, 2], "ok": True}
    assert "did not set the task value 'nope'" in out["producer/nope"]
    assert "Task 'nosuchtask' does not exist" in out["nosuchtask/count"]
    assert by_key["consumer"].notebook_task.base_parameters["food"] == "more beans"  # runs/get shows them filled in
    # a reference to a value nobody set fails that task before it runs
    assert by_key["broken"].state.result_state == jobs.RunResultState.FAILED
    assert "tasks.producer.values.never_set" in by_key["broken"].state.state_message
    assert run.state.result_state == jobs.RunResultState.FAILED
    # the producer's non-JSON value was refused in the notebook, not stored
    html = w.jobs.export_run(by_key["producer"].run_id).views[0].content
    assert "not JSON: TypeError" in html
    get = "/api/2.0/brickyard/jobs/task-values/get"
    got = server.api("GET", get, params={"task_run_id": by_key["consumer"].run_id, "task_key": "producer",
                                         "key": "bad"})
    assert got.status_code == 200 and got.json() == {}
    got = server.api("GET", get, params={"task_run_id": by_key["consumer"].run_id, "task_key": "producer",
                                         "key": "count"})
    assert got.json() == {"value": "42"}
    # only a running task sets values; values are JSON of at most 48 KiB
    put = "/api/2.0/brickyard/jobs/task-values/set"
    r = server.api("POST", put, json={"task_run_id": by_key["consumer"].run_id, "key": "late", "value": "1"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_STATE", r.text
    r = server.api("POST", put, json={"task_run_id": by_key["consumer"].run_id, "key": "big",
                                      "value": json.dumps("x" * 50000)})
    assert r.status_code == 400 and "48 KiB" in r.json()["message"]
    # another user cannot read the run's values
    _, token = server.new_user(unique("tvuser") + "@example.com")
    r = server.api("GET", get, token=token, params={"task_run_id": by_key["consumer"].run_id,
                                                    "task_key": "producer", "key": "count"})
    assert r.status_code == 403
    w.jobs.delete(job_id)


SQL_WIDGETS = """-- Databricks notebook source
CREATE WIDGET TEXT label DEFAULT "unset"

-- COMMAND ----------

SELECT concat('legacy-', '${label}', '-', count(*)) AS legacy FROM range($min, 10)

-- COMMAND ----------

SELECT concat('marker-', :label, '-', count(*)) AS marker FROM range(10) WHERE id >= :min

-- COMMAND ----------

SELECT concat('dollar-', '\\$label') AS escaped
"""


@pytest.mark.slow
def test_widgets_fill_sql_cells_of_a_notebook_job(w, cluster_id, unique):
    path = f"/Shared/jobs/{unique('sqlnb')}"
    w.workspace.mkdirs("/Shared/jobs")
    w.workspace.import_(path, content=base64.b64encode(SQL_WIDGETS.encode()).decode(), format=ImportFormat.SOURCE,
                        language=Language.SQL, overwrite=True)
    task = nb_task("sql", path, cluster_id)
    task.notebook_task.base_parameters = {"label": "hello", "min": "3"}
    run = w.jobs.submit(run_name="sql-widgets", tasks=[jobs.SubmitTask.from_dict(task.as_dict())]).result(
        timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, run.state
    html = w.jobs.export_run(run.tasks[0].run_id).views[0].content
    assert "legacy-hello-7" in html and "marker-hello-7" in html and "dollar-$label" in html


@pytest.mark.slow
def test_notebook_job_and_run_magic_take_workspace_prefixed_paths(w, cluster_id, unique):
    """`/Workspace/X` (Databricks' file-system form) names the workspace path X in jobs and %run."""
    folder = f"/Users/admin/{unique('wsprefix')}"
    import_notebook(w, f"{folder}/lib/helper", "# Databricks notebook source\nHELPED = 'helped'\n")
    import_notebook(w, f"{folder}/main", f"""# Databricks notebook source
# MAGIC %run /Workspace{folder}/lib/helper

# COMMAND ----------

first = HELPED
del HELPED

# COMMAND ----------

# MAGIC %run ./lib/helper

# COMMAND ----------

path = dbutils.notebook.entry_point.getDbutils().notebook().getContext().notebookPath().get()
dbutils.notebook.exit(f"{{first}} {{HELPED}} {{path}}")
""")
    run = w.jobs.submit(run_name="prefixed", tasks=[jobs.SubmitTask.from_dict(
        nb_task("t", f"/Workspace{folder}/main", cluster_id).as_dict())]).result(timeout=WAIT)
    out = w.jobs.get_run_output(run.tasks[0].run_id)
    assert run.state.result_state == jobs.RunResultState.SUCCESS, (run.state, out.error)
    assert out.notebook_output.result == f"helped helped {folder}/main"


@pytest.mark.slow
def test_run_export_shows_tracebacks_without_terminal_colours(w, cluster_id, unique):
    import html as htmlmod

    path = import_notebook(w, f"/Shared/jobs/{unique('ansi')}", FAILING_NOTEBOOK)
    run = w.jobs.submit(run_name="ansi", tasks=[jobs.SubmitTask.from_dict(
        nb_task("t", path, cluster_id).as_dict())]).result(timeout=WAIT)
    assert run.state.result_state == jobs.RunResultState.FAILED
    page = w.jobs.export_run(run.tasks[0].run_id).views[0].content
    assert "\x1b[" not in page and "[0;31m" not in page
    text = htmlmod.unescape(page)
    # IPython colours each token of the traceback; without the codes the line reads as written.
    assert 'raise RuntimeError("notebook says no")' in text and "Traceback (most recent call last)" in text
    assert "RuntimeError: notebook says no" in text
