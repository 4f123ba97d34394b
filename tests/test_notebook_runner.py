"""The notebook runner: whole workspace notebooks (every import format) on the shared real-Spark cluster.

Notebooks are imported with databricks-sdk; runs are started through the workspace's
``notebook_runner`` service (what the Jobs API uses) as a real user.
"""
from __future__ import annotations

import base64
import io
import json
import os
import time
import zipfile

import pytest
from databricks.sdk.service.workspace import ImportFormat, Language

from brickyard.errors import BrickyardError
from brickyard.runtime.formats import dumps
from brickyard.services.users import principal_of

pytestmark = pytest.mark.slow
WAIT = 240


@pytest.fixture(scope="module")
def unique():
    counter = iter(range(1, 10**9))
    return lambda prefix="t": f"{prefix}{os.getpid()}n{next(counter)}"


@pytest.fixture(scope="module")
def runner(server):
    return server.workspace.services["notebook_runner"]


@pytest.fixture(scope="module")
def admin(server):
    ws = server.workspace
    with ws.store.session() as sess:
        return principal_of(ws.services["users"].find(sess, "admin"))


@pytest.fixture(scope="module")
def home(w, unique):
    base = f"/Users/{w.current_user.me().user_name}/{unique('nr')}"
    w.workspace.mkdirs(base)
    return base


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def source(*cells: str, language: str = "python") -> str:
    prefix = "--" if language == "sql" else "#"
    sep = f"\n\n{prefix} COMMAND ----------\n\n"
    return f"{prefix} Databricks notebook source\n" + sep.join(cells)


def texts(cell) -> str:  # noqa: ANN001
    """Everything a cell showed, as text."""
    out = []
    for o in cell.outputs:
        if o["output_type"] == "stream":
            out.append(o["text"])
        elif o["output_type"] in ("display_data", "execute_result"):
            out.append(json.dumps(o["data"]))
        elif o["output_type"] == "error":
            out.append(o["ename"] + ": " + o["evalue"])
    return "".join(out)


def run(runner, cluster_id, path, user, params=None, timeout=None):  # noqa: ANN001, ANN201
    res = runner.start(cluster_id, path, params or {}, user, timeout_seconds=timeout).wait(WAIT)
    assert res is not None, "the run did not finish"
    return res


def test_source_notebook_with_every_magic_widgets_and_exit(w, runner, cluster_id, admin, home, unique):
    d = f"/FileStore/{unique('nrdata')}"
    w.dbfs.put(f"{d}/people.csv", contents=b64("name,age\nann,31\nbob,42\n"), overwrite=True)
    w.workspace.import_(f"{home}/lib", format=ImportFormat.SOURCE, language=Language.PYTHON,
                        content=b64(source("def greet(n):\n    return f'hello {n}'")))
    w.workspace.import_(f"{home}/main", format=ImportFormat.SOURCE, language=Language.PYTHON, content=b64(source(
        "%md # A notebook with every magic",
        "dbutils.widgets.text('who', 'nobody')\nwho = dbutils.widgets.get('who')\nprint('who', who)",
        "%run ./lib",
        "print(greet(who))",
        f"import pandas as pd\nages = pd.read_csv('/dbfs{d}/people.csv')\nprint('sum', int(ages.age.sum()))",
        f"%sql\nCREATE OR REPLACE TEMP VIEW nr_people AS SELECT * FROM VALUES ('ann', 31), ('bob', 42) AS t(name, age);\n"
        f"SELECT count(*) AS n FROM nr_people",
        f"%fs ls {d}",
        "%sh\necho from shell",
        "import matplotlib.pyplot as plt\nplt.plot([1, 2], [2, 1])",
        "dbutils.notebook.exit(json.dumps({'who': who})) if (json := __import__('json')) else None",
        "raise RuntimeError('never reached')")))
    res = run(runner, cluster_id, f"{home}/main", admin, {"who": "world"})
    assert res.state == "SUCCESS", (res.error, res.error_trace)
    assert json.loads(res.exit_value) == {"who": "world"} and res.error is None
    cells = res.notebook.cells
    assert "text/markdown" in cells[0].outputs[0]["data"]
    assert texts(cells[1]) == "who world\n"
    assert texts(cells[3]) == "hello world\n"
    assert texts(cells[4]) == "sum 73\n"
    table = [o for o in cells[5].outputs if "application/vnd.brickyard.table+json" in o.get("data", {})]
    assert table[0]["data"]["application/vnd.brickyard.table+json"]["data"] == [[2]]
    assert "people.csv" in texts(cells[6])
    assert texts(cells[7]) == "from shell\n"
    assert any("image/png" in o.get("data", {}) for o in cells[8].outputs)
    assert cells[10].outputs == [] and cells[10].execution_count is None
    assert [c.execution_count for c in cells[:10]] == list(range(1, 11))


def test_failing_cell_gives_failed_with_error_and_trace(w, runner, cluster_id, admin, home):
    w.workspace.import_(f"{home}/fails", format=ImportFormat.SOURCE, language=Language.PYTHON, content=b64(source(
        "print('before')", "def boom():\n    return 1 / 0\n\nboom()", "print('after')")))
    res = run(runner, cluster_id, f"{home}/fails", admin)
    assert res.state == "FAILED" and res.exit_value is None
    assert res.error == "ZeroDivisionError: division by zero"
    assert "boom()" in res.error_trace and "ZeroDivisionError" in res.error_trace
    assert "\x1b[" not in res.error_trace
    assert texts(res.notebook.cells[0]) == "before\n"
    assert res.notebook.cells[1].outputs[0]["output_type"] == "error"
    assert res.notebook.cells[2].outputs == []


def test_ipynb_dbc_and_sql_notebooks(w, runner, cluster_id, admin, home):
    ipynb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"language_info": {"name": "python"}}, "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# From Jupyter"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["x = spark.range(5).count()\n", "print('ipynb', x)"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["%sql\n", "SELECT 7 * 6 AS answer"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["dbutils.notebook.exit(str(x))"]}]}
    w.workspace.import_(f"{home}/jupyter", format=ImportFormat.JUPYTER, content=b64(json.dumps(ipynb)))
    res = run(runner, cluster_id, f"{home}/jupyter", admin)
    assert res.state == "SUCCESS" and res.exit_value == "5", (res.error, res.error_trace)
    assert "ipynb 5" in texts(res.notebook.cells[1]) and "[[42]]" in texts(res.notebook.cells[2])

    nb = {"version": "NotebookV1", "origId": 77, "name": "legacy", "language": "python", "commands": [
        {"version": "CommandV1", "origId": 1, "guid": "g1", "subtype": "command", "commandType": "auto",
         "position": 1.0, "command": "%md ## Imported from a DBC archive", "results": None},
        {"version": "CommandV1", "origId": 2, "guid": "g2", "subtype": "command", "commandType": "auto",
         "position": 2.0, "command": "dbutils.notebook.exit(getArgument('p', 'none'))", "results": None}]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("dbc/legacy.python", json.dumps(nb))
    w.workspace.import_(f"{home}/dbc", format=ImportFormat.DBC, content=b64(buf.getvalue()))
    res = run(runner, cluster_id, f"{home}/dbc/legacy", admin, {"p": "from-params"})
    assert res.state == "SUCCESS" and res.exit_value == "from-params", (res.error, res.error_trace)

    w.workspace.import_(f"{home}/report", format=ImportFormat.SOURCE, language=Language.SQL, content=b64(source(
        "CREATE OR REPLACE TEMP VIEW nr_nums AS SELECT id FROM range(10)",
        "SELECT sum(id) AS total FROM nr_nums",
        "%python\nprint('python in a SQL notebook', spark.table('nr_nums').count())",
        language="sql")))
    res = run(runner, cluster_id, f"{home}/report", admin)
    assert res.state == "SUCCESS", (res.error, res.error_trace)
    assert "[[45]]" in texts(res.notebook.cells[1])
    assert "python in a SQL notebook 10" in texts(res.notebook.cells[2])


def test_secrets_never_reach_stored_outputs(w, runner, cluster_id, admin, home, unique):
    scope, clear = unique("nrscope"), "Pl41n-Secret-Text"
    w.secrets.create_scope(scope)
    w.secrets.put_secret(scope, "k", string_value=clear)
    w.workspace.import_(f"{home}/leaky", format=ImportFormat.SOURCE, language=Language.PYTHON, content=b64(source(
        f"s = dbutils.secrets.get('{scope}', 'k')\nprint(s)\nimport sys\nprint(s, file=sys.stderr)",
        "s",
        "import pandas as pd\ndisplay(pd.DataFrame({'v': [s]}))",
        "displayHTML('<i>' + s + '</i>')",
        "token = dbutils.notebook.entry_point.getDbutils().notebook().getContext().apiToken().get()\nprint(token)",
        "raise ValueError('leaking ' + s)")))
    res = run(runner, cluster_id, f"{home}/leaky", admin)
    assert res.state == "FAILED"
    stored = dumps(res.notebook).decode() + (res.error or "") + (res.error_trace or "")
    assert clear not in stored
    assert stored.count("[REDACTED]") >= 7
    assert "dapi" not in texts(res.notebook.cells[4])
    assert res.error == "ValueError: leaking [REDACTED]"


def test_cancel_and_timeout(w, runner, cluster_id, admin, home):
    w.workspace.import_(f"{home}/slow", format=ImportFormat.SOURCE, language=Language.PYTHON, content=b64(source(
        "print('started')",
        "import time\nsc.parallelize(range(100), 2).map(lambda x: time.sleep(1) or x).count()",
        "print('not reached')")))
    handle = runner.start(cluster_id, f"{home}/slow", {}, admin)
    deadline = time.time() + 120
    while handle.kernel is None:
        assert time.time() < deadline and not handle.done()
        time.sleep(0.2)
    time.sleep(8)  # into the slow Spark job of the second cell
    assert not handle.done()
    started = time.time()
    handle.cancel()
    res = handle.wait(60)
    assert res is not None and res.state == "CANCELED" and time.time() - started < 30
    assert res.notebook.cells[2].outputs == []

    res = run(runner, cluster_id, f"{home}/slow", admin, timeout=8)
    assert res.state == "TIMEDOUT" and "timed out" in res.error
    assert texts(res.notebook.cells[0]) == "started\n"


def test_start_errors(server, w, runner, cluster_id, admin, home, unique):
    with pytest.raises(BrickyardError) as e:
        runner.start(cluster_id, f"{home}/does-not-exist", {}, admin)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(BrickyardError) as e:
        runner.start("no-such-cluster", f"{home}/fails", {}, admin)
    assert e.value.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
    with pytest.raises(BrickyardError) as e:
        runner.start(cluster_id, f"{home}/fails", {}, admin, timeout_seconds=-1)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    name = unique("nruser")
    server.new_user(name)
    ws = server.workspace
    with ws.store.session() as sess:
        outsider = principal_of(ws.services["users"].find(sess, name))
    with pytest.raises(BrickyardError) as e:
        runner.start(cluster_id, f"{home}/fails", {}, outsider)
    assert e.value.error_code == "PERMISSION_DENIED"
