"""Data pages in a real browser: Upload Data (several files, progress, renamed names, the notebook
snippets with copy buttons) and the DBFS browser (list, download, delete)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from databricks.sdk.errors import NotFound
from playwright.sync_api import expect
from ui_support import shot

pytestmark = pytest.mark.ui

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "wine-lab" / "data"
RED, WHITE = DATA / "winequality-red.csv", DATA / "winequality-white.csv"


def _dbfs_bytes(w, path: str) -> bytes:
    with w.dbfs.download(path) as f:
        return f.read()


def test_upload_wine_csvs_and_copy_pandas_snippet(page, w, server):
    me = w.current_user.me().user_name
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page.goto("/data")
    page.click("#upload-data")
    page.wait_for_url("**/data/upload")
    assert page.locator("#upload-dir").input_value() == f"shared_uploads/{me}/"
    assert page.locator("#upload-next").is_disabled()
    page.set_input_files("#upload-input", [str(RED), str(WHITE)])
    expect(page.locator("#upload-list .upload-item.done")).to_have_count(2, timeout=120_000)
    assert page.locator("#upload-list .upload-item.failed").count() == 0
    assert [int(v) for v in page.eval_on_selector_all("#upload-list progress", "els => els.map(e => e.value)")] \
        == [100, 100]
    assert page.locator("#renamed-list li").all_inner_texts() == [
        "winequality-red.csv was renamed to winequality_red.csv",
        "winequality-white.csv was renamed to winequality_white.csv"] or \
        sorted(page.locator("#renamed-list li").all_inner_texts()) == [
        "winequality-red.csv was renamed to winequality_red.csv",
        "winequality-white.csv was renamed to winequality_white.csv"]
    shot(page, "data-upload")
    with page.expect_navigation():
        page.click("#upload-next")
    assert "/data/upload/done" in page.url
    shot(page, "data-upload-snippets")

    folder = f"dbfs:/FileStore/shared_uploads/{me}"
    assert page.locator("#snippet-spark").inner_text() == (
        f'df1 = spark.read.format("csv").option("header", "true").load("{folder}/winequality_red.csv")\n'
        f'df2 = spark.read.format("csv").option("header", "true").load("{folder}/winequality_white.csv")')
    # Copy the pandas snippet as a user does, and read it from the clipboard.
    page.click("#tab-pandas")
    page.click("#copy-pandas")
    expect(page.locator("#copy-pandas")).to_have_text("Copied")
    pandas = page.evaluate("navigator.clipboard.readText()")
    assert pandas == page.locator("#snippet-pandas").inner_text()
    local = f"/dbfs/FileStore/shared_uploads/{me}"
    assert pandas == (f'import pandas as pd\ndf1 = pd.read_csv("{local}/winequality_red.csv")\n'
                      f'df2 = pd.read_csv("{local}/winequality_white.csv")')
    # The files the snippet reads are the uploaded bytes, as the SDK downloads them.
    paths = re.findall(r'pd\.read_csv\("/dbfs(/[^"]+)"\)', pandas)
    assert [Path(p).name for p in paths] == ["winequality_red.csv", "winequality_white.csv"]
    for path, original in zip(paths, (RED, WHITE)):
        assert _dbfs_bytes(w, path) == original.read_bytes()
        assert w.dbfs.get_status(path).file_size == original.stat().st_size
    # A per-file snippet row for each.
    assert page.locator("#uploaded-files .uploaded-path").all_inner_texts() == [
        f"{folder}/winequality_red.csv", f"{folder}/winequality_white.csv"]
    assert page.console_errors == []


def test_drag_and_drop_upload_then_browse_download_delete(page, w, unique):
    sub = unique("drop")
    page.goto("/data/upload")
    page.fill("#upload-dir", f"ui-tests/{sub}")
    content = "a,b\n1,2\n3,4\n"
    data_transfer = page.evaluate_handle(
        """(text) => { const dt = new DataTransfer();
                       dt.items.add(new File([text], "my data (1).csv", {type: "text/csv"}));
                       dt.items.add(new File(["x"], "notes.txt", {type: "text/plain"}));
                       return dt; }""", content)
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": data_transfer})
    expect(page.locator("#upload-list .upload-item.done")).to_have_count(2)
    path = f"/FileStore/ui-tests/{sub}/my_data__1_.csv"
    assert _dbfs_bytes(w, path) == content.encode()
    assert "my data (1).csv was renamed to my_data__1_.csv" in page.locator("#renamed-list").inner_text()
    with page.expect_navigation():
        page.click("#upload-next")
    assert page.locator("#snippet-spark").inner_text().splitlines() == [
        f'df1 = spark.read.format("csv").option("header", "true").load("dbfs:{path}")',
        f'df2 = spark.read.format("csv").option("header", "true").load("dbfs:/FileStore/ui-tests/{sub}/notes.txt")']

    # The DBFS browser lists the folder, downloads a file, deletes it.
    page.click("#upload-folder")
    page.wait_for_url("**/data?path=*")
    assert page.locator("#dbfs-path").inner_text() == f"dbfs:/FileStore/ui-tests/{sub}"
    assert page.locator("#dbfs-files a.dbfs-file").all_inner_texts() == ["my_data__1_.csv", "notes.txt"]
    shot(page, "data-dbfs-browser")
    with page.expect_download() as info:
        page.click(f"tr[data-path='{path}'] a.dbfs-file")
    assert Path(info.value.path()).read_bytes() == content.encode()
    assert info.value.suggested_filename == "my_data__1_.csv"
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation():
        page.click(f"tr[data-path='{path}'] .delete-form button[type=submit]")
    assert f"Deleted dbfs:{path}." in page.locator(".flash-success").inner_text()
    with pytest.raises(NotFound):
        w.dbfs.get_status(path)
    assert page.locator("#dbfs-files a.dbfs-file").all_inner_texts() == ["notes.txt"]
    # Browsing up to the root works.
    page.goto("/data")
    assert page.locator("#dbfs-path").inner_text() == "dbfs:/"
    assert "FileStore" in page.locator("#dbfs-files a.dbfs-dir").all_inner_texts()


def test_uploading_a_taken_name_keeps_both_files(page, w, unique):
    """As Databricks' Upload Data: a file of the same name stays, the new one gets -1, -2, ... before
    its extension, and the page says which name it got."""
    sub = unique("again")
    folder = f"/FileStore/ui-tests/{sub}"
    first = RED.read_bytes()
    w.dbfs.upload(f"{folder}/winequality_red.csv", RED.open("rb"))
    page.goto("/data/upload")
    page.fill("#upload-dir", f"ui-tests/{sub}")
    page.set_input_files("#upload-input", [str(RED)])
    expect(page.locator("#upload-list .upload-item.done")).to_have_count(1, timeout=120_000)
    assert page.locator("#upload-list .upload-final").all_inner_texts() == ["winequality_red-1.csv"]
    assert "Uploaded as winequality_red-1.csv" in page.locator("#upload-list .upload-state").inner_text()
    assert page.locator("#renamed-list li").all_inner_texts() == [
        "winequality-red.csv was renamed to winequality_red-1.csv"]
    # The same file again, and two different files of one name dropped at the same time.
    second = b"fixed acidity;quality\n7.4;5\n"
    data_transfer = page.evaluate_handle(
        """(texts) => { const dt = new DataTransfer();
                        texts.forEach(t => dt.items.add(new File([t], "winequality_red.csv", {type: "text/csv"})));
                        return dt; }""", [second.decode(), "other;quality\n1;7\n"])
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": data_transfer})
    expect(page.locator("#upload-list .upload-item.done")).to_have_count(3)
    assert page.locator("#upload-list .upload-item.failed").count() == 0
    finals = page.locator("#upload-list .upload-item").evaluate_all("els => els.map(e => e.dataset.name)")
    assert finals[0] == "winequality_red-1.csv" and sorted(finals[1:]) == ["winequality_red-2.csv",
                                                                           "winequality_red-3.csv"]
    shot(page, "data-upload-same-name")
    listed = sorted(Path(f.path).name for f in w.dbfs.list(folder))
    assert listed == ["winequality_red-1.csv", "winequality_red-2.csv", "winequality_red-3.csv",
                      "winequality_red.csv"]
    assert _dbfs_bytes(w, f"{folder}/winequality_red.csv") == first  # never overwritten
    assert _dbfs_bytes(w, f"{folder}/winequality_red-1.csv") == first
    assert sorted(_dbfs_bytes(w, f"{folder}/{n}") for n in finals[1:]) == sorted(
        [second, b"other;quality\n1;7\n"])
    # The snippets read the names the files got.
    with page.expect_navigation():
        page.click("#upload-next")
    assert page.locator("#uploaded-files .uploaded-path").all_inner_texts() == [
        f"dbfs:{folder}/{n}" for n in finals]
    assert page.locator("#snippet-spark").inner_text().splitlines()[0] == (
        f'df1 = spark.read.format("csv").option("header", "true").load("dbfs:{folder}/winequality_red-1.csv")')
    assert page.console_errors == []


def test_upload_refuses_traversal_and_needs_csrf(page, server):
    import requests
    from ui_support import csrf_of, session_cookies

    page.goto("/data/upload")
    cookies = {"by_session": session_cookies(page)["by_session"]}
    r = requests.post(server.url + "/data/upload/file", params={"dir": "../etc", "name": "x.csv"}, data=b"1",
                      headers={"X-CSRF-Token": csrf_of(page), "Origin": server.url}, cookies=cookies, timeout=30)
    assert r.status_code == 400 and "'..'" in r.json()["message"]
    r = requests.post(server.url + "/data/upload/file", params={"name": "x.csv"}, data=b"1",
                      headers={"Content-Type": "application/octet-stream"}, cookies=cookies, timeout=30)
    assert r.status_code == 403
