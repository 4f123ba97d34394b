"""Start-up code of every notebook and execution context kernel on a cluster.

Executed by the kernel as ``from brickyard.runtime.kernel_init import *``: it attaches to the
cluster's driver and predefines what Databricks notebooks expect: spark, sc, sqlContext,
dbutils, display, displayHTML, udf, table, sql, getArgument, and the cell magics.

A spare kernel (BRICKYARD_SPARE_KERNEL=1, started ahead of any context by the workspace) does the
user-independent part only: the imports, the attachment to the driver, spark/sc/sqlContext. It
carries no user's token or identity until ``_bind(path)`` reads them from a private file the
workspace writes when it hands the kernel to a context; only then are dbutils, MLflow and the
magics set up, before any of the user's code runs.
"""
from __future__ import annotations

import datetime as _dt
import decimal as _decimal
import importlib as _importlib
import json as _json
import os as _os
import signal as _signal
import sys as _sys
import threading as _threading

from brickyard.runtime import redact as _redact

# Before anything can print: secrets and the kernel's token never reach output.
_redact.install()

from brickyard.runtime import dbfs_paths as _dbfs_paths  # noqa: E402
from brickyard.runtime.attach import attach as _attach  # noqa: E402
from brickyard.runtime.mime import NOTEBOOK_EXIT_MIME as _EXIT_MIME  # noqa: E402
from brickyard.runtime.mime import TABLE_MIME  # noqa: E402

MAX_DISPLAY_ROWS = 1000

# tqdm.auto (imported by hyperopt and others) warns "IProgress not found" where ipywidgets is missing; its
# text progress bar is what cells show here, so the warning is only noise in the output of `import hyperopt`.
import warnings as _warnings  # noqa: E402

_warnings.filterwarnings("ignore", message="IProgress not found")

_DBFS_ROOT = _os.environ.get("BRICKYARD_DBFS_ROOT")
if _DBFS_ROOT:
    _dbfs_paths.install(_DBFS_ROOT)
_LIBRARY_DIR = _os.environ.get("BRICKYARD_LIBRARY_DIR")
if _LIBRARY_DIR and _LIBRARY_DIR not in _sys.path:
    _sys.path.insert(0, _LIBRARY_DIR)

_attached = _attach(job_group=_os.environ.get("BRICKYARD_CONTEXT_ID"))
spark = _attached.spark
sc = _attached.sc

from pyspark.sql import SQLContext as _SQLContext  # noqa: E402
from pyspark.sql.functions import udf  # noqa: E402,F401

sqlContext = _SQLContext(sc, spark)
sql = spark.sql
table = spark.table


_interrupt_python = False


def _on_interrupt(signum, frame):  # noqa: ANN001
    """Cancel this kernel's Spark jobs; interrupt pure-Python code when no job was running.

    The main thread may be blocked in a py4j call, so the Spark side is asked from another
    thread (its own JVM connection); that thread re-signals the main thread when there was
    no Spark job to cancel.
    """
    global _interrupt_python
    if _interrupt_python:
        _interrupt_python = False
        raise KeyboardInterrupt

    def _cancel() -> None:
        global _interrupt_python
        if _attached.cancel_own_jobs() == 0:
            _interrupt_python = True
            _signal.pthread_kill(_threading.main_thread().ident, _signal.SIGINT)

    _threading.Thread(target=_cancel, name="brickyard-cancel", daemon=True).start()


_signal.signal(_signal.SIGINT, _on_interrupt)


def _install_kernel_interrupt() -> None:
    """ipykernel swaps in default_int_handler around each execution; use ours instead."""
    try:
        kernel = get_ipython().kernel  # noqa: F821 - defined inside IPython
    except (NameError, AttributeError):
        return

    def _pre_handler_hook() -> None:
        kernel.saved_sigint_handler = _signal.signal(_signal.SIGINT, _on_interrupt)

    kernel.pre_handler_hook = _pre_handler_hook


_install_kernel_interrupt()


def _jsonable(value):  # noqa: ANN001, ANN202
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, _decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "asDict"):
        return _jsonable(value.asDict(recursive=True))
    return str(value)


def _table_bundle(df, limit: int = MAX_DISPLAY_ROWS) -> dict:  # noqa: ANN001
    """A display bundle for a Spark or pandas DataFrame: our table type plus text and HTML."""
    import pandas as pd

    if isinstance(df, pd.DataFrame):
        rows = df.head(limit).itertuples(index=False, name=None)
        schema = [{"name": str(c), "type": str(t), "metadata": "{}"} for c, t in df.dtypes.items()]
        data = [[_jsonable(v.item() if hasattr(v, "item") else v) for v in r] for r in rows]
        truncated = len(df) > limit
        pdf = df.head(limit)
    else:
        collected = df.limit(limit + 1).collect()
        truncated = len(collected) > limit
        collected = collected[:limit]
        # Databricks sends each type JSON-encoded: "\"long\"" or a struct's JSON.
        schema = [{"name": f.name, "type": _json.dumps(f.dataType.jsonValue()), "metadata": _json.dumps(f.metadata)}
                  for f in df.schema.fields]
        data = [[_jsonable(v) for v in row] for row in collected]
        pdf = pd.DataFrame(data, columns=[f.name for f in df.schema.fields])
    note = f"\n(showing the first {limit} rows)" if truncated else ""
    return {
        TABLE_MIME: {"schema": schema, "data": data, "truncated": truncated},
        "text/plain": pdf.to_string(max_rows=50) + note,
        "text/html": pdf.to_html(max_rows=50) + (f"<p>{note.strip()}</p>" if note else ""),
    }


def display(obj=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    """Databricks' display(): DataFrames as tables, figures as images, anything else as is."""
    from IPython.display import display as _ipy_display

    import pandas as pd

    try:
        from pyspark.sql import DataFrame as _SparkDF
    except ImportError:  # pragma: no cover
        _SparkDF = ()
    if isinstance(obj, (_SparkDF, pd.DataFrame)):
        _ipy_display(_table_bundle(obj), raw=True)
    elif isinstance(obj, list) and obj and all(hasattr(o, "_fields") or hasattr(o, "asDict") for o in obj):
        _ipy_display(_table_bundle(pd.DataFrame([getattr(o, "_asdict", lambda o=o: o.asDict())() for o in obj])),
                     raw=True)
    elif obj is None:
        import matplotlib.pyplot as plt

        if plt.get_fignums():
            plt.show()
    elif _is_figure(obj):
        _ipy_display(_figure_bundle(obj), raw=True)
    else:
        _ipy_display(obj)


def _is_figure(obj) -> bool:  # noqa: ANN001
    """A matplotlib Figure (or a seaborn grid holding one), without importing matplotlib for other objects."""
    import sys

    mpl_figure = sys.modules.get("matplotlib.figure")
    return mpl_figure is not None and isinstance(getattr(obj, "figure", obj), mpl_figure.Figure)


def _figure_bundle(obj) -> dict:  # noqa: ANN001
    """display(fig) as on Databricks: one PNG whatever the backend (Agg included), and not shown again at cell end."""
    import base64
    import io

    import matplotlib.pyplot as plt

    fig = getattr(obj, "figure", obj)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)  # the inline backend would otherwise draw it a second time when the cell ends
    return {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": repr(fig)}


def displayHTML(html: str) -> None:  # noqa: N802 - Databricks' name
    from IPython.display import HTML
    from IPython.display import display as _ipy_display

    _ipy_display(HTML(html))


def _brickyard_sql(text: str) -> None:
    """Run SQL statements; the last result is displayed as a table (SQL contexts use this)."""
    _frame.magic("sql", "", text)


# ---- dbutils, magics, notebook exit ------------------------------------------------------
from brickyard.runtime import dbutils as _dbutils_mod  # noqa: E402
from brickyard.runtime import magics as _magics  # noqa: E402

_PREDEFINED = ("spark", "sc", "sqlContext", "sql", "table", "udf", "display", "displayHTML")


def _new_dbutils(params=None, notebook_path=None):  # noqa: ANN001, ANN202
    return _dbutils_mod.from_env(params=params, notebook_path=notebook_path)


def _setup_frame():  # noqa: ANN202
    try:
        shell = get_ipython()  # noqa: F821
    except NameError:
        shell = None
    ns = shell.user_ns if shell is not None else globals()
    frame = _magics.Frame(ns, dbutils, _os.environ.get("BRICKYARD_NOTEBOOK_PATH"),
                          _LIBRARY_DIR, _DBFS_ROOT, _attached.cancel_own_jobs)
    base = {name: globals()[name] for name in _PREDEFINED}
    dbutils.notebook._runner = lambda p, t, a: frame.run_child(p, t, a, base, _new_dbutils)  # noqa: SLF001
    if shell is not None:
        _magics.install(shell, frame)
        shell.set_custom_exc((_dbutils_mod.NotebookExit, _dbutils_mod.RestartPython), _on_exit)
        _report_exit_as_success(shell)
    return frame


def _on_exit(shell, etype, value, tb, tb_offset=None):  # noqa: ANN001, ANN202, ARG001
    """dbutils.notebook.exit(value): publish the value; the runner ends the notebook with success.

    dbutils.library.restartPython() ends its cell the same way; the cell publishes the restart request
    (RESTART_PYTHON_MIME), which the workspace acts on once the cell is over.
    """
    from IPython.display import display as _ipy_display

    if isinstance(value, _dbutils_mod.RestartPython):
        from brickyard.runtime.mime import RESTART_PYTHON_MIME

        _ipy_display({RESTART_PYTHON_MIME: {"pid": _os.getpid()}, "text/plain": _dbutils_mod.RESTART_NOTE}, raw=True)
        return
    _ipy_display({_EXIT_MIME: {"value": value.value}, "text/plain": f"Notebook exited: {value.value}"}, raw=True)


def _report_exit_as_success(shell) -> None:  # noqa: ANN001
    """An exit is not an error: answer the execute request with status ok."""
    import inspect

    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return
    original = kernel.do_execute

    async def do_execute(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        reply = original(*args, **kwargs)
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, dict) and reply.get("ename") in ("NotebookExit", "RestartPython"):
            reply = {"status": "ok", "execution_count": reply.get("execution_count"), "user_expressions": {},
                     "payload": []}
        return reply

    kernel.do_execute = do_execute


# MLflow: the workspace tracks this kernel's runs and its Spark workers' runs; cells link to them.
from brickyard.runtime import mlflow_setup as _mlflow_setup  # noqa: E402

SPARE_ENV = "BRICKYARD_SPARE_KERNEL"
dbutils = getArgument = _frame = None


def _serve_dbfs_mnt() -> None:
    """/dbfs/mnt/<object-store mount> for local file APIs: a FUSE daemon with the user's token (runtime/dbfs_fuse.py).

    Never fails the kernel: when FUSE cannot be used, one line in the kernel log says why.
    """
    if not _DBFS_ROOT:
        return
    try:
        from brickyard.runtime import dbfs_fuse as _dbfs_fuse

        _dbfs_fuse.start_from_kernel(_DBFS_ROOT)
    except Exception as exc:  # noqa: BLE001
        log_fd = getattr(_sys.stderr, "_original_stdstream_copy", None)  # fd 2 goes to the notebook
        _os.write(log_fd if isinstance(log_fd, int) else 2,
                  f"brickyard dbfs-fuse: not started: {type(exc).__name__}: {exc}\n".encode())


def _bind_user() -> None:
    """The user-bound part: /dbfs/mnt, dbutils (the user's token), widgets, magics, MLflow."""
    global dbutils, getArgument, _frame  # noqa: PLW0603
    _serve_dbfs_mnt()
    dbutils = _new_dbutils()
    getArgument = dbutils.widgets.getArgument  # noqa: N806 - Databricks' name
    _frame = _setup_frame()
    _mlflow_setup.install(sc)


def _bind(path: str) -> None:
    """Give this spare kernel to its context: the user's variables from `path` (read, then deleted)."""
    if _os.environ.get(SPARE_ENV) != "1":
        raise RuntimeError("This kernel is bound already.")
    with open(path, encoding="utf-8") as f:
        env = _json.load(f)
    _os.remove(path)
    _os.environ.update({str(k): str(v) for k, v in env.items()})
    del _os.environ[SPARE_ENV]
    _importlib.invalidate_caches()  # packages installed on the cluster since the kernel started
    _bind_user()
    try:
        ns = get_ipython().user_ns  # noqa: F821
    except NameError:
        ns = globals()
    ns["dbutils"], ns["getArgument"] = dbutils, getArgument


if _os.environ.get(SPARE_ENV) != "1":
    _bind_user()

__all__ = ["spark", "sc", "sqlContext", "sql", "table", "udf", "display", "displayHTML", "dbutils", "getArgument",
           "_brickyard_sql"]
