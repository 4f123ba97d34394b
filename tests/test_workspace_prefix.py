"""`/Workspace/...` paths: Databricks' file-system form of a workspace path, accepted by the Workspace API."""
from __future__ import annotations

import base64

from databricks.sdk.service.workspace import ExportFormat, ImportFormat, Language, ObjectType


def test_workspace_prefix_names_the_same_objects(w, unique):
    base = f"/Users/admin/{unique('wsp')}"
    w.workspace.mkdirs(f"/Workspace{base}/sub")
    assert w.workspace.get_status(base).object_type == ObjectType.DIRECTORY
    source = "# Databricks notebook source\nprint('via prefix')\n"
    w.workspace.import_(f"/Workspace{base}/sub/nb", format=ImportFormat.SOURCE, language=Language.PYTHON,
                        content=base64.b64encode(source.encode()).decode())
    status = w.workspace.get_status(f"/Workspace{base}/sub/nb")
    # The object keeps its one path: the answer names it without the prefix, as Databricks does.
    assert status.object_type == ObjectType.NOTEBOOK and status.path == f"{base}/sub/nb"
    assert w.workspace.get_status(f"{base}/sub/nb").object_id == status.object_id
    assert [o.path for o in w.workspace.list(f"/Workspace{base}")] == [f"{base}/sub"]
    exported = base64.b64decode(w.workspace.export(f"/Workspace{base}/sub/nb", format=ExportFormat.SOURCE).content)
    assert b"print('via prefix')" in exported
    # /Workspace alone is the root, and no top-level folder named Workspace comes into being.
    assert w.workspace.get_status("/Workspace").path == "/"
    w.workspace.mkdirs("/Workspace")
    assert "/Workspace" not in [o.path for o in w.workspace.list("/")]
    # A folder called Workspace below the root is an ordinary folder.
    w.workspace.mkdirs(f"{base}/Workspace/inner")
    assert [o.path for o in w.workspace.list(f"/Workspace{base}/Workspace")] == [f"{base}/Workspace/inner"]
    w.workspace.delete(f"/Workspace{base}", recursive=True)
    assert not [o for o in w.workspace.list("/Users/admin") if o.path == base]
