"""The notebook runtime inside a kernel, through the Command Execution API with databricks-sdk.

Predefined names, dbutils (fs, secrets, widgets, notebook), magics, %run, /dbfs, display and
secret redaction, on the shared real-Spark cluster.
"""
from __future__ import annotations

import base64
import io
import json
import os
import zipfile
from datetime import timedelta

import pytest
from databricks.sdk.service import compute
from databricks.sdk.service.workspace import ImportFormat, Language

from command_support import run, text

pytestmark = pytest.mark.slow
T = timedelta(minutes=4)


@pytest.fixture(scope="module")
def unique():
    counter = iter(range(1, 10**9))
    return lambda prefix="t": f"{prefix}{os.getpid()}r{next(counter)}"


@pytest.fixture(scope="module")
def ctx(w, cluster_id):
    created = w.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.PYTHON, timeout=T)
    yield created.id
    w.command_execution.destroy(cluster_id, created.id)


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def source_notebook(*cells: str, language: str = "python") -> str:
    prefix = "--" if language == "sql" else "#"
    sep = f"\n\n{prefix} COMMAND ----------\n\n"
    return f"{prefix} Databricks notebook source\n" + sep.join(cells)


def dbc_archive(folder: str, name: str, commands: list[str]) -> bytes:
    """A .dbc as Databricks exports it: a zip of NotebookV1 JSON files."""
    nb = {"version": "NotebookV1", "origId": 901, "name": name, "language": "python", "commands": [
        {"version": "CommandV1", "origId": 9000 + i, "guid": f"00000000-0000-4000-8000-{i:012d}",
         "subtype": "command", "commandType": "auto", "position": float(i), "command": c, "results": None}
        for i, c in enumerate(commands, 1)]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{folder}/{name}.python", json.dumps(nb))
    return buf.getvalue()


@pytest.fixture(scope="module")
def home(w, unique):
    me = w.current_user.me().user_name
    base = f"/Users/{me}/{unique('rt')}"
    w.workspace.mkdirs(base)
    return base


# -- predefined names and display ------------------------------------------------------------
def test_predefined_names(w, cluster_id, ctx):
    out = text(w, cluster_id, ctx, "print(type(spark).__name__, type(sc).__name__, type(sqlContext).__name__,\n"
                                   "      sql('SELECT 41 + 1 AS v').first().v, callable(udf), callable(table),\n"
                                   "      callable(displayHTML), getArgument('missing', 'dflt'), type(dbutils).__name__)")
    assert out == "SparkSession SparkContext SQLContext 42 True True True dflt DBUtils"


def test_display_tables_truncation_and_figures(server, w, cluster_id, ctx):
    r = run(w, cluster_id, ctx, "import pandas as pd\ndisplay(pd.DataFrame({'a': range(1500), 'b': 'x'}))")
    assert r.result_type == compute.ResultType.TABLE and r.truncated is True and len(r.data) == 1000
    assert [c["name"] for c in r.schema] == ["a", "b"]
    r = run(w, cluster_id, ctx, "display(spark.range(3).selectExpr('id', 'id * 2 AS twice'))")
    assert r.data == [[0, 0], [1, 2], [2, 4]] and r.truncated is False
    w.dbfs.put("/FileStore/rt-display/a.txt", contents=b64("abc"), overwrite=True)
    r = run(w, cluster_id, ctx, "display(dbutils.fs.ls('/FileStore/rt-display'))")
    assert r.result_type == compute.ResultType.TABLE
    assert [c["name"] for c in r.schema] == ["path", "name", "size", "modificationTime"]
    assert r.data[0][:3] == ["dbfs:/FileStore/rt-display/a.txt", "a.txt", 3]
    # A figure drawn without display() or show() is captured by the inline backend.
    r = run(w, cluster_id, ctx, "import matplotlib.pyplot as plt\nimport seaborn as sns\n"
                                "ax = sns.histplot([1, 2, 2, 3, 3, 3])")
    assert r.result_type == compute.ResultType.IMAGE
    png = server.settings.dbfs_root / "FileStore" / r.file_name.lstrip("/")
    assert png.read_bytes()[:4] == b"\x89PNG"


# -- magics ------------------------------------------------------------------------------------
def test_sql_magic_several_statements(w, cluster_id, ctx):
    r = run(w, cluster_id, ctx, "%sql\nCREATE OR REPLACE TEMP VIEW rt_v AS SELECT 20 AS a;\n"
                                "-- a comment; with a semicolon\nSELECT a + 1 AS b FROM rt_v; SELECT a * 2 AS c FROM rt_v")
    assert r.result_type == compute.ResultType.TABLE and r.data == [[40]]
    assert r.schema[0]["name"] == "c"


def test_md_python_sh_and_unsupported_magics(w, cluster_id, ctx):
    r = run(w, cluster_id, ctx, "%md # Title\nsome *text*")
    assert r.result_type == compute.ResultType.TEXT
    assert text(w, cluster_id, ctx, "%python\nprint('from python magic')") == "from python magic"
    assert text(w, cluster_id, ctx, "%sh\necho one; echo two >&2") == "one\ntwo"
    r = run(w, cluster_id, ctx, "%sh -e\necho failing; exit 3")
    assert r.result_type == compute.ResultType.ERROR and "3" in r.summary
    assert text(w, cluster_id, ctx, "%sh\nexit 3\n") == ""  # without -e a failing command does not fail the cell
    for lang in ("scala", "r"):
        r = run(w, cluster_id, ctx, f"%{lang}\nprintln(1)")
        assert r.result_type == compute.ResultType.ERROR
        assert f"%{lang} is not supported" in r.summary


def test_fs_magic(w, cluster_id, ctx, unique):
    d = f"dbfs:/tmp/{unique('fsm')}"
    assert text(w, cluster_id, ctx, f"%fs mkdirs {d}") == "True"
    assert text(w, cluster_id, ctx, f"%fs put {d}/a.txt 'hello magic'") == "Wrote 11 bytes.\nTrue"
    assert text(w, cluster_id, ctx, f"%fs head {d}/a.txt") == "hello magic"
    r = run(w, cluster_id, ctx, f"%fs ls {d}")
    assert r.result_type == compute.ResultType.TABLE and r.data[0][:3] == [f"{d}/a.txt", "a.txt", 11]
    assert text(w, cluster_id, ctx, f"%fs rm -r {d}") == "True"


def test_pip_magic_installs_into_the_cluster_library_dir(server, w, cluster_id, ctx, unique, tmp_path):
    name = unique("brickyardpkg").replace("x", "_")
    wheel = tmp_path / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"{name}/__init__.py", "VALUE = 'installed by %pip'\n")
        z.writestr(f"{name}-0.1.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        z.writestr(f"{name}-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                  "Tag: py3-none-any\n")
        z.writestr(f"{name}-0.1.dist-info/RECORD", "")
    r = run(w, cluster_id, ctx, f"%pip install --no-index {wheel}")
    assert r.result_type == compute.ResultType.TEXT and "Successfully installed" in r.data, (r.summary, r.cause)
    libs = server.workspace.services["clusters"].launcher.library_dir(cluster_id)
    assert text(w, cluster_id, ctx, f"import {name}\nprint({name}.VALUE, {name}.__file__)") \
        == f"installed by %pip {libs / name / '__init__.py'}"
    assert (libs / name / "__init__.py").exists()
    # Python UDF workers (started by the driver) import from the same folder.
    out = text(w, cluster_id, ctx, f"from pyspark.sql.functions import udf as _u\n"
                                   f"f = _u(lambda i: __import__('{name}').VALUE, 'string')\n"
                                   f"print(spark.range(1).select(f('id')).first()[0])")
    assert out == "installed by %pip"


# -- dbutils.fs --------------------------------------------------------------------------------
def test_dbutils_fs_operations_and_errors(w, cluster_id, ctx, unique):
    d = f"/tmp/{unique('dbu')}"
    code = f"""
d = {d!r}
assert dbutils.fs.mkdirs(f"dbfs:{{d}}/src/sub")
dbutils.fs.put(f"{{d}}/src/a.txt", "alpha", overwrite=True)
dbutils.fs.put(f"{{d}}/src/sub/b.txt", "beta")
ls = dbutils.fs.ls(f"dbfs:{{d}}/src")
assert [(f.name, f.size) for f in ls] == [("a.txt", 5), ("sub/", 0)], ls
assert ls[0].path == f"dbfs:{{d}}/src/a.txt" and ls[1].isDir() and ls[0].modificationTime > 0
assert dbutils.fs.cp(f"{{d}}/src", f"{{d}}/copy", recurse=True)
assert dbutils.fs.head(f"{{d}}/copy/sub/b.txt") == "beta"
assert dbutils.fs.head(f"{{d}}/copy/a.txt", 3) == "alp"
assert dbutils.fs.mv(f"{{d}}/copy/a.txt", f"{{d}}/moved.txt")
assert dbutils.fs.head(f"dbfs:{{d}}/moved.txt") == "alpha"
import tempfile, os
local = tempfile.mkdtemp()
dbutils.fs.cp(f"{{d}}/moved.txt", f"file:{{local}}/x.txt")
assert open(f"{{local}}/x.txt").read() == "alpha"
dbutils.fs.cp(f"file:{{local}}/x.txt", f"dbfs:{{d}}/from_local.txt")
assert dbutils.fs.head(f"{{d}}/from_local.txt") == "alpha"
assert dbutils.fs.rm(f"{{d}}/copy", recurse=True)
assert dbutils.fs.rm(f"{{d}}/nope") is False
errors = []
for call in (lambda: dbutils.fs.ls(f"{{d}}/missing"), lambda: dbutils.fs.head(f"{{d}}/missing"),
             lambda: dbutils.fs.cp(f"{{d}}/missing", f"{{d}}/x"), lambda: dbutils.fs.put(f"{{d}}/moved.txt", "x"),
             lambda: dbutils.fs.mount("s3a://b", "/outside/b")):
    try:
        call()
        errors.append("no error")
    except Exception as e:
        errors.append(str(e))
print(json.dumps(errors))
"""
    errors = json.loads(text(w, cluster_id, ctx, "import json\n" + code).splitlines()[-1])
    assert f"java.io.FileNotFoundException: File dbfs:{d}/missing does not exist." in errors[0]
    assert "FSUtils.ls" in errors[0]
    assert "java.io.FileNotFoundException" in errors[1] and "java.io.FileNotFoundException" in errors[2]
    assert f"FileAlreadyExistsException: File already exists: dbfs:{d}/moved.txt" in errors[3]
    assert "FSUtils.mount" in errors[4] and "/mnt" in errors[4]  # mount points live under /mnt/
    r = run(w, cluster_id, ctx, f"dbutils.fs.ls('{d}/missing')")
    assert r.result_type == compute.ResultType.ERROR and "java.io.FileNotFoundException" in r.summary
    assert "FileInfo(path=" in text(w, cluster_id, ctx, f"dbutils.fs.ls('{d}')[0]")
    assert "cp(from: String" in text(w, cluster_id, ctx, "dbutils.fs.help()")


def test_dbfs_local_paths_from_pandas_and_open(w, cluster_id, ctx, unique):
    d = f"/FileStore/{unique('local')}"
    w.dbfs.put(f"{d}/wine.csv", contents=b64("a,b\n1,2\n3,4\n"), overwrite=True)
    out = text(w, cluster_id, ctx, f"import pandas as pd\ndf = pd.read_csv('/dbfs{d}/wine.csv')\n"
                                   f"print(int(df.b.sum()))\n"
                                   f"with open('/dbfs{d}/out.txt', 'w') as fh: fh.write('written locally')\n"
                                   f"import os\nprint(sorted(os.listdir('/dbfs{d}')))")
    assert out == "6\n['out.txt', 'wine.csv']"
    assert base64.b64decode(w.dbfs.read(f"{d}/out.txt").data) == b"written locally"
    assert text(w, cluster_id, ctx, f"%sh\ncat /dbfs{d}/out.txt") == "written locally"
    # As root the kernel has DBFS bind-mounted on /dbfs in its own mount namespace.
    if os.geteuid() == 0:
        assert text(w, cluster_id, ctx, "print(' /dbfs ' in open('/proc/self/mountinfo').read())") == "True"


# -- secrets and redaction ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def scope(w, unique):
    name = unique("rtscope")
    w.secrets.create_scope(name)
    w.secrets.put_secret(name, "pw", string_value="S3cr3t-Value-xyz")
    yield name
    w.secrets.delete_scope(name)


def test_secrets_are_redacted_in_every_channel(w, cluster_id, ctx, scope):
    clear = "S3cr3t-Value-xyz"
    assert text(w, cluster_id, ctx, f"pw = dbutils.secrets.get('{scope}', 'pw')\nprint(pw)") == "[REDACTED]"
    assert text(w, cluster_id, ctx, "print(len(pw), pw == 'S3cr3t-' + 'Value-xyz')") == "16 True"
    assert text(w, cluster_id, ctx, "import sys\nprint('err', pw, file=sys.stderr)") == "err [REDACTED]"
    assert text(w, cluster_id, ctx, "pw") == "'[REDACTED]'"
    assert text(w, cluster_id, ctx, f"dbutils.secrets.getBytes('{scope}', 'pw')") == "b'[REDACTED]'"
    r = run(w, cluster_id, ctx, "import pandas as pd\ndisplay(pd.DataFrame({'k': ['pw'], 'v': [pw]}))")
    assert r.data == [["pw", "[REDACTED]"]]
    r = run(w, cluster_id, ctx, "display(spark.createDataFrame([(pw,)], 'v string'))")
    assert r.data == [["[REDACTED]"]]
    r = run(w, cluster_id, ctx, "displayHTML(f'<b>{pw}</b>')")
    assert clear not in json.dumps(r.as_dict())  # contexts show HTML as its text form; runs keep the HTML
    r = run(w, cluster_id, ctx, "raise ValueError('bad password ' + pw)")
    assert r.result_type == compute.ResultType.ERROR
    assert clear not in r.summary and clear not in r.cause and "[REDACTED]" in r.summary
    assert text(w, cluster_id, ctx, "%sh\necho $HOME >/dev/null; python -c \"print('" + "S3cr3t-" + "Value-xyz')\"") \
        == "[REDACTED]"
    assert text(w, cluster_id, ctx, f"print([m.key for m in dbutils.secrets.list('{scope}')], "
                                    f"'{scope}' in [s.name for s in dbutils.secrets.listScopes()])") == "['pw'] True"


def test_binary_secrets_are_redacted_as_printed(w, cluster_id, ctx, scope):
    """getBytes of a value that is not UTF-8: its repr, decodings and readable parts never reach output."""
    raw = b"\xff\xfeBinary-Secret-\x00\x80tail-part"
    w.secrets.put_secret(scope, "bin", bytes_value=b64(raw))
    w.secrets.put_secret(scope, "utf8", bytes_value=b64("pässwörd-ümlaut".encode()))
    out = text(w, cluster_id, ctx, f"""
b = dbutils.secrets.getBytes('{scope}', 'bin')
u = dbutils.secrets.getBytes('{scope}', 'utf8')
print(b)
print([b])
print(b.decode('latin-1'))
print(b.decode('utf-8', 'replace'))
print(b.decode('utf-8', 'ignore'))
print(b[2:16], b[2:16].decode(), b[-9:].decode())
print(b.hex())
print(u)
print(u.decode())
print(len(b), 'Binary', b[:2])
""")
    assert out.splitlines() == [
        "b'[REDACTED]'", "[b'[REDACTED]']", "[REDACTED]", "[REDACTED]", "[REDACTED]",
        "b'[REDACTED]' [REDACTED] [REDACTED]", "[REDACTED]", "b'[REDACTED]'", "[REDACTED]",
        # Short pieces are not hidden: they are too common in ordinary output.
        "27 Binary b'\\xff\\xfe'"]
    assert text(w, cluster_id, ctx, "b") == "b'[REDACTED]'"
    r = run(w, cluster_id, ctx, "raise ValueError(b)")
    assert r.result_type == compute.ResultType.ERROR and "Binary-Secret" not in r.summary + (r.cause or "")
    assert "[REDACTED]" in r.summary


def test_secret_acls_are_the_users_own(server, w, cluster_id, scope, unique):
    name = unique("rtuser")
    _, token = server.new_user(name)
    uw = server.client(token)
    c = uw.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.PYTHON, timeout=T)
    try:
        r = run(uw, cluster_id, c.id, f"dbutils.secrets.get('{scope}', 'pw')")
        assert r.result_type == compute.ResultType.ERROR and "PERMISSION_DENIED" in r.summary
        out = text(uw, cluster_id, c.id, "ctx = dbutils.notebook.entry_point.getDbutils().notebook().getContext()\n"
                                         "print(ctx.tags().apply('user'))\nprint(ctx.apiToken().get())\n"
                                         "from databricks.sdk import WorkspaceClient\n"
                                         "print(WorkspaceClient(host=ctx.apiUrl().get(), "
                                         "token=ctx.apiToken().get()).current_user.me().user_name)")
        assert out.splitlines() == [name, "[REDACTED]", name]
        assert token not in out
    finally:
        uw.command_execution.destroy(cluster_id, c.id)
    # The kernel's token is deleted with its context.
    infos = [t.comment for t in uw.tokens.list()]
    assert "Brickyard notebook kernel" not in infos


# -- widgets, %run and dbutils.notebook --------------------------------------------------------
def test_widgets(w, cluster_id, ctx):
    out = text(w, cluster_id, ctx, """
dbutils.widgets.text('name', 'world', 'Name')
dbutils.widgets.dropdown('color', 'red', ['red', 'blue'])
dbutils.widgets.multiselect('many', 'a,b', ['a', 'b', 'c'])
dbutils.widgets.combobox('combo', 'free', ['x'])
print(dbutils.widgets.get('name'), getArgument('color'), dbutils.widgets.get('many'), dbutils.widgets.get('combo'))
dbutils.widgets.remove('name')
try:
    dbutils.widgets.get('name')
except Exception as e:
    print(type(e).__name__, 'No input widget named name' in str(e))
dbutils.widgets.removeAll()
print(dbutils.widgets.getArgument('color', 'gone'))
""")
    assert out.splitlines() == ["world red a,b free", "InputWidgetNotDefined True", "gone"]


def test_widgets_fill_sql_cells(w, cluster_id, ctx):
    text(w, cluster_id, ctx, "dbutils.widgets.text('rt_tab', 'rt_sqlw')\ndbutils.widgets.text('rt_min', '2')\n"
                             "dbutils.widgets.text('rt_day', '2024-05-01')\ndbutils.widgets.text('rt_q', \"it's\")")
    try:
        # legacy ${name} / $name text substitution (\\$ is a literal $), and :name parameter markers
        r = run(w, cluster_id, ctx, "%sql\nCREATE OR REPLACE TEMP VIEW ${rt_tab} AS SELECT id FROM range(5);\n"
                                    "SELECT count(*) AS n, '${rt_day}' AS d, '\\$1' AS cost FROM $rt_tab "
                                    "WHERE id >= :rt_min")
        assert r.result_type == compute.ResultType.TABLE, r.summary
        assert r.data == [[3, "2024-05-01", "$1"]]
        r = run(w, cluster_id, ctx, "%sql\nSELECT count(*) AS n, getArgument('rt_day') AS d, :rt_q AS q, "
                                    "getArgument('rt_none', 'dflt') AS o FROM IDENTIFIER(:rt_tab) WHERE id < :rt_min")
        assert r.data == [[2, "2024-05-01", "it's", "dflt"]], r.summary
        # SQL commands of the context (language SQL) too; a marker that is no widget is Spark's error
        r = w.command_execution.execute_and_wait(cluster_id=cluster_id, context_id=ctx,
                                                 language=compute.Language.SQL, command="SELECT :rt_q AS q",
                                                 timeout=T).results
        assert r.data == [["it's"]], r.summary
        r = run(w, cluster_id, ctx, "%sql\nSELECT :rt_nope")
        assert r.result_type == compute.ResultType.ERROR and "UNBOUND_SQL_PARAMETER" in r.summary
        # spark.sql from Python does not read widgets (as on Databricks): pass args yourself
        r = run(w, cluster_id, ctx, "spark.sql('SELECT :rt_q AS q').collect()")
        assert r.result_type == compute.ResultType.ERROR and "UNBOUND_SQL_PARAMETER" in r.summary
        # the SQL form of the widgets API
        run(w, cluster_id, ctx, "%sql\nCREATE WIDGET DROPDOWN rt_pick DEFAULT '1' CHOICES SELECT id FROM range(3)")
        run(w, cluster_id, ctx, "%sql\nCREATE WIDGET TEXT rt_txt DEFAULT \"from sql\"")
        assert text(w, cluster_id, ctx, "print(dbutils.widgets.get('rt_pick'), dbutils.widgets.get('rt_txt'))") \
            == "1 from sql"
        r = run(w, cluster_id, ctx, "%sql\nCREATE WIDGET DROPDOWN rt_bad DEFAULT '9' CHOICES SELECT id FROM range(3)")
        assert r.result_type == compute.ResultType.ERROR and "not in the list of choices" in r.summary
        run(w, cluster_id, ctx, "%sql\nREMOVE WIDGET rt_txt")
        assert text(w, cluster_id, ctx, "print(dbutils.widgets.getArgument('rt_txt', 'removed'))") == "removed"
    finally:
        text(w, cluster_id, ctx, "dbutils.widgets.removeAll()\nprint('ok')")


def test_task_values_outside_a_job(w, cluster_id, ctx):
    out = text(w, cluster_id, ctx, """
tv = dbutils.jobs.taskValues
tv.set("k", {"a": 1})
print(tv.get("upstream", "k", debugValue="dbg"), tv.get(taskKey="t", key="k", default=1, debugValue=[2]))
try:
    tv.get("upstream", "k", default="ignored")
except TypeError as e:
    print(e)
""")
    assert out.splitlines() == ["dbg [2]", "Must pass debugValue when calling get outside of a job context. "
                                           "debugValue cannot be None."]


def test_run_magic_relative_and_dbc(w, cluster_id, ctx, home):
    w.workspace.import_(f"{home}/lib", format=ImportFormat.DBC, content=b64(dbc_archive(
        "lib", "helpers", ["%md # Helpers", "def double(x):\n    return 2 * x", "HELPER_SCALE = 10",
                           "%sql\nCREATE OR REPLACE TEMP VIEW helper_view AS SELECT 7 AS seven"])))
    w.workspace.mkdirs(f"{home}/nb")
    w.workspace.import_(f"{home}/nb/child", format=ImportFormat.SOURCE, language=Language.PYTHON,
                        content=b64(source_notebook("%run ../lib/helpers", "CHILD = double(HELPER_SCALE)")))
    # %run resolves relative paths against the running notebook; contexts have none, so use absolute ones.
    # The included notebooks' outputs are the command's: here the %md cell of the helpers.
    assert text(w, cluster_id, ctx, f"%run {home}/nb/child") == "# Helpers"
    assert text(w, cluster_id, ctx, "print(CHILD, double(4), spark.table('helper_view').first().seven)") == "20 8 7"
    # $name=value arguments fill the included notebook's widgets (quoted path and value), for that run only.
    w.workspace.import_(f"{home}/lib/greet", format=ImportFormat.SOURCE, language=Language.PYTHON,
                        content=b64(source_notebook("dbutils.widgets.text('who', 'nobody')",
                                                    "print('hello', dbutils.widgets.get('who'))")))
    assert text(w, cluster_id, ctx, f'%run "{home}/lib/greet" $who="big world"\n') == "hello big world"
    assert text(w, cluster_id, ctx, f"%run {home}/lib/greet") == "hello nobody"
    assert text(w, cluster_id, ctx, "print(dbutils.widgets.get('who'))\ndbutils.widgets.remove('who')") == "nobody"
    r = run(w, cluster_id, ctx, f"%run {home}/nb/missing")
    assert r.result_type == compute.ResultType.ERROR and "Notebook not found" in r.summary


def test_notebook_run_with_arguments_exit_and_timeout(w, cluster_id, ctx, home):
    w.workspace.mkdirs(f"{home}/jobs")
    w.workspace.import_(f"{home}/jobs/child", format=ImportFormat.SOURCE, language=Language.PYTHON,
                        content=b64(source_notebook(
                            "dbutils.widgets.text('x', '1')",
                            "import time\ntime.sleep(float(dbutils.widgets.get('sleep')) if 'sleep' in "
                            "dbutils.widgets.getAll() else 0)",
                            "print('child output is not shown')\n"
                            "dbutils.notebook.exit(str(int(getArgument('x')) * 2) + ':' + "
                            "dbutils.notebook.entry_point.getDbutils().notebook().getContext().notebookPath().get())",
                            "raise RuntimeError('not reached')")))
    w.workspace.import_(f"{home}/jobs/broken", format=ImportFormat.SOURCE, language=Language.PYTHON,
                        content=b64(source_notebook("1 / 0")))
    out = text(w, cluster_id, ctx, f"print(dbutils.notebook.run('{home}/jobs/child', 60, {{'x': 21}}))")
    assert out == f"42:{home}/jobs/child"
    r = run(w, cluster_id, ctx, f"dbutils.notebook.run('{home}/jobs/child', 2, {{'sleep': '30'}})")
    assert r.result_type == compute.ResultType.ERROR and "timed out after 2 seconds" in r.summary
    r = run(w, cluster_id, ctx, f"dbutils.notebook.run('{home}/jobs/broken', 60)")
    assert r.result_type == compute.ResultType.ERROR and "ZeroDivisionError" in r.summary
    assert "WorkflowException" in r.summary
    # The parent's own namespace and widgets are untouched by the child.
    assert text(w, cluster_id, ctx, "print('x' in dir(), dbutils.widgets.getArgument('x', 'unset'))") \
        == "False unset"
    # exit() in a command ends it without an error.
    r = run(w, cluster_id, ctx, "dbutils.notebook.exit('done')")
    assert r.result_type == compute.ResultType.TEXT and "done" in r.data


def test_dbfs_fallback_without_a_mount(tmp_path):
    """Without root (no private mount), /dbfs paths are mapped in Python: open, os, pathlib, pandas."""
    import subprocess
    import sys

    root = tmp_path / "dbfs"
    (root / "FileStore").mkdir(parents=True)
    (root / "FileStore" / "a.csv").write_text("x\n1\n2\n")
    code = f"""
from brickyard.runtime import dbfs_paths
dbfs_paths.install({str(root)!r})
import os, pathlib, pandas as pd
print(int(pd.read_csv('/dbfs/FileStore/a.csv').x.sum()))
pathlib.Path('/dbfs/FileStore/b.txt').write_text('via pathlib')
os.makedirs('/dbfs/FileStore/d/e', exist_ok=True)
os.rename('/dbfs/FileStore/b.txt', '/dbfs/FileStore/d/e/b.txt')
print(sorted(os.listdir('/dbfs/FileStore')), os.path.exists('/dbfs/FileStore/d/e/b.txt'))
pd.DataFrame({{'y': [3]}}).to_csv('/dbfs/FileStore/out.csv', index=False)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["3", "['a.csv', 'd'] True"]
    assert (root / "FileStore" / "d" / "e" / "b.txt").read_text() == "via pathlib"
    assert (root / "FileStore" / "out.csv").read_text() == "y\n3\n"


def test_workspace_prefixed_paths_in_run_magic_and_notebook_run(w, cluster_id, ctx, home):
    """`/Workspace/X` names the workspace path X, as on Databricks; the child sees its path without it."""
    w.workspace.mkdirs(f"{home}/prefixed")
    w.workspace.import_(f"{home}/prefixed/vars", format=ImportFormat.SOURCE, language=Language.PYTHON,
                        content=b64(source_notebook("PREFIXED = 'run via /Workspace'")))
    w.workspace.import_(f"{home}/prefixed/child", format=ImportFormat.SOURCE, language=Language.PYTHON,
                        content=b64(source_notebook(
                            "dbutils.notebook.exit(dbutils.notebook.entry_point.getDbutils().notebook()"
                            ".getContext().notebookPath().get())")))
    assert text(w, cluster_id, ctx, f"%run /Workspace{home}/prefixed/vars\n") == ""
    assert text(w, cluster_id, ctx, "print(PREFIXED)") == "run via /Workspace"
    out = text(w, cluster_id, ctx, f"print(dbutils.notebook.run('/Workspace{home}/prefixed/child', 60))")
    assert out == f"{home}/prefixed/child"
