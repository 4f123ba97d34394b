"""The canonical notebook model and its readers/writers, on realistic sample files."""
from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest

from brickyard.runtime import formats
from brickyard.runtime.formats import Cell, Notebook, NotebookFormatError, NotebookTooLarge

DATA = Path(__file__).parent / "data" / "notebooks"
MB = 1024 * 1024


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_cell_magic_api():
    assert Cell("%md # Title\ntext").magic == "md"
    assert Cell("%md # Title\ntext").body == "# Title\ntext"
    assert Cell("%md\n# Title").body == "# Title"
    assert Cell("%run ./config $env=\"dev\"").magic_args == './config $env="dev"'
    sql = Cell("%sql\nSELECT 1")
    assert (sql.magic, sql.body, sql.language("PYTHON")) == ("sql", "SELECT 1", "SQL")
    assert Cell("%md-sandbox <b>x</b>").is_markdown
    plain = Cell("x = 1 % 2")
    assert (plain.magic, plain.body, plain.language("SCALA")) == (None, "x = 1 % 2", "SCALA")
    assert Cell("%pip install mlflow").language("PYTHON") == "PIP"


def test_canonical_json_round_trip():
    nb = Notebook("n", "SQL", [Cell("SELECT 1", outputs=[{"output_type": "stream", "name": "stdout",
                                                          "text": "1\n"}], id="c1", execution_count=3)])
    data = formats.dumps(nb)
    assert formats.dumps(formats.loads(data)) == data
    assert json.loads(data)["cells"][0]["id"] == "c1"
    with pytest.raises(NotebookFormatError):
        formats.loads(json.dumps({"language": "COBOL", "cells": []}))


@pytest.mark.parametrize("name, language", [("etl_pipeline.py", "PYTHON"), ("daily_report.sql", "SQL")])
def test_source_fixtures_round_trip_byte_for_byte(name, language):
    data = read(name)
    nb = formats.read_notebook("SOURCE", data, name.split(".")[0], extension="." + name.split(".")[1])
    assert nb.language == language
    assert formats.write_notebook("SOURCE", nb, 1) == data


def test_source_cells_titles_and_magics():
    nb = formats.read_notebook("SOURCE", read("etl_pipeline.py"), "etl")
    magics = [c.magic for c in nb.cells]
    assert magics == ["md", "run", None, None, "sql", "sh", None]
    assert nb.cells[0].body.startswith("# ETL pipeline\n\nLoads the raw trips")
    assert nb.cells[2].metadata == {"title": "Read the raw data"}
    assert nb.cells[4].body.startswith("SELECT pickup_date, count(*) AS trips\nFROM")


def test_source_scala_and_r_and_headerless():
    scala = b"// Databricks notebook source\nval x = 1\n\n// COMMAND ----------\n\n// MAGIC %md\n// MAGIC hi"
    nb = formats.read_notebook("SOURCE", scala, "s")
    assert nb.language == "SCALA" and [c.source for c in nb.cells] == ["val x = 1", "%md\nhi"]
    assert formats.write_notebook("SOURCE", nb, 1) == scala
    r = formats.read_notebook("SOURCE", b"# Databricks notebook source\nx <- 1", "r", extension=".r")
    assert r.language == "R"
    one = formats.read_notebook("SOURCE", b"\nimport os\nprint(os.name)\n", "p", language="PYTHON")
    assert [c.source for c in one.cells] == ["import os\nprint(os.name)"]
    with pytest.raises(NotebookFormatError, match="language"):
        formats.read_notebook("SOURCE", b"import os", "p")
    with pytest.raises(NotebookFormatError):
        formats.read_notebook("SOURCE", b"\xff\xfe\x00junk", "p", language="PYTHON")


@pytest.mark.parametrize("minor", [0, 1, 2, 3, 4, 5])
def test_jupyter_any_nbformat_4_minor(minor):
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": ["1 + 1"]}
    if minor >= 5:
        cell["id"] = "abc"
    doc = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": minor}
    nb = formats.read_notebook("JUPYTER", json.dumps(doc).encode(), "n")
    assert nb.language == "PYTHON" and nb.cells[0].source == "1 + 1"
    again = json.loads(formats.write_notebook("JUPYTER", nb, 1))
    assert again["nbformat"] == 4 and again["nbformat_minor"] == (5 if minor >= 5 else 4)
    assert ("id" in again["cells"][0]) == (minor >= 5)


def test_jupyter_fixture_model():
    nb = formats.read_notebook("JUPYTER", read("churn_analysis.ipynb"), "churn")
    assert [c.magic for c in nb.cells] == ["md", None, None, None, None, "sql", None]
    assert nb.cells[0].source == "%md\n# Churn analysis\n\nExploring the *customers* table."
    assert nb.cells[1].outputs == [{"name": "stdout", "output_type": "stream", "text": "rows: 7043\ncolumns: 21\n"}]
    assert nb.cells[3].outputs[0]["data"]["text/plain"] == "<Figure size 640x480 with 1 Axes>"
    assert nb.cells[4].outputs[0]["output_type"] == "error"
    assert nb.cells[6].metadata == {"jupyter.raw": True}
    written = json.loads(formats.write_notebook("JUPYTER", nb, 1))
    assert written["cells"][6]["cell_type"] == "raw"
    assert written["metadata"]["application/vnd.databricks.v1+notebook"]["notebookName"] == "churn"


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"cells": {}}', b'{"nbformat": 3, "cells": []}',
                                     b'{"nbformat": 4, "cells": [{"cell_type": "bogus"}]}',
                                     b'{"nbformat": 4, "cells": [{"cell_type": "code", "source": 5}]}'])
def test_jupyter_rejects_bad_documents(content):
    with pytest.raises(NotebookFormatError):
        formats.read_notebook("JUPYTER", content, "bad")


def test_dbc_fixture_tree_and_outputs():
    entries = formats.read_archive(read("course.dbc"), 10 * MB, 100 * MB)
    assert [(e.path, e.notebook.language if e.notebook else None) for e in entries] == [
        ("01-intro", "PYTHON"), ("labs", None), ("labs/02-lab", "SQL"), ("labs/advanced", None),
        ("labs/advanced/03-scala", "SCALA")]
    intro = entries[0].notebook
    assert [c.magic for c in intro.cells] == ["md", None, "sql", None]
    assert intro.cells[1].outputs == [{"output_type": "stream", "name": "stdout", "text": "42\n"}]
    table = intro.cells[2].outputs[0]["data"]["application/vnd.databricks.result+json"]
    assert table["type"] == "table" and table["data"] == [[1, "a"]]
    assert intro.cells[2].metadata == {"title": "A table"}
    err = intro.cells[3].outputs[0]
    assert (err["ename"], err["evalue"]) == ("ZeroDivisionError", "division by zero")
    # archive -> model -> archive -> model is stable
    rewritten = formats.write_archive("course", [(e.path, e.notebook, 10) for e in entries])
    again = formats.read_archive(rewritten, 10 * MB, 100 * MB)
    assert [(e.path, e.notebook and formats.dumps(e.notebook)) for e in again] == [
        (e.path, e.notebook and formats.dumps(e.notebook)) for e in entries]


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("member", ["../x.python", "a/../../x.python", "/abs/x.python", "C:/x.python",
                                    "a\\..\\x.python", "a/./x.python"])
def test_dbc_rejects_unsafe_names(member):
    good = json.dumps({"version": "NotebookV1", "language": "python", "commands": []})
    with pytest.raises(NotebookFormatError, match="Unsafe"):
        formats.read_archive(_zip({"ok/a.python": good, member: good}), 10 * MB, 100 * MB)


def test_dbc_limits_and_junk():
    with pytest.raises(NotebookTooLarge):
        formats.read_archive(_zip({"a.python": b"\0" * (2 * MB)}), 1 * MB, 100 * MB)
    with pytest.raises(NotebookTooLarge):
        formats.read_archive(_zip({f"n{i}.python": b" " * MB for i in range(5)}), 2 * MB, 4 * MB)
    with pytest.raises(NotebookFormatError):
        formats.read_archive(b"PK\x03\x04 not really a zip", MB, MB)
    with pytest.raises(NotebookFormatError, match="no notebooks"):
        formats.read_archive(_zip({"readme.txt": b"hi"}), MB, MB)
    with pytest.raises(NotebookFormatError, match="both a folder and a notebook"):
        nb = json.dumps({"version": "NotebookV1", "language": "python", "commands": []})
        formats.read_archive(_zip({"a.python": nb, "a/b.python": nb}), MB, MB)


def test_html_fixture_and_round_trip():
    nb = formats.read_notebook("HTML", read("sales_dashboard.html"), "dash")
    assert [c.magic for c in nb.cells] == ["md", None, None]
    assert nb.cells[2].outputs == [{"output_type": "display_data", "data": {"text/html": "<b>100% done</b>"},
                                    "metadata": {}}]
    page = formats.write_notebook("HTML", nb, 42)
    assert formats.dumps(formats.read_notebook("HTML", page, "dash")) == formats.dumps(nb)
    # the model is base64 of the URL-encoded NotebookV1 JSON, as Databricks writes it
    encoded = page.decode().split("__DATABRICKS_NOTEBOOK_MODEL = '")[1].split("'")[0]
    doc = json.loads(__import__("urllib.parse").parse.unquote(base64.b64decode(encoded).decode()))
    assert doc["version"] == "NotebookV1" and doc["commands"][0]["command"].startswith("%md")
    # outputs are shown in a sandbox, never run in the page
    assert b"<iframe class=\"output\" sandbox" in page and b"<b>100% done</b>" not in page


def test_html_job_run_style_double_encoding():
    doc = {"version": "NotebookV1", "language": "sql", "commands": [{"command": "SELECT 1", "position": 1}]}
    encoded = quote(base64.b64encode(quote(json.dumps(doc)).encode()).decode())
    page = f"<script>var __DATABRICKS_NOTEBOOK_MODEL = '{encoded}';</script>".encode()
    nb = formats.read_notebook("HTML", page, "j")
    assert nb.language == "SQL" and nb.cells[0].source == "SELECT 1"
    with pytest.raises(NotebookFormatError):
        formats.read_notebook("HTML", b"<script>var __DATABRICKS_NOTEBOOK_MODEL = '!!!';</script>", "j")


def test_detect_auto():
    assert formats.detect("/a/etl.py", read("etl_pipeline.py")) == "SOURCE"
    assert formats.detect("/a/etl.py", b"print(1)") == "FILE"
    assert formats.detect("/a/etl", read("etl_pipeline.py")) == "SOURCE"
    assert formats.detect("/a/n.ipynb", b"{}") == "JUPYTER"
    assert formats.detect("/a/n", read("churn_analysis.ipynb")) == "JUPYTER"
    assert formats.detect("/a/c.dbc", b"") == "DBC"
    assert formats.detect("/a/d.html", read("sales_dashboard.html")) == "HTML"
    assert formats.detect("/a/page.html", b"<html></html>") == "FILE"
    assert formats.detect("/a/data.csv", b"# Databricks notebook source\n") == "FILE"
    assert formats.strip_extension("/a/etl.py") == "/a/etl"
    assert formats.strip_extension("/a/data.csv") == "/a/data.csv"


def test_source_zip_round_trip_skips_plain_files():
    etl = formats.read_notebook("SOURCE", read("etl_pipeline.py"), "etl")
    report = formats.read_notebook("SOURCE", read("daily_report.sql"), "report")
    data = formats.write_source_zip("proj", [("etl", etl), ("sql/report", report), ("helper.py", b"x = 1")])
    assert sorted(zipfile.ZipFile(io.BytesIO(data)).namelist()) == [
        "proj/etl.py", "proj/helper.py", "proj/sql/report.sql"]
    entries = formats.read_archive(data, 10 * MB, 100 * MB, kind="SOURCE")
    assert [(e.path, e.notebook and e.notebook.language) for e in entries] == [
        ("etl", "PYTHON"), ("sql", None), ("sql/report", "SQL")]
    assert formats.write_notebook("SOURCE", entries[0].notebook, 1) == read("etl_pipeline.py")
