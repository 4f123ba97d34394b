"""Workspace pages in a real browser: folders, import (file and URL), export, move/rename/delete,
the notebook page's outputs (escaped text, sandboxed HTML, images, errors, tables) and Run on cluster."""
from __future__ import annotations

import base64
import http.server
import io
import json
import re
import threading
import zipfile
from pathlib import Path

import pytest
from databricks.sdk.errors import NotFound
from databricks.sdk.service.workspace import ExportFormat, ImportFormat, Language, ObjectType
from ui_support import shot

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "wine-lab" / "samples" / "BaseExperiment.ipynb"
SCRIPT = "<script>window.__pwned=1</script>"
# A 1x1 PNG.
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def _export(w, path: str, fmt: ExportFormat) -> bytes:
    return base64.b64decode(w.workspace.export(path, format=fmt).content)


def _open_menu(page, selector: str) -> None:  # noqa: ANN001
    page.click(f"{selector} > summary")


def _ensure_folder_via_page(page, w, parent: str, name: str) -> str:  # noqa: ANN001
    path = f"{parent}/{name}"
    try:
        info = w.workspace.get_status(path)
        assert info.object_type == ObjectType.DIRECTORY
        return path
    except NotFound:
        pass
    page.goto(f"/workspace?path={parent}")
    page.click("#create-folder > summary")
    page.fill("#create-folder-form input[name=name]", name)
    with page.expect_navigation():
        page.click("#create-folder-form button[type=submit]")
    assert f"Folder {name} created." in page.locator(".flash-success").inner_text()
    assert w.workspace.get_status(path).object_type == ObjectType.DIRECTORY
    return path


def test_import_ipynb_into_samples_and_export(page, w, server):
    me = w.current_user.me().user_name
    page.goto("/workspace")
    assert page.locator("#folder-path").inner_text() == f"/Users/{me}"
    samples = _ensure_folder_via_page(page, w, f"/Users/{me}", "samples")
    page.goto(f"/workspace?path={samples}")
    shot(page, "workspace-folder")
    page.click("#import > summary")
    page.set_input_files("#import-file", str(SAMPLE))
    page.check("#import-form input[name=overwrite]")
    with page.expect_navigation():
        page.click("#import-submit")
    assert "Imported BaseExperiment." in page.locator(".flash-success").inner_text()
    nb_path = f"{samples}/BaseExperiment"
    info = w.workspace.get_status(nb_path)
    assert info.object_type == ObjectType.NOTEBOOK and info.language.value == "PYTHON"
    assert page.locator(f"tr[data-path='{nb_path}'] a.obj-notebook").inner_text() == "BaseExperiment"

    # The notebook page shows every cell of the ipynb.
    page.click(f"tr[data-path='{nb_path}'] a.obj-notebook")
    page.wait_for_url("**/workspace/notebook?path=*")
    cells = json.loads(SAMPLE.read_text())["cells"]
    assert page.locator("#cells .nb-cell").count() == len(cells)
    first_code = next(c for c in cells if c["cell_type"] == "code")
    assert "".join(first_code["source"]).strip().splitlines()[0] in page.locator("#cells").inner_text()
    shot(page, "workspace-notebook")
    # Open in JupyterLab: the notebook in `brickyard jupyter`'s contents (Users/<me>/x.ipynb).
    _open_menu(page, "#jupyter-menu")
    assert page.locator("#open-jupyter").get_attribute("href") == \
        f"http://localhost:8888/lab/tree/Users/{me}/samples/BaseExperiment.ipynb"
    assert f"DATABRICKS_HOST={server.url}" in page.locator("#jupyter-command").inner_text()
    page.fill("#jupyter-menu input[name=jupyter_port]", "8899")
    with page.expect_navigation():
        page.click("#jupyter-menu button[type=submit]")
    _open_menu(page, "#jupyter-menu")
    assert page.locator("#open-jupyter").get_attribute("href").startswith("http://localhost:8899/lab/tree/Users/")
    page.keyboard.press("Escape")

    # Export in each format: the downloads are what the Workspace API exports.
    for fmt, sdk_fmt in (("dbc", ExportFormat.DBC), ("source", ExportFormat.SOURCE), ("jupyter", ExportFormat.JUPYTER),
                         ("html", ExportFormat.HTML)):
        _open_menu(page, "#export-menu")
        with page.expect_download() as info:
            page.click(f"#export-menu a.export-{fmt}")
        download = info.value
        data = Path(download.path()).read_bytes()
        assert data == _export(w, nb_path, sdk_fmt), fmt
        if fmt == "dbc":
            assert download.suggested_filename == "BaseExperiment.dbc"
            assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["BaseExperiment.python"]
        if fmt == "source":
            assert download.suggested_filename == "BaseExperiment.py"
            assert data.startswith(b"# Databricks notebook source")
        page.keyboard.press("Escape")
        page.goto(page.url)
    assert page.console_errors == []


def test_folder_export_move_rename_delete(page, w, unique):
    me = w.current_user.me().user_name
    home = f"/Users/{me}"
    name = unique("uifolder")
    folder = _ensure_folder_via_page(page, w, home, name)
    src = "# Databricks notebook source\nprint('hello')\n"
    w.workspace.import_(f"{folder}/nb", content=base64.b64encode(src.encode()).decode(), format=ImportFormat.SOURCE,
                        language=Language.PYTHON)
    page.goto(f"/workspace?path={home}")
    # The tree shows the folder; the folder row exports as a DBC archive holding the notebook.
    assert page.locator(f".ws-tree a.ws-folder[data-path='{folder}']").count() == 1
    row = f"tr[data-path='{folder}']"
    page.click(f"{row} details.menu > summary")
    with page.expect_download() as info:
        page.click(f"{row} a.export-dbc")
    names = zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes())).namelist()
    assert names == [f"{name}/nb.python"]

    # Rename the notebook (a bare name renames in place).
    page.goto(f"/workspace?path={folder}")
    row = f"tr[data-path='{folder}/nb']"
    page.click(f"{row} details.menu > summary")
    page.fill(f"{row} .move-form input[name=new_path]", "renamed")
    with page.expect_navigation():
        page.click(f"{row} .move-form button[type=submit]")
    assert w.workspace.get_status(f"{folder}/renamed").object_type == ObjectType.NOTEBOOK
    with pytest.raises(NotFound):
        w.workspace.get_status(f"{folder}/nb")
    assert _export(w, f"{folder}/renamed", ExportFormat.SOURCE).decode().strip().endswith("print('hello')")

    # Move the folder below /Shared, with its notebook.
    page.goto(f"/workspace?path={home}")
    row = f"tr[data-path='{folder}']"
    page.click(f"{row} details.menu > summary")
    target = f"/Shared/{name}-moved"
    page.fill(f"{row} .move-form input[name=new_path]", target)
    with page.expect_navigation():
        page.click(f"{row} .move-form button[type=submit]")
    assert f"Moved to {target}." in page.locator(".flash-success").inner_text()
    assert w.workspace.get_status(f"{target}/renamed").object_type == ObjectType.NOTEBOOK
    with pytest.raises(NotFound):
        w.workspace.get_status(folder)

    # Moving a folder into itself and renaming the home folder are refused with a message.
    page.goto(f"/workspace?path=/Shared")
    row = f"tr[data-path='{target}']"
    page.click(f"{row} details.menu > summary")
    page.fill(f"{row} .move-form input[name=new_path]", f"{target}/inner")
    with page.expect_navigation():
        page.click(f"{row} .move-form button[type=submit]")
    assert "into itself" in page.content()

    # Delete (confirmed in the browser's dialog).
    page.goto("/workspace?path=/Shared")
    page.once("dialog", lambda d: d.accept())
    page.click(f"{row} details.menu > summary")
    with page.expect_navigation():
        page.click(f"{row} .delete-form button[type=submit]")
    with pytest.raises(NotFound):
        w.workspace.get_status(target)


def test_import_dbc_and_html_exports(page, w, unique, tmp_path):
    folder = _ensure_folder_via_page(page, w, "/Shared", unique("uidbc"))
    page.goto(f"/workspace?path={folder}")
    page.click("#import > summary")
    page.set_input_files("#import-file", str(REPO / "examples" / "wine-lab" / "HelperFunctions.dbc"))
    with page.expect_navigation():
        page.click("#import-submit")
    assert "Imported HelperFunctions." in page.locator(".flash-success").inner_text()
    assert w.workspace.get_status(f"{folder}/HelperFunctions").object_type == ObjectType.NOTEBOOK
    # An HTML export imports back (format chosen explicitly, under another name).
    html = tmp_path / "helper.html"
    html.write_bytes(_export(w, f"{folder}/HelperFunctions", ExportFormat.HTML))
    page.click("#import > summary")
    page.set_input_files("#import-file", str(html))
    page.select_option("#import-format", "HTML")
    page.fill("#import-name", "FromHtml")
    with page.expect_navigation():
        page.click("#import-submit")
    assert "Imported FromHtml." in page.locator(".flash-success").inner_text()
    assert _export(w, f"{folder}/FromHtml", ExportFormat.SOURCE) == \
        _export(w, f"{folder}/HelperFunctions", ExportFormat.SOURCE)
    # A file that is no notebook in the chosen format is refused with the parser's reason.
    page.click("#import > summary")
    page.set_input_files("#import-file", str(html))
    page.select_option("#import-format", "JUPYTER")
    with page.expect_navigation():
        page.click("#import-submit")
    assert "Invalid request" in page.locator("main").inner_text()


def _notebook_with_outputs() -> bytes:
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# Outputs\n", "Some **bold** text and <b>raw html</b>."]},
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": [f"print('{SCRIPT}')"],
         "outputs": [{"output_type": "stream", "name": "stdout", "text": [SCRIPT + "\n"]}]},
        {"cell_type": "code", "execution_count": 2, "metadata": {}, "source": ["displayHTML(...)"],
         "outputs": [{"output_type": "display_data", "metadata": {},
                      "data": {"text/html": [SCRIPT + "<script>parent.__pwned=2;top.__pwned=3</script>"
                                             "<p id='inside'>html output</p>"]}}]},
        {"cell_type": "code", "execution_count": 3, "metadata": {}, "source": ["plot()"],
         "outputs": [{"output_type": "display_data", "metadata": {},
                      "data": {"image/png": PNG, "text/plain": ["<Figure>"]}}]},
        {"cell_type": "code", "execution_count": 4, "metadata": {}, "source": ["1/0"],
         "outputs": [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero <img src=x>",
                      "traceback": ["\x1b[0;31mTraceback (most recent call last)\x1b[0m",
                                    "  File \"<cell>\", line 1, in <module>", "ZeroDivisionError: division by zero"]}]},
        {"cell_type": "code", "execution_count": 5, "metadata": {}, "source": ["display(df)"],
         "outputs": [{"output_type": "display_data", "metadata": {},
                      "data": {"application/vnd.brickyard.table+json": {
                          "schema": [{"name": "id", "type": "\"long\"", "metadata": "{}"},
                                     {"name": "label", "type": "\"string\"", "metadata": "{}"}],
                          "data": [[1, "<i>one</i>"], [2, "two"]], "truncated": False},
                          "text/plain": ["id label"]}}]},
    ]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                      "language": "python"},
                                       "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb).encode()


class _OneFile(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ipynb+json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):  # noqa: ANN002
        pass


@pytest.fixture
def notebook_url():
    handler = type("Handler", (_OneFile,), {"body": _notebook_with_outputs()})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/outputs/Escaping.ipynb"
    srv.shutdown()
    srv.server_close()


def test_url_import_and_outputs_rendered_safely(page, w, unique, notebook_url):
    me = w.current_user.me().user_name
    folder = _ensure_folder_via_page(page, w, f"/Users/{me}", unique("uiout"))
    page.goto(f"/workspace?path={folder}")
    page.click("#import > summary")
    page.fill("#import-url", notebook_url)
    with page.expect_navigation():
        page.click("#import-submit")
    assert "Imported Escaping." in page.locator(".flash-success").inner_text()
    path = f"{folder}/Escaping"
    assert w.workspace.get_status(path).object_type == ObjectType.NOTEBOOK

    page.goto(f"/workspace/notebook?path={path}")
    # Markdown is rendered, its raw HTML shown as text.
    md = page.locator("#cmd-1 .nb-markdown")
    assert md.locator("h1").inner_text() == "Outputs"
    assert md.locator("strong").inner_text() == "bold"
    assert "<b>raw html</b>" in md.inner_text()
    # Printed <script> is text.
    assert page.locator("#cmd-2 pre.nb-stream").inner_text().strip() == SCRIPT
    # HTML output: a sandboxed srcdoc frame without scripts or same-origin.
    frame_el = page.locator("#cmd-3 iframe.nb-html")
    assert frame_el.get_attribute("sandbox") == ""
    assert "<p id='inside'>html output</p>" in frame_el.get_attribute("srcdoc")
    frame = frame_el.content_frame
    assert frame.locator("#inside").inner_text() == "html output"
    # Scripts did not run inside the frame either (no allow-scripts).
    assert frame_el.element_handle().content_frame().evaluate("typeof window.__pwned") == "undefined"
    # The image is a data: URL image.
    img = page.locator("#cmd-4 img.nb-image")
    assert img.get_attribute("src") == f"data:image/png;base64,{PNG}"
    assert page.evaluate("document.querySelector('#cmd-4 img.nb-image').naturalWidth") == 1
    # The error shows its summary and traceback as text (ANSI colours removed).
    err = page.locator("#cmd-5 .nb-error")
    assert err.locator(".nb-error-summary").inner_text() == "ZeroDivisionError: division by zero <img src=x>"
    assert "Traceback (most recent call last)" in err.locator(".nb-trace").inner_text()
    assert "\x1b" not in err.inner_text()
    # The table.
    table = page.locator("#cmd-6 table.nb-table")
    assert table.locator("th").all_text_contents() == ["id", "label"]
    assert table.locator("tbody td").all_inner_texts() == ["1", "<i>one</i>", "2", "two"]
    # Nothing ran in the page.
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#cells script").count() == 0 and page.locator("#cells img[src=x]").count() == 0
    shot(page, "workspace-notebook-outputs")


def test_url_import_refuses_other_schemes_and_link_local(page, w):
    me = w.current_user.me().user_name
    for url, message in (("file:///etc/passwd", "Only http:// and https:// URLs can be imported."),
                         ("http://169.254.169.254/latest/meta-data/", "is not allowed")):
        page.goto(f"/workspace?path=/Users/{me}")
        page.click("#import > summary")
        # type=url accepts file: URLs; the server decides.
        page.fill("#import-url", url)
        with page.expect_navigation():
            page.click("#import-submit")
        assert message in page.locator(".error-card, main").first.inner_text(), url


MATPLOTLIB_NOTEBOOK = f"""# Databricks notebook source
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot([1, 2, 3], [1, 4, 9])

# COMMAND ----------

print("{SCRIPT}")

# COMMAND ----------

displayHTML("{SCRIPT}<p id='inside'>from the cluster</p>")
"""


@pytest.mark.slow
def test_run_on_cluster_shows_plot(page, w, cluster_id, unique, tmp_path):
    me = w.current_user.me().user_name
    folder = _ensure_folder_via_page(page, w, f"/Users/{me}", unique("uirun"))
    source = tmp_path / "Plot.py"
    source.write_text(MATPLOTLIB_NOTEBOOK)
    page.goto(f"/workspace?path={folder}")
    page.click("#import > summary")
    page.set_input_files("#import-file", str(source))
    with page.expect_navigation():
        page.click("#import-submit")
    path = f"{folder}/Plot"
    assert w.workspace.get_status(path).object_type == ObjectType.NOTEBOOK

    page.goto(f"/workspace/notebook?path={path}")
    assert page.locator("#cells .nb-outputs").count() == 0
    page.select_option("#run-cluster", cluster_id)
    with page.expect_navigation():
        page.click("#run-on-cluster")
    status = page.locator("#run-status")
    assert status.count() == 1
    run_id = int(status.get_attribute("data-run-id"))
    shot(page, "workspace-notebook-running")
    # htmx polls the run; when it ends the page reloads with the results.
    page.wait_for_selector("#last-run", timeout=300_000)
    run = w.jobs.get_run(run_id)
    assert run.state.result_state.value == "SUCCESS", run.state
    assert page.locator("#last-run-result").inner_text() == "SUCCESS"
    assert "finished: SUCCESS" in page.locator(".flash-success").inner_text()
    img = page.locator("#cmd-1 img.nb-image")
    assert img.count() == 1 and img.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.querySelector('#cmd-1 img.nb-image').naturalWidth") > 100
    assert page.locator("#cmd-2 pre.nb-stream").inner_text().strip() == SCRIPT
    frame = page.locator("#cmd-3 iframe.nb-html")
    assert frame.get_attribute("sandbox") == ""
    assert frame.content_frame.locator("#inside").inner_text() == "from the cluster"
    assert page.evaluate("typeof window.__pwned") == "undefined"
    shot(page, "workspace-notebook-run")
    # The results are the notebook's now: the Workspace API exports them.
    exported = json.loads(_export(w, path, ExportFormat.JUPYTER))
    outputs = exported["cells"][0]["outputs"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    # The run is a one-time run in the Jobs API.
    assert run.run_type.value == "SUBMIT_RUN" and re.search(r"Plot", run.run_name)

    # Run again and leave the page: the results land when the notebook is opened next.
    with page.expect_navigation():
        page.click("#run-on-cluster")
    second = int(page.locator("#run-status").get_attribute("data-run-id"))
    assert second != run_id
    page.goto(f"/workspace?path={folder}")
    from datetime import timedelta

    done = w.jobs.wait_get_run_job_terminated_or_skipped(second, timeout=timedelta(minutes=5))
    assert done.state.result_state.value == "SUCCESS", done.state
    page.goto(f"/workspace/notebook?path={path}")
    assert page.locator("#run-status").count() == 0
    assert page.locator("#last-run .mono").first.inner_text() == str(second)
    assert page.locator("#cmd-1 img.nb-image").count() == 1


def test_other_users_see_their_own_home_only(anon_page, server, w, unique):
    from ui_support import login_with_token

    name = unique("uiuser") + "@example.com"
    _, token = server.new_user(name)
    page = anon_page
    login_with_token(page, token, next_path="%2Fworkspace")
    assert page.locator("#folder-path").inner_text() == f"/Users/{name}"
    assert sorted(page.locator(".ws-tree a.ws-folder").all_inner_texts()) == sorted(["Shared", "Users", name])
    assert "admin" not in page.locator(".ws-side > .ws-tree").inner_text()
    response = page.goto("/workspace?path=/Users/admin")
    assert response.status == 403
    assert "does not have permission" in page.locator("main").inner_text()
    # Their own folder takes imports; the admin's notebooks stay out of reach.
    response = page.goto("/workspace/export?path=/Users/admin/samples/BaseExperiment&format=SOURCE")
    assert response.status in (403, 404)
