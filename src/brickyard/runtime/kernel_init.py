"""Start-up code of every notebook and execution context kernel on a cluster.

Executed by the kernel as ``from brickyard.runtime.kernel_init import *``: it attaches to the
cluster's driver and predefines what Databricks notebooks expect.
"""
from __future__ import annotations

import datetime as _dt
import decimal as _decimal
import json as _json
import os as _os
import signal as _signal
import threading as _threading

from brickyard.runtime.attach import attach as _attach

from brickyard.runtime.mime import TABLE_MIME  # noqa: E402
MAX_DISPLAY_ROWS = 1000

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
    else:
        _ipy_display(obj)


def displayHTML(html: str) -> None:  # noqa: N802 - Databricks' name
    from IPython.display import HTML
    from IPython.display import display as _ipy_display

    _ipy_display(HTML(html))


def _split_sql(text: str) -> list[str]:
    """Split on semicolons outside quotes and comments."""
    out, buf, quote, i = [], [], None, 0
    while i < len(text):
        ch = text[i]
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
            buf.append(ch)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif ch == ";":
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    out.append("".join(buf))
    return [s.strip() for s in out if s.strip()]


def _brickyard_sql(text: str) -> None:
    """Run SQL statements; the last result is displayed as a table."""
    result = None
    for statement in _split_sql(text):
        result = spark.sql(statement)
    if result is not None:
        display(result)


__all__ = ["spark", "sc", "sqlContext", "sql", "table", "udf", "display", "displayHTML", "_brickyard_sql"]
