"""Command Execution API 1.2 through databricks-sdk on a real Spark cluster."""
from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from databricks.sdk.errors import DatabricksError, NotFound
from databricks.sdk.service import compute

from command_support import environ_of, wait_for

pytestmark = pytest.mark.slow
T = timedelta(minutes=3)


@pytest.fixture(scope="module")
def ctx(w, cluster_id):
    created = w.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.PYTHON, timeout=T)
    yield created.id
    w.command_execution.destroy(cluster_id, created.id)


def run(w, cluster_id, ctx, code, language=compute.Language.PYTHON):
    return w.command_execution.execute_and_wait(cluster_id=cluster_id, context_id=ctx, language=language,
                                                command=code, timeout=T)


def test_python_state_and_text(w, cluster_id, ctx):
    r = run(w, cluster_id, ctx, "x = spark.range(1000).count()\nprint('rows', x)")
    assert r.status == compute.CommandStatus.FINISHED
    assert r.results.result_type == compute.ResultType.TEXT and r.results.data == "rows 1000"
    r = run(w, cluster_id, ctx, "x * 2")
    assert r.results.data == "2000"
    r = run(w, cluster_id, ctx, "sc.parallelize(range(100), 4).map(lambda v: v * v).sum()")
    assert r.results.data == "328350"
    r = run(w, cluster_id, ctx, "from pyspark.sql.functions import udf\n"
                                "plus = udf(lambda v: v + 1, 'long')\n"
                                "spark.range(3).select(plus('id').alias('p')).collect()")
    assert "p=3" in r.results.data


def test_parameterized_spark_sql(w, cluster_id, ctx):
    r = run(w, cluster_id, ctx, "print(spark.sql('SELECT :x + 1 AS y, :s AS s', args={'x': 41, 's': \"it's\"}).collect(),"
                                " spark.sql('SELECT ? * 2 AS z', args=[21]).first().z)")
    assert r.results.result_type == compute.ResultType.TEXT, (r.results.summary, r.results.cause)
    assert r.results.data == "[Row(y=42, s=\"it's\")] 42"


def test_tables_from_display_and_sql(w, cluster_id, ctx):
    r = run(w, cluster_id, ctx, "display(spark.range(5).withColumnRenamed('id', 'n'))")
    assert r.results.result_type == compute.ResultType.TABLE
    assert r.results.data == [[0], [1], [2], [3], [4]]
    assert r.results.schema[0]["name"] == "n" and r.results.schema[0]["type"] == '"long"'
    run(w, cluster_id, ctx, "spark.range(3).createOrReplaceTempView('three')")
    sql_ctx = w.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.SQL, timeout=T)
    try:
        r = run(w, cluster_id, sql_ctx.id, "SELECT 1 AS a, 'x;y' AS b; SELECT 42 AS answer",
                language=compute.Language.SQL)
        assert r.results.result_type == compute.ResultType.TABLE and r.results.data == [[42]]
        # Temp views are private to their context.
        r = run(w, cluster_id, sql_ctx.id, "SELECT * FROM three", language=compute.Language.SQL)
        assert r.results.result_type == compute.ResultType.ERROR and "three" in r.results.cause
    finally:
        w.command_execution.destroy(cluster_id, sql_ctx.id)


def test_plot_becomes_image(server, w, cluster_id, ctx):
    r = run(w, cluster_id, ctx, "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.show()")
    assert r.results.result_type == compute.ResultType.IMAGE
    assert r.results.file_name.startswith("/plots/")
    png = server.settings.dbfs_root / "FileStore" / r.results.file_name.lstrip("/")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_display_of_a_figure_is_one_image_whatever_the_backend(server, w, cluster_id, ctx):
    # The lab's style: an Agg figure handed to display(); Databricks shows it once, as an image.
    r = run(w, cluster_id, ctx, "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                                "fig, ax = plt.subplots()\nax.bar(['a', 'b'], [1, 2])\ndisplay(fig)")
    assert r.results.result_type == compute.ResultType.IMAGE, r.results
    png = server.settings.dbfs_root / "FileStore" / r.results.file_name.lstrip("/")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Shown once: the figure is closed, so the end of the cell (inline backend) cannot draw it again.
    assert run(w, cluster_id, ctx, "plt.get_fignums()").results.data == "[]"
    r = run(w, cluster_id, ctx, "matplotlib.use('module://matplotlib_inline.backend_inline')\n"
                                "fig, ax = plt.subplots()\nax.plot([1, 2])\ndisplay(ax)")
    assert r.results.result_type == compute.ResultType.IMAGE, r.results
    assert run(w, cluster_id, ctx, "plt.get_fignums()").results.data == "[]"


def test_error_result(w, cluster_id, ctx):
    r = run(w, cluster_id, ctx, "1 / 0")
    assert r.status == compute.CommandStatus.FINISHED
    assert r.results.result_type == compute.ResultType.ERROR
    assert r.results.summary.startswith("ZeroDivisionError")
    assert "Traceback" in r.results.cause or "ZeroDivisionError" in r.results.cause


def test_cancel_stops_spark_job(w, cluster_id, ctx):
    waiter = w.command_execution.execute(
        cluster_id=cluster_id, context_id=ctx, language=compute.Language.PYTHON,
        command="import time\nsc.parallelize(range(200), 2).map(lambda x: time.sleep(1) or x).count()")
    command_id = waiter.command_id
    deadline = time.time() + 60
    while w.command_execution.command_status(cluster_id, ctx, command_id).status != compute.CommandStatus.RUNNING:
        assert time.time() < deadline
        time.sleep(0.2)
    time.sleep(2)
    started = time.time()
    w.command_execution.cancel_and_wait(cluster_id=cluster_id, context_id=ctx, command_id=command_id, timeout=T)
    assert time.time() - started < 30
    status = w.command_execution.command_status(cluster_id, ctx, command_id)
    assert status.status == compute.CommandStatus.CANCELLED
    # The Spark job was cancelled too, and the context still works afterwards.
    r = run(w, cluster_id, ctx, "import time\ntime.sleep(1)\nprint(sc.statusTracker().getActiveJobsIds())")
    assert r.results.data == "[]"
    assert run(w, cluster_id, ctx, "spark.range(10).count()").results.data == "10"


def test_bad_requests(server, w, cluster_id, ctx):
    r = server.api("POST", "/api/1.2/contexts/create", json={"clusterId": cluster_id, "language": "cobol"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = server.api("POST", "/api/1.2/contexts/create", json={"clusterId": "nope", "language": "python"})
    assert r.status_code == 400
    r = server.api("GET", "/api/1.2/commands/status",
                   params={"clusterId": cluster_id, "contextId": ctx, "commandId": "missing"})
    assert r.status_code == 400
    r = server.api("POST", "/api/1.2/commands/execute",
                   json={"clusterId": cluster_id, "contextId": ctx, "language": "scala", "command": "1"})
    assert r.status_code == 400 and "scala" in r.json()["message"]
    _, token = server.new_user("ctx-outsider")
    r = server.api("GET", "/api/1.2/contexts/status", token=token, params={"clusterId": cluster_id, "contextId": ctx})
    assert r.status_code == 403


def test_html_and_figure_expressions(w, cluster_id, ctx):
    r = run(w, cluster_id, ctx, "displayHTML('<b>wine</b>')")
    assert r.results.result_type == compute.ResultType.TEXT and r.results.data == "<b>wine</b>"
    r = run(w, cluster_id, ctx, "import matplotlib.pyplot as plt\nplt.figure()\nplt.gca().bar([1, 2], [3, 4])")
    assert r.results.result_type == compute.ResultType.IMAGE


def test_workspace_private_environment_does_not_reach_user_code(server, w, cluster_id, ctx):
    """Neither the driver, its Python workers nor the kernels see the workspace's own variables."""
    from conftest import SENTINEL

    code = ("import os\n"
            f"here = [v for v in os.environ.values() if v == {SENTINEL!r}]\n"
            f"workers = sc.parallelize([0], 1).map(lambda _: [v for v in os.environ.values() if v == {SENTINEL!r}])"
            ".collect()\n"
            "print(here, workers)")
    assert run(w, cluster_id, ctx, code).results.data == "[] [[]]"
    info = json.loads((server.settings.home / "clusters" / cluster_id / "driver.json").read_text())
    with open(f"/proc/{info['pid']}/environ", "rb") as fh:
        assert SENTINEL.encode() not in fh.read()
    conf = server.settings.home / "clusters" / cluster_id / "driver-conf.json"
    assert conf.stat().st_mode & 0o077 == 0


def test_workspace_private_environment_does_not_reach_kernels(w, cluster_id, monkeypatch):
    monkeypatch.setenv("BRICKYARD_MASTER_KEY", "never-in-a-notebook")
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", "nor-this")
    # Two contexts: the first may take the cluster's spare kernel (started before these variables were
    # set); the second starts a kernel now (its spare's replacement starts later).
    created = [w.command_execution.create(cluster_id=cluster_id, language=compute.Language.PYTHON).context_id
               for _ in range(2)]
    try:
        for context_id in created:
            r = run(w, cluster_id, context_id, "import os\nsorted(v for v in os.environ.values() "
                                               "if v in ('never-in-a-notebook', 'nor-this'))")
            assert r.results.data == "[]"
    finally:
        for context_id in created:
            w.command_execution.destroy(cluster_id, context_id)


def test_context_takes_the_spare_kernel_and_binds_it_to_the_caller(server, w, cluster_id, unique):
    """A running cluster keeps a pre-started kernel; contexts/create hands it out as the caller's, and a new
    spare replaces it."""
    contexts = server.workspace.services["contexts"]
    pid = wait_for(lambda: contexts.spare_pid(cluster_id), what="a spare kernel")
    spare_env = environ_of(pid)
    assert spare_env["BRICKYARD_SPARE_KERNEL"] == "1"
    assert not {"BRICKYARD_TOKEN", "DATABRICKS_TOKEN", "BRICKYARD_USER"} & spare_env.keys()
    user = unique("spare-user")
    _, token = server.new_user(user)
    uw = server.client(token)
    ctx = uw.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.PYTHON, timeout=T)
    try:
        code = ("import os, requests\n"
                "me = requests.get(os.environ['DATABRICKS_HOST'] + '/api/2.0/preview/scim/v2/Me',\n"
                "                  headers={'Authorization': 'Bearer ' + os.environ['DATABRICKS_TOKEN']}).json()\n"
                "print(os.getpid(), me['userName'], os.environ['BRICKYARD_USER'], "
                "'BRICKYARD_SPARE_KERNEL' in os.environ, spark.range(1000).count())")
        r = run(uw, cluster_id, ctx.id, code)
        assert r.results.data == f"{pid} {user} {user} False 1000", r.results
        # The user's token is redacted like a secret, and dbutils works as the user.
        r = run(uw, cluster_id, ctx.id, "print(os.environ['DATABRICKS_TOKEN'])\nprint(len(dbutils.fs.ls('/')) >= 0)")
        assert r.results.data == "[REDACTED]\nTrue", r.results
        new = wait_for(lambda: (p := contexts.spare_pid(cluster_id)) not in (None, pid) and p,
                       what="a new spare kernel")
        assert new != pid
    finally:
        uw.command_execution.destroy(cluster_id, ctx.id)


def test_spare_kernels_stop_with_their_cluster(server, w, unique):
    """Spares die with their cluster's run; a context created while the spare is starting waits for it."""
    from brickyard.compute.runtime import pid_alive

    contexts = server.workspace.services["contexts"]
    cluster = w.clusters.create_and_wait(
        cluster_name=unique("spare"), spark_version="17.3.x-scala2.13", node_type_id="local.small", num_workers=0,
        spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"},
        timeout=timedelta(minutes=5)).cluster_id
    try:
        first = wait_for(lambda: contexts.spare_pid(cluster), what="a spare kernel")
        w.clusters.restart_and_wait(cluster, timeout=timedelta(minutes=5))
        assert not pid_alive(first)
        # The new run's spare, starting or ready: the next context gets it either way.
        spare = wait_for(lambda: contexts._starting.get(cluster) or contexts.spares.get(cluster),
                         what="a spare kernel after the restart")
        ctx = w.command_execution.create_and_wait(cluster_id=cluster, language=compute.Language.PYTHON, timeout=T)
        assert ctx.id == spare.ctx_id
        taken = spare.pid
        assert run(w, cluster, ctx.id, "import os\nos.getpid()").results.data == str(taken)
        assert taken != first
        replacement = wait_for(lambda: contexts.spare_pid(cluster), what="the replacement spare")
        assert replacement != taken
        w.clusters.delete_and_wait(cluster, timeout=timedelta(minutes=5))
        assert contexts.spare_pid(cluster) is None
        assert not pid_alive(taken) and not pid_alive(replacement)
    finally:
        w.clusters.permanent_delete(cluster)
