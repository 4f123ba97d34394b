"""The workspace tree and notebook import/export, driven with databricks-sdk and raw HTTP."""
from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import pytest
from databricks.sdk.errors import (
    BadRequest,
    DatabricksError,
    NotFound,
    PermissionDenied,
    ResourceAlreadyExists,
)
from databricks.sdk.service.workspace import ExportFormat, ImportFormat, Language, ObjectType

from brickyard.runtime import formats

DATA = Path(__file__).parent / "data" / "notebooks"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture
def base(w, unique) -> str:
    """A fresh folder in the admin's home."""
    path = f"/Users/admin/{unique('ws')}"
    w.workspace.mkdirs(path)
    return path


@pytest.fixture(scope="module")
def alice(server):
    name = "alice-ws@example.com"
    _, token = server.new_user(name)
    return name, token, server.client(token)


def exported(w, path: str, fmt: ExportFormat) -> bytes:
    return base64.b64decode(w.workspace.export(path, format=fmt).content)


def canonical(nb: formats.Notebook) -> bytes:
    return formats.dumps(nb)


def walk(w, path: str) -> list[str]:
    """Every path below path, folders included."""
    found = []
    for obj in w.workspace.list(path):
        found.append(obj.path)
        if obj.object_type == ObjectType.DIRECTORY:
            found += walk(w, obj.path)
    return found


def error_of(resp) -> tuple[int, str]:
    return resp.status_code, resp.json().get("error_code")


# ---- the tree ------------------------------------------------------------------------------

def test_mkdirs_list_status_delete(w, base):
    w.workspace.mkdirs(f"{base}/a/b/c")
    w.workspace.mkdirs(f"{base}/a/b")  # existing folder: fine
    st = w.workspace.get_status(f"{base}/a/b")
    assert st.object_type == ObjectType.DIRECTORY and st.object_id > 0 and st.path == f"{base}/a/b"
    w.workspace.import_(f"{base}/a/nb", content=b64(b"print(1)"), format=ImportFormat.SOURCE,
                        language=Language.PYTHON)
    # the SDK's recursive walk yields the leaves, not the folders
    listed = {o.path: o for o in w.workspace.list(base, recursive=True)}
    assert set(listed) == {f"{base}/a/nb"}
    assert set(walk(w, base)) == {f"{base}/a", f"{base}/a/b", f"{base}/a/b/c", f"{base}/a/nb"}
    nb = listed[f"{base}/a/nb"]
    assert nb.object_type == ObjectType.NOTEBOOK and nb.language == Language.PYTHON
    assert nb.created_at > 0 and nb.modified_at >= nb.created_at
    later = [o.path for o in w.workspace.list(f"{base}/a", notebooks_modified_after=nb.modified_at + 1)]
    assert later == [f"{base}/a/b"]
    # list of a notebook path answers the notebook itself
    assert [o.path for o in w.workspace.list(f"{base}/a/nb")] == [f"{base}/a/nb"]
    with pytest.raises(ResourceAlreadyExists):
        w.workspace.mkdirs(f"{base}/a/nb/sub")
    with pytest.raises(DatabricksError) as err:
        w.workspace.delete(f"{base}/a")
    assert err.value.error_code == "DIRECTORY_NOT_EMPTY"
    w.workspace.delete(f"{base}/a", recursive=True)
    with pytest.raises(NotFound):
        w.workspace.get_status(f"{base}/a/nb")
    with pytest.raises(NotFound):
        w.workspace.delete(f"{base}/a")


def test_roots_and_bad_paths(server, w):
    assert w.workspace.get_status("/").object_type == ObjectType.DIRECTORY
    assert {o.path for o in w.workspace.list("/")} >= {"/Users", "/Shared"}
    r = server.api("POST", "/api/2.0/workspace/delete", json={"path": "/Shared", "recursive": True})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    for bad in ("relative/path", "/Users/admin/../x", "/Users/admin/\x00x"):
        r = server.api("GET", "/api/2.0/workspace/get-status", params={"path": bad})
        assert error_of(r) == (400, "INVALID_PARAMETER_VALUE"), bad
    r = server.api("GET", "/api/2.0/workspace/list", params={"path": "/Users/admin/nope"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")


def test_requires_a_token(server):
    import requests

    for method, path in (("GET", "/api/2.0/workspace/list?path=/"), ("POST", "/api/2.0/workspace/import"),
                         ("GET", "/api/2.0/workspace/export?path=/Shared")):
        r = requests.request(method, server.url + path, timeout=10)
        assert error_of(r) == (401, "UNAUTHENTICATED")


# ---- SOURCE --------------------------------------------------------------------------------

def test_source_round_trip_with_sdk(w, base):
    original = fixture("etl_pipeline.py")
    w.workspace.import_(f"{base}/etl", content=b64(original), format=ImportFormat.SOURCE,
                        language=Language.PYTHON)
    st = w.workspace.get_status(f"{base}/etl")
    assert st.object_type == ObjectType.NOTEBOOK and st.language == Language.PYTHON
    resp = w.workspace.export(f"{base}/etl", format=ExportFormat.SOURCE)
    assert resp.file_type == "py" and base64.b64decode(resp.content) == original
    with w.workspace.download(f"{base}/etl") as fh:
        assert fh.read() == original
    # import -> export -> import: the same notebook again
    w.workspace.import_(f"{base}/etl2", content=resp.content, format=ImportFormat.SOURCE)
    assert exported(w, f"{base}/etl2", ExportFormat.SOURCE) == original
    # the same cells are in the Jupyter export: magics kept, markdown as markdown
    ipynb = json.loads(exported(w, f"{base}/etl", ExportFormat.JUPYTER))
    kinds = [c["cell_type"] for c in ipynb["cells"]]
    assert kinds == ["markdown", "code", "code", "code", "code", "code", "code"]
    assert "".join(ipynb["cells"][4]["source"]).startswith("%sql\nSELECT pickup_date")
    assert "".join(ipynb["cells"][1]["source"]) == '%run ./config $env="dev"'


def test_source_language_detection(server, w, base):
    sql = fixture("daily_report.sql")
    # no language: the '-- Databricks notebook source' header says SQL
    r = server.api("POST", "/api/2.0/workspace/import",
                   json={"path": f"{base}/report", "format": "SOURCE", "content": b64(sql)})
    assert r.status_code == 200, r.text
    assert w.workspace.get_status(f"{base}/report").language == Language.SQL
    resp = w.workspace.export(f"{base}/report")
    assert resp.file_type == "sql" and base64.b64decode(resp.content) == sql
    # no header, no language, no extension: the language cannot be known
    r = server.api("POST", "/api/2.0/workspace/import",
                   json={"path": f"{base}/plain", "format": "SOURCE", "content": b64(b"SELECT 1")})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE") and "language" in r.json()["message"]
    # an explicit language makes a one-cell notebook of a plain file
    w.workspace.import_(f"{base}/plain", content=b64(b"SELECT 1"), format=ImportFormat.SOURCE,
                        language=Language.SQL)
    assert exported(w, f"{base}/plain", ExportFormat.SOURCE) == b"-- Databricks notebook source\nSELECT 1"


def test_upload_and_download_like_the_sdk_docs(w, base):
    # SDK default (SOURCE, language from the .py suffix): a notebook that keeps its name
    w.workspace.upload(f"{base}/notebook.py", io.BytesIO(b"print(1)"))
    assert w.workspace.get_status(f"{base}/notebook.py").object_type == ObjectType.NOTEBOOK
    with w.workspace.download(f"{base}/notebook.py") as fh:
        assert fh.read() == b"# Databricks notebook source\nprint(1)"
    # AUTO with a plain .py: a workspace file, bytes unchanged
    w.workspace.upload(f"{base}/file.py", io.BytesIO(b"print(1)"), format=ImportFormat.AUTO)
    st = w.workspace.get_status(f"{base}/file.py")
    assert st.object_type == ObjectType.FILE and st.size == 8
    with w.workspace.download(f"{base}/file.py") as fh:
        assert fh.read() == b"print(1)"
    # AUTO with a source header: a notebook named without its extension
    w.workspace.upload(f"{base}/etl.py", fixture("etl_pipeline.py"), format=ImportFormat.AUTO)
    assert w.workspace.get_status(f"{base}/etl").object_type == ObjectType.NOTEBOOK
    with pytest.raises(NotFound):
        w.workspace.get_status(f"{base}/etl.py")
    # AUTO with .ipynb, and a data file
    w.workspace.upload(f"{base}/churn.ipynb", fixture("churn_analysis.ipynb"), format=ImportFormat.AUTO)
    assert w.workspace.get_status(f"{base}/churn").language == Language.PYTHON
    csv = b"id,name\n1,a\n2,b\n"
    w.workspace.upload(f"{base}/data.csv", csv, format=ImportFormat.AUTO)
    assert w.workspace.get_status(f"{base}/data.csv").object_type == ObjectType.FILE
    assert w.workspace.download(f"{base}/data.csv").read() == csv
    resp = w.workspace.export(f"{base}/data.csv")
    assert base64.b64decode(resp.content) == csv and resp.file_type == "csv"
    # overwrite
    with pytest.raises(ResourceAlreadyExists):
        w.workspace.upload(f"{base}/data.csv", b"x", format=ImportFormat.AUTO)
    w.workspace.upload(f"{base}/data.csv", b"x", format=ImportFormat.AUTO, overwrite=True)
    assert w.workspace.download(f"{base}/data.csv").read() == b"x"
    names = {o.path.rsplit("/", 1)[1] for o in w.workspace.list(base)}
    assert names == {"notebook.py", "file.py", "etl", "churn", "data.csv"}


def test_multipart_import_raw(server, w, base):
    sql = fixture("daily_report.sql")
    form = {"path": f"{base}/mp", "format": "SOURCE", "language": "SQL", "overwrite": "false"}
    r = server.api("POST", "/api/2.0/workspace/import", data=form,
                   files={"content": ("daily_report.sql", sql, "application/octet-stream")})
    assert r.status_code == 200, r.text
    assert exported(w, f"{base}/mp", ExportFormat.SOURCE) == sql
    r = server.api("POST", "/api/2.0/workspace/import", data=form, files={"content": ("x.sql", b"SELECT 2")})
    assert error_of(r) == (409, "RESOURCE_ALREADY_EXISTS")
    form["overwrite"] = "true"
    r = server.api("POST", "/api/2.0/workspace/import", data=form, files={"content": ("x.sql", b"SELECT 2")})
    assert r.status_code == 200, r.text
    assert exported(w, f"{base}/mp", ExportFormat.SOURCE) == b"-- Databricks notebook source\nSELECT 2"
    r = server.api("POST", "/api/2.0/workspace/import", data={"path": f"{base}/m2"},
                   headers={"Content-Type": "multipart/form-data; boundary=zzz"})
    assert r.status_code == 400


# ---- JUPYTER -------------------------------------------------------------------------------

def test_jupyter_round_trip_keeps_outputs(w, base):
    original = fixture("churn_analysis.ipynb")
    w.workspace.import_(f"{base}/churn", content=b64(original), format=ImportFormat.JUPYTER)
    assert w.workspace.get_status(f"{base}/churn").language == Language.PYTHON
    first = exported(w, f"{base}/churn", ExportFormat.JUPYTER)
    src, out = json.loads(original), json.loads(first)
    assert [c["cell_type"] for c in out["cells"]] == [c["cell_type"] for c in src["cells"]]
    for a, b in zip(src["cells"], out["cells"]):
        assert "".join(a["source"]) == "".join(b["source"])
        assert a.get("metadata") == b.get("metadata")
    kinds = [o["output_type"] for c in out["cells"] for o in c.get("outputs", [])]
    assert kinds == ["stream", "execute_result", "display_data", "error"]
    png = out["cells"][3]["outputs"][0]
    assert png["data"]["image/png"] == src["cells"][3]["outputs"][0]["data"]["image/png"]
    assert png["metadata"] == {"needs_background": "light"}
    assert out["cells"][4]["outputs"][0]["ename"] == "KeyError"
    assert out["metadata"]["language_info"]["version"] == "3.11.7"
    # import -> export -> import -> export: a fixed point, and the same model
    w.workspace.import_(f"{base}/churn2", content=b64(first), format=ImportFormat.JUPYTER)
    second = exported(w, f"{base}/churn2", ExportFormat.JUPYTER)
    assert json.loads(second)["cells"] == out["cells"]
    assert canonical(formats.read_notebook("JUPYTER", first, "n")) == canonical(
        formats.read_notebook("JUPYTER", original, "n"))
    # the SOURCE view of it: markdown and %sql cells as MAGIC lines
    source = exported(w, f"{base}/churn", ExportFormat.SOURCE).decode()
    assert "# MAGIC %md\n# MAGIC # Churn analysis" in source and "# MAGIC %sql" in source


def test_jupyter_language_from_metadata(w, base):
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": "println(1)"}],
          "metadata": {"kernelspec": {"name": "spylon", "language": "scala", "display_name": "Scala"}},
          "nbformat": 4, "nbformat_minor": 0}
    w.workspace.import_(f"{base}/sc", content=b64(json.dumps(nb).encode()), format=ImportFormat.JUPYTER)
    assert w.workspace.get_status(f"{base}/sc").language == Language.SCALA
    resp = w.workspace.export(f"{base}/sc", format=ExportFormat.SOURCE)
    assert resp.file_type == "scala"
    assert base64.b64decode(resp.content) == b"// Databricks notebook source\nprintln(1)"


# ---- DBC -----------------------------------------------------------------------------------

def test_dbc_import_creates_the_tree(w, base):
    w.workspace.import_(f"{base}/course", content=b64(fixture("course.dbc")), format=ImportFormat.DBC)
    objects = {o.path[len(base) + 1:]: o for o in w.workspace.list(base, recursive=True)}
    assert set(objects) == {"course/01-intro", "course/labs/02-lab", "course/labs/advanced/03-scala"}
    assert objects["course/01-intro"].language == Language.PYTHON
    assert objects["course/labs/02-lab"].language == Language.SQL
    assert objects["course/labs/advanced/03-scala"].language == Language.SCALA
    assert w.workspace.get_status(f"{base}/course/labs").object_type == ObjectType.DIRECTORY
    intro = exported(w, f"{base}/course/01-intro", ExportFormat.SOURCE).decode()
    assert intro.startswith("# Databricks notebook source\n# MAGIC %md # Introduction")
    assert "# DBTITLE 1,A table\n# MAGIC %sql SELECT 1" in intro
    cells = json.loads(exported(w, f"{base}/course/01-intro", ExportFormat.JUPYTER))["cells"]
    assert cells[1]["outputs"] == [{"name": "stdout", "output_type": "stream", "text": ["42\n"]}]
    assert cells[3]["outputs"][0]["output_type"] == "error"
    assert cells[3]["outputs"][0]["evalue"] == "division by zero"
    # overwrite does not apply to DBC: the target must be new
    with pytest.raises(ResourceAlreadyExists):
        w.workspace.import_(f"{base}/course", content=b64(fixture("course.dbc")), format=ImportFormat.DBC,
                            overwrite=True)


def test_dbc_folder_export_round_trip(w, base):
    w.workspace.import_(f"{base}/course", content=b64(fixture("course.dbc")), format=ImportFormat.DBC)
    w.workspace.mkdirs(f"{base}/course/empty")
    archive = w.workspace.download(f"{base}/course", format=ExportFormat.DBC).read()
    names = set(zipfile.ZipFile(io.BytesIO(archive)).namelist())
    assert {"course/01-intro.python", "course/labs/02-lab.sql", "course/labs/advanced/03-scala.scala",
            "course/empty/"} <= names
    doc = json.loads(zipfile.ZipFile(io.BytesIO(archive)).read("course/01-intro.python"))
    assert doc["version"] == "NotebookV1" and doc["language"] == "python"
    assert [c["position"] for c in doc["commands"]] == [1.0, 2.0, 3.0, 4.0]
    w.workspace.import_(f"{base}/copy", content=b64(archive), format=ImportFormat.DBC)
    assert w.workspace.get_status(f"{base}/copy/empty").object_type == ObjectType.DIRECTORY
    for rel in ("01-intro", "labs/02-lab", "labs/advanced/03-scala"):
        a = exported(w, f"{base}/course/{rel}", ExportFormat.DBC)
        b = exported(w, f"{base}/copy/{rel}", ExportFormat.DBC)
        nb_a = formats.read_archive(a, 1 << 24, 1 << 24)[0].notebook
        nb_b = formats.read_archive(b, 1 << 24, 1 << 24)[0].notebook
        assert canonical(nb_a) == canonical(nb_b), rel
        assert nb_a.cells and all(c.id for c in nb_a.cells)
    # a single notebook as DBC, and back
    single = exported(w, f"{base}/course/01-intro", ExportFormat.DBC)
    assert zipfile.ZipFile(io.BytesIO(single)).namelist() == ["01-intro.python"]
    w.workspace.import_(f"{base}/single", content=b64(single), format=ImportFormat.DBC)
    assert w.workspace.get_status(f"{base}/single").object_type == ObjectType.NOTEBOOK
    assert exported(w, f"{base}/single", ExportFormat.JUPYTER) == exported(
        w, f"{base}/course/01-intro", ExportFormat.JUPYTER).replace(b'"01-intro"', b'"single"')


def test_folder_export_as_source_zip(w, base):
    w.workspace.import_(f"{base}/course", content=b64(fixture("course.dbc")), format=ImportFormat.DBC)
    w.workspace.upload(f"{base}/course/data.csv", b"a,b\n", format=ImportFormat.AUTO)
    resp = w.workspace.export(f"{base}/course", format=ExportFormat.SOURCE)
    assert resp.file_type == "zip"
    zf = zipfile.ZipFile(io.BytesIO(base64.b64decode(resp.content)))
    assert set(zf.namelist()) == {"course/01-intro.py", "course/labs/02-lab.sql",
                                  "course/labs/advanced/03-scala.scala"}
    auto = zipfile.ZipFile(io.BytesIO(w.workspace.download(f"{base}/course", format=ExportFormat.AUTO).read()))
    assert auto.read("course/data.csv") == b"a,b\n"
    # SOURCE without a language imports such a zip as a folder
    w.workspace.import_(f"{base}/copy", content=resp.content, format=ImportFormat.SOURCE)
    assert sorted(o.path[len(base) + 1:] for o in w.workspace.list(f"{base}/copy", recursive=True)) == [
        "copy/01-intro", "copy/labs/02-lab", "copy/labs/advanced/03-scala"]
    for rel in ("01-intro", "labs/02-lab", "labs/advanced/03-scala"):
        assert exported(w, f"{base}/copy/{rel}", ExportFormat.SOURCE) == exported(
            w, f"{base}/course/{rel}", ExportFormat.SOURCE)
    with pytest.raises(BadRequest):
        w.workspace.export(f"{base}/course", format=ExportFormat.JUPYTER)


# ---- HTML ----------------------------------------------------------------------------------

def test_html_round_trip(w, base):
    original = fixture("sales_dashboard.html")
    w.workspace.import_(f"{base}/dash", content=b64(original), format=ImportFormat.HTML)
    assert w.workspace.get_status(f"{base}/dash").language == Language.PYTHON
    page = exported(w, f"{base}/dash", ExportFormat.HTML)
    assert b"var __DATABRICKS_NOTEBOOK_MODEL = '" in page and b"<title>dash - Databricks</title>" in page
    cells = json.loads(exported(w, f"{base}/dash", ExportFormat.JUPYTER))["cells"]
    assert cells[0]["cell_type"] == "markdown"
    assert cells[1]["outputs"][0]["text"] == ["total: 1234.5\n"]
    assert cells[2]["outputs"][0]["data"]["text/html"] == ["<b>100% done</b>"]
    w.workspace.upload(f"{base}/dash2.html", page, format=ImportFormat.AUTO)
    assert w.workspace.get_status(f"{base}/dash2").object_type == ObjectType.NOTEBOOK
    again = exported(w, f"{base}/dash2", ExportFormat.HTML)
    model = canonical(formats.read_notebook("HTML", original, "x"))
    assert canonical(formats.read_notebook("HTML", page, "x")) == model
    assert canonical(formats.read_notebook("HTML", again, "x")) == model


def test_direct_download_headers(server, w, base):
    w.workspace.import_(f"{base}/etl", content=b64(fixture("etl_pipeline.py")), format=ImportFormat.SOURCE,
                        language=Language.PYTHON)
    cases = {"SOURCE": ("text/plain", "etl.py"), "JUPYTER": ("application/x-ipynb+json", "etl.ipynb"),
             "HTML": ("text/html", "etl.html"), "DBC": ("application/octet-stream", "etl.dbc")}
    for fmt, (media, filename) in cases.items():
        r = server.api("GET", "/api/2.0/workspace/export",
                       params={"path": f"{base}/etl", "format": fmt, "direct_download": "true"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(media), fmt
        assert f'filename="{filename}"' in r.headers["content-disposition"], fmt
    r = server.api("GET", "/api/2.0/workspace/export", params={"path": f"{base}/etl", "format": "JUPYTER"})
    assert r.json()["file_type"] == "ipynb"


# ---- errors and bad content ----------------------------------------------------------------

def test_import_errors(server, w, base):
    def imp(**body):
        body.setdefault("path", f"{base}/x")
        body.setdefault("content", b64(b"print(1)"))
        return server.api("POST", "/api/2.0/workspace/import", json=body)

    assert error_of(imp(format="PDF")) == (400, "INVALID_PARAMETER_VALUE")
    assert error_of(imp(format="source", language="PYTHON")) == (400, "INVALID_PARAMETER_VALUE")
    assert error_of(imp(format="R_MARKDOWN")) == (400, "INVALID_PARAMETER_VALUE")
    assert error_of(imp(format="SOURCE", language="COBOL")) == (400, "INVALID_PARAMETER_VALUE")
    assert error_of(imp(format="SOURCE", language="PYTHON", content="@@not base64@@")) == (
        400, "INVALID_PARAMETER_VALUE")
    assert error_of(imp(format="SOURCE", language="PYTHON", path="x")) == (400, "INVALID_PARAMETER_VALUE")
    r = imp(format="SOURCE", language="PYTHON", path=f"{base}/missing/parent/x")
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert imp(format="SOURCE", language="PYTHON").status_code == 200
    assert error_of(imp(format="SOURCE", language="PYTHON")) == (409, "RESOURCE_ALREADY_EXISTS")
    w.workspace.mkdirs(f"{base}/folder")
    r = imp(format="SOURCE", language="PYTHON", path=f"{base}/folder", overwrite=True)
    assert error_of(r) == (409, "RESOURCE_ALREADY_EXISTS")
    r = server.api("POST", "/api/2.0/workspace/import", data=b"{not json",
                   headers={"Content-Type": "application/json"})
    assert error_of(r) == (400, "MALFORMED_REQUEST")
    r = server.api("GET", "/api/2.0/workspace/export", params={"path": f"{base}/nope"})
    assert error_of(r) == (404, "RESOURCE_DOES_NOT_EXIST")
    r = server.api("GET", "/api/2.0/workspace/export", params={"path": f"{base}/x", "format": "XML"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")
    w.workspace.upload(f"{base}/f.txt", b"hello", format=ImportFormat.AUTO)
    r = server.api("GET", "/api/2.0/workspace/export", params={"path": f"{base}/f.txt", "format": "JUPYTER"})
    assert error_of(r) == (400, "INVALID_PARAMETER_VALUE")


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _leftovers(w, base) -> list[str]:
    return walk(w, base)


def test_bad_notebooks_leave_nothing(server, w, base):
    good = zipfile.ZipFile(io.BytesIO(fixture("course.dbc"))).read("course/01-intro.python")
    ipynb = fixture("churn_analysis.ipynb")
    junk = bytes(range(256)) * 8
    cases = [
        ("JUPYTER", ipynb[: len(ipynb) // 2], "INVALID_PARAMETER_VALUE"),
        ("JUPYTER", junk, "INVALID_PARAMETER_VALUE"),
        ("JUPYTER", b'{"nbformat": 3, "cells": []}', "INVALID_PARAMETER_VALUE"),
        ("SOURCE", junk, "INVALID_PARAMETER_VALUE"),
        ("HTML", b"<html><body>not an export</body></html>", "INVALID_PARAMETER_VALUE"),
        ("DBC", junk, "INVALID_PARAMETER_VALUE"),
        ("DBC", _zip({"course/a.python": good, "../evil.python": good}), "INVALID_PARAMETER_VALUE"),
        ("DBC", _zip({"course/a.python": good, "/etc/evil.python": good}), "INVALID_PARAMETER_VALUE"),
        ("DBC", _zip({"course/a.python": good, "course/b.python": b'{"version": "NotebookV1", "comm'}),
         "INVALID_PARAMETER_VALUE"),
        # fails while writing (path too long) after the first notebook: the transaction undoes it all
        ("DBC", _zip({"course/a.python": good, "course/" + "x" * 4100 + ".python": good}),
         "INVALID_PARAMETER_VALUE"),
        ("DBC", _zip({"course/a.python": good, "course/big.python": b"\0" * (11 * 1024 * 1024)}),
         "MAX_NOTEBOOK_SIZE_EXCEEDED"),
        ("DBC", _zip({f"course/n{i}.python": b" " * (9 * 1024 * 1024) for i in range(12)}),
         "MAX_NOTEBOOK_SIZE_EXCEEDED"),
    ]
    for fmt, content, code in cases:
        r = server.api("POST", "/api/2.0/workspace/import",
                       json={"path": f"{base}/bad", "format": fmt, "language": "PYTHON", "content": b64(content)})
        assert error_of(r) == (400, code), (fmt, r.text)
        assert "Traceback" not in r.text
        assert _leftovers(w, base) == [], fmt
    with pytest.raises(NotFound):
        w.workspace.get_status("/Users/evil.python")


def declared_upload(server, size: int) -> tuple[int, str]:
    """POST an import whose Content-Length claims size bytes but sends only a few."""
    import http.client
    from urllib.parse import urlparse

    url = urlparse(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("POST", "/api/2.0/workspace/import")
        conn.putheader("Authorization", f"Bearer {server.token}")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        conn.send(b'{"path": "/Users/admin/huge", "content": "')
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())["error_code"]
    finally:
        conn.close()


def test_size_limits(server, w, base):
    big = b64(b"#" * (10 * 1024 * 1024 + 10))
    r = server.api("POST", "/api/2.0/workspace/import",
                   json={"path": f"{base}/big", "format": "SOURCE", "language": "PYTHON", "content": big})
    assert error_of(r) == (400, "MAX_NOTEBOOK_SIZE_EXCEEDED")
    # declared sizes are refused before the body is read
    assert declared_upload(server, 20 * 1024 * 1024) == (400, "MAX_NOTEBOOK_SIZE_EXCEEDED")
    # a declared 1 GB upload gets the same clear 400, not the app-wide 413
    assert declared_upload(server, 1 << 30) == (400, "MAX_NOTEBOOK_SIZE_EXCEEDED")
    assert _leftovers(w, base) == []


# ---- permissions ---------------------------------------------------------------------------

def test_permissions(server, w, alice, unique):
    name, token, aw = alice
    home = f"/Users/{name}"
    mine = f"{home}/{unique('p')}"
    aw.workspace.mkdirs(mine)
    aw.workspace.import_(f"{mine}/nb", content=b64(b"print(1)"), format=ImportFormat.SOURCE,
                         language=Language.PYTHON)
    shared = f"/Shared/{unique('s')}"
    aw.workspace.upload(f"{shared}.py", b"print(2)", format=ImportFormat.AUTO)
    assert aw.workspace.get_status(f"{shared}.py").object_type == ObjectType.FILE
    # the admin's home: not readable, not writable
    admin_nb = f"/Users/admin/{unique('secret')}"
    w.workspace.import_(admin_nb, content=b64(b"x = 1"), format=ImportFormat.SOURCE, language=Language.PYTHON)
    for call in (lambda: aw.workspace.get_status(admin_nb),
                 lambda: aw.workspace.export(admin_nb),
                 lambda: list(aw.workspace.list("/Users/admin")),
                 lambda: aw.workspace.delete(admin_nb),
                 lambda: aw.workspace.mkdirs("/Users/admin/x"),
                 lambda: aw.workspace.import_("/Users/admin/y", content=b64(b"1"), format=ImportFormat.SOURCE,
                                              language=Language.PYTHON),
                 lambda: aw.workspace.mkdirs("/elsewhere"),
                 lambda: aw.workspace.delete(home, recursive=True)):
        with pytest.raises(PermissionDenied):
            call()
    r = server.api("GET", "/api/2.0/workspace/get-status", token=token, params={"path": "/Users/admin/none"})
    assert error_of(r) == (403, "PERMISSION_DENIED")
    # the roots are readable; /Users shows only the caller's own home
    assert [o.path for o in aw.workspace.list("/Users")] == [home]
    assert {o.path for o in aw.workspace.list("/")} == {"/Users", "/Shared"}
    # admins read and change everything
    assert w.workspace.get_status(f"{mine}/nb").object_type == ObjectType.NOTEBOOK
    assert exported(w, f"{mine}/nb", ExportFormat.SOURCE) == b"# Databricks notebook source\nprint(1)"
    assert any(o.path == home for o in w.workspace.list("/Users"))
    aw.workspace.delete(mine, recursive=True)
    aw.workspace.delete(f"{shared}.py")
