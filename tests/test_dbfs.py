"""DBFS API 2.0 and raw /dbfs/<path>, through databricks-sdk, dbutils and raw HTTP."""
from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import socket
import time

import pytest
import requests
from databricks.sdk.errors import NotFound, ResourceAlreadyExists, ResourceDoesNotExist

from conftest import ThreadedServer, make_settings

MIB = 1 << 20


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def err(r: requests.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error_code"] == code, body
    return body


def leftovers(server) -> list[str]:
    """Temp files of unfinished uploads still on disk."""
    return [p.name for p in server.settings.tmp_dir.glob("dbfs-*")]


def status(server, path: str) -> requests.Response:
    return server.api("GET", "/api/2.0/dbfs/get-status", params={"path": path})


# -- the three upload styles, 3 MiB each, byte-identical round trips ----------------------------
def test_put_json_base64_3mib_round_trip(server, w, unique):
    data = os.urandom(3 * MIB)
    path = f"/FileStore/{unique('json')}.bin"
    w.dbfs.put(path, contents=b64(data), overwrite=True)
    assert w.dbfs.download(path).read() == data
    st = w.dbfs.get_status(path)
    assert (st.path, st.is_dir, st.file_size) == (path, False, len(data))
    assert abs(st.modification_time - time.time() * 1000) < 60_000


def test_upload_with_streaming_handle_3mib(server, w, unique):
    data = os.urandom(3 * MIB)
    path = f"/FileStore/{unique('stream')}.bin"
    w.dbfs.upload(path, io.BytesIO(data), overwrite=True)
    assert w.dbfs.download(path).read() == data
    # The file shows up under its real name only at close.
    other = f"/FileStore/{unique('stream')}.bin"
    handle = w.dbfs.create(other, overwrite=False).handle
    w.dbfs.add_block(handle, b64(data[:MIB]))
    w.dbfs.add_block(handle, b64(data[MIB:2 * MIB]))
    assert not w.dbfs.exists(other)
    assert other not in [f.path for f in w.dbfs.list("/FileStore")]
    w.dbfs.add_block(handle, b64(data[2 * MIB:]))
    w.dbfs.close(handle)
    assert hashlib.sha256(w.dbfs.download(other).read()).digest() == hashlib.sha256(data).digest()
    # A closed handle is gone.
    with pytest.raises(ResourceDoesNotExist):
        w.dbfs.add_block(handle, b64(b"x"))


def test_multipart_put_like_the_legacy_cli(server, unique):
    data = os.urandom(3 * MIB)
    name = unique("cli")
    form = {"path": f"dbfs:/FileStore/{name}.bin", "overwrite": "False"}
    r = server.api("POST", "/api/2.0/dbfs/put", data=form, files={"file": (f"{name}.bin", data)})
    assert r.status_code == 200 and r.json() == {}, r.text
    r = server.api("GET", "/api/2.0/dbfs/read",
                   params={"path": f"dbfs:/FileStore/{name}.bin", "offset": MIB, "length": MIB})
    assert r.json()["bytes_read"] == MIB and base64.b64decode(r.json()["data"]) == data[MIB:2 * MIB]
    # Again without overwrite: 409, and the file is untouched.
    r = server.api("POST", "/api/2.0/dbfs/put", data=form, files={"file": ("x", b"other")})
    err(r, 409, "RESOURCE_ALREADY_EXISTS")
    assert status(server, f"/FileStore/{name}.bin").json()["file_size"] == len(data)
    form["overwrite"] = "True"
    r = server.api("POST", "/api/2.0/dbfs/put", data=form, files={"file": ("x", b"other")})
    assert r.status_code == 200
    assert status(server, f"/FileStore/{name}.bin").json()["file_size"] == 5
    r = server.api("POST", "/api/2.0/dbfs/put", data={"overwrite": "true"}, files={"file": ("x", b"1")})
    err(r, 400, "INVALID_PARAMETER_VALUE")
    r = server.api("POST", "/api/2.0/dbfs/put", data={"path": "/FileStore/x", "overwrite": "maybe"},
                   files={"file": ("x", b"1")})
    err(r, 400, "INVALID_PARAMETER_VALUE")


def test_put_validation(server, w, unique):
    path = f"/FileStore/{unique('pv')}.txt"
    err(server.api("POST", "/api/2.0/dbfs/put", json={"path": path, "contents": "%%%"}), 400,
        "INVALID_PARAMETER_VALUE")
    err(server.api("POST", "/api/2.0/dbfs/put", json={"contents": b64(b"x")}), 400, "INVALID_PARAMETER_VALUE")
    err(server.api("POST", "/api/2.0/dbfs/put", data=b"{not json", headers={"Content-Type": "text/json"}),
        400, "MALFORMED_REQUEST")
    assert not w.dbfs.exists(path)
    # text/json is what the legacy CLI sends; an absent `contents` makes an empty file.
    r = server.api("POST", "/api/2.0/dbfs/put", data=f'{{"path": "{path}"}}', headers={"Content-Type": "text/json"})
    assert r.status_code == 200
    assert w.dbfs.get_status(path).file_size == 0
    err(server.api("POST", "/api/2.0/dbfs/put", json={"path": path, "contents": b64(b"y")}), 409,
        "RESOURCE_ALREADY_EXISTS")
    with pytest.raises(ResourceAlreadyExists):
        w.dbfs.put(path, contents=b64(b"z"), overwrite=False)
    with pytest.raises(ResourceAlreadyExists):
        w.dbfs.create(path, overwrite=False)


# -- list, get-status, mkdirs, move, delete ------------------------------------------------------
def test_tree_operations_with_sdk(server, w, unique):
    base = f"/FileStore/{unique('tree')}"
    w.dbfs.mkdirs(f"{base}/a/b")
    w.dbfs.put(f"{base}/a/one.txt", contents=b64(b"one"), overwrite=True)
    w.dbfs.put(f"dbfs:{base}/a/b/two.txt", contents=b64(b"two!"), overwrite=True)
    listing = {f.path: f for f in w.dbfs.list(f"{base}/a")}
    assert set(listing) == {f"{base}/a/b", f"{base}/a/one.txt"}
    assert listing[f"{base}/a/b"].is_dir and listing[f"{base}/a/one.txt"].file_size == 3
    assert all(f.modification_time > 0 for f in listing.values())
    assert {f.path for f in w.dbfs.list(base, recursive=True)} == {f"{base}/a/one.txt", f"{base}/a/b/two.txt"}
    # Listing a file returns that file.
    r = server.api("GET", "/api/2.0/dbfs/list", params={"path": f"dbfs:{base}/a/one.txt"})
    assert [f["path"] for f in r.json()["files"]] == [f"{base}/a/one.txt"]
    # An empty directory lists as {} (as on Databricks).
    w.dbfs.mkdirs(f"{base}/empty")
    assert server.api("GET", "/api/2.0/dbfs/list", params={"path": f"{base}/empty"}).json() == {}
    assert list(w.dbfs.list(f"{base}/empty")) == []
    st = w.dbfs.get_status(base)
    assert st.is_dir and st.path == base
    assert w.dbfs.get_status("/").is_dir
    assert w.dbfs.exists(f"{base}/a/one.txt") and not w.dbfs.exists(f"{base}/nope")
    # mkdirs is idempotent, and refuses a file on the way.
    w.dbfs.mkdirs(f"{base}/a/b")
    err(server.api("POST", "/api/2.0/dbfs/mkdirs", json={"path": f"{base}/a/one.txt/sub"}), 409,
        "RESOURCE_ALREADY_EXISTS")
    # move: a file, a directory; an existing target and a missing source fail.
    w.dbfs.move(f"{base}/a/one.txt", f"{base}/moved/one.txt")
    assert w.dbfs.download(f"{base}/moved/one.txt").read() == b"one"
    assert not w.dbfs.exists(f"{base}/a/one.txt")
    w.dbfs.move(f"{base}/a", f"{base}/c")
    assert w.dbfs.download(f"{base}/c/b/two.txt").read() == b"two!"
    with pytest.raises(ResourceAlreadyExists):
        w.dbfs.move(f"{base}/c/b/two.txt", f"{base}/moved/one.txt")
    with pytest.raises(ResourceDoesNotExist):
        w.dbfs.move(f"{base}/nope", f"{base}/nope2")
    err(server.api("POST", "/api/2.0/dbfs/move", json={"source_path": f"{base}/c",
                                                        "destination_path": f"{base}/c/inside"}),
        400, "INVALID_PARAMETER_VALUE")
    err(server.api("POST", "/api/2.0/dbfs/move", json={"source_path": f"{base}/c"}), 400, "INVALID_PARAMETER_VALUE")
    # delete: a non-empty directory needs recursive; a missing path is fine.
    r = server.api("POST", "/api/2.0/dbfs/delete", json={"path": f"{base}/c"})
    body = err(r, 400, "IO_ERROR")
    assert "recursive" in body["message"]
    assert w.dbfs.exists(f"{base}/c/b/two.txt")
    w.dbfs.delete(f"{base}/c", recursive=True)
    assert not w.dbfs.exists(f"{base}/c")
    assert server.api("POST", "/api/2.0/dbfs/delete", json={"path": f"{base}/c"}).status_code == 200
    w.dbfs.delete(f"{base}/moved/one.txt")
    # An empty directory goes without the recursive flag (the SDK's own check is client-side).
    assert server.api("POST", "/api/2.0/dbfs/delete", json={"path": f"{base}/empty"}).status_code == 200
    assert not w.dbfs.exists(f"{base}/empty")
    err(server.api("POST", "/api/2.0/dbfs/delete", json={"path": "dbfs:/", "recursive": True}), 400,
        "INVALID_PARAMETER_VALUE")


def test_missing_paths_are_404_with_databricks_wording(server, w, unique):
    path = f"/FileStore/{unique('missing')}"
    for method, endpoint, kw in (("GET", "get-status", {"params": {"path": path}}),
                                 ("GET", "list", {"params": {"path": path}}),
                                 ("GET", "read", {"params": {"path": path}})):
        body = err(server.api(method, f"/api/2.0/dbfs/{endpoint}", **kw), 404, "RESOURCE_DOES_NOT_EXIST")
        assert body["message"] == f"No file or directory exists on path {path}."
    with pytest.raises(ResourceDoesNotExist):
        w.dbfs.get_status(path)
    with pytest.raises(NotFound):
        list(w.dbfs.list(path))


def test_read_limits(server, w, unique):
    path = f"/FileStore/{unique('read')}.bin"
    data = os.urandom(1000)
    w.dbfs.put(path, contents=b64(data), overwrite=True)
    r = server.api("GET", "/api/2.0/dbfs/read", params={"path": path, "offset": 990, "length": 100})
    assert r.json() == {"bytes_read": 10, "data": b64(data[990:])}
    r = server.api("GET", "/api/2.0/dbfs/read", params={"path": path, "offset": 5000, "length": 10})
    assert r.json()["bytes_read"] == 0
    # Default length reads the small file whole.
    assert base64.b64decode(server.api("GET", "/api/2.0/dbfs/read", params={"path": path}).json()["data"]) == data
    err(server.api("GET", "/api/2.0/dbfs/read", params={"path": path, "length": MIB + 1}), 400,
        "MAX_READ_SIZE_EXCEEDED")
    err(server.api("GET", "/api/2.0/dbfs/read", params={"path": path, "offset": -1}), 400, "INVALID_PARAMETER_VALUE")
    err(server.api("GET", "/api/2.0/dbfs/read", params={"path": path, "length": "ten"}), 400,
        "INVALID_PARAMETER_VALUE")
    err(server.api("GET", "/api/2.0/dbfs/read", params={"path": "/FileStore"}), 400, "INVALID_PARAMETER_VALUE")


def test_add_block_rules(server, w, unique):
    path = f"/FileStore/{unique('blk')}.bin"
    handle = w.dbfs.create(path, overwrite=True).handle
    err(server.api("POST", "/api/2.0/dbfs/add-block", json={"handle": handle, "data": b64(os.urandom(MIB + 1))}),
        400, "MAX_BLOCK_SIZE_EXCEEDED")
    err(server.api("POST", "/api/2.0/dbfs/add-block", json={"handle": handle, "data": "!!"}), 400,
        "INVALID_PARAMETER_VALUE")
    err(server.api("POST", "/api/2.0/dbfs/add-block", json={"data": b64(b"x")}), 400, "INVALID_PARAMETER_VALUE")
    err(server.api("POST", "/api/2.0/dbfs/add-block", json={"handle": 12345, "data": b64(b"x")}), 404,
        "RESOURCE_DOES_NOT_EXIST")
    err(server.api("POST", "/api/2.0/dbfs/close", json={"handle": 12345}), 404, "RESOURCE_DOES_NOT_EXIST")
    w.dbfs.add_block(handle, b64(os.urandom(MIB)))
    w.dbfs.close(handle)
    assert w.dbfs.get_status(path).file_size == MIB
    # Writing a file over a directory is refused, even with overwrite.
    err(server.api("POST", "/api/2.0/dbfs/create", json={"path": "/FileStore", "overwrite": True}), 409,
        "RESOURCE_ALREADY_EXISTS")


def test_handles_belong_to_their_user(server, w, unique):
    _, token = server.new_user(unique("dbfsuser") + "@example.com")
    path = f"/FileStore/{unique('own')}.bin"
    handle = w.dbfs.create(path, overwrite=True).handle
    other = server.client(token)
    with pytest.raises(ResourceDoesNotExist):
        other.dbfs.add_block(handle, b64(b"theirs"))
    with pytest.raises(ResourceDoesNotExist):
        other.dbfs.close(handle)
    w.dbfs.add_block(handle, b64(b"mine"))
    w.dbfs.close(handle)
    assert w.dbfs.download(path).read() == b"mine"
    # DBFS itself is shared by all users of the workspace, as on Databricks.
    assert other.dbfs.download(path).read() == b"mine"


def test_open_handles_are_limited_per_user(server, unique):
    _, token = server.new_user(unique("handles") + "@example.com")
    handles = []
    for i in range(64):
        r = server.api("POST", "/api/2.0/dbfs/create", token=token, json={"path": f"/tmp/{unique('h')}"})
        assert r.status_code == 200, r.text
        handles.append(r.json()["handle"])
    err(server.api("POST", "/api/2.0/dbfs/create", token=token, json={"path": "/tmp/one-more"}), 400,
        "INVALID_STATE")
    # Other users are not affected, and closing frees a slot.
    r = server.api("POST", "/api/2.0/dbfs/create", json={"path": f"/tmp/{unique('h')}"})
    assert r.status_code == 200
    assert server.api("POST", "/api/2.0/dbfs/close", json={"handle": r.json()["handle"]}).status_code == 200
    assert server.api("POST", "/api/2.0/dbfs/close", token=token, json={"handle": handles[0]}).status_code == 200
    r = server.api("POST", "/api/2.0/dbfs/create", token=token, json={"path": "/tmp/one-more"})
    assert r.status_code == 200
    for handle in handles[1:] + [r.json()["handle"]]:
        assert server.api("POST", "/api/2.0/dbfs/close", token=token, json={"handle": handle}).status_code == 200
    assert leftovers(server) == []


def test_idle_handles_expire(tmp_path):
    srv = ThreadedServer(make_settings(tmp_path / "home", dbfs_handle_idle_seconds=1))
    srv.start()
    try:
        url = f"http://127.0.0.1:{srv.settings.port}"
        from conftest import ADMIN_TOKEN
        h = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        handle = requests.post(url + "/api/2.0/dbfs/create", json={"path": "/x.bin"}, headers=h).json()["handle"]
        assert requests.post(url + "/api/2.0/dbfs/add-block", json={"handle": handle, "data": b64(b"abc")},
                             headers=h).status_code == 200
        assert list(srv.settings.tmp_dir.glob("dbfs-*"))
        time.sleep(1.6)
        r = requests.post(url + "/api/2.0/dbfs/add-block", json={"handle": handle, "data": b64(b"d")}, headers=h)
        assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert requests.post(url + "/api/2.0/dbfs/close", json={"handle": handle}, headers=h).status_code == 404
        assert requests.get(url + "/api/2.0/dbfs/get-status", params={"path": "/x.bin"}, headers=h).status_code == 404
        assert not list(srv.settings.tmp_dir.glob("dbfs-*"))
    finally:
        srv.stop()


# -- dbutils.fs (the SDK's REST-backed dbutils) ----------------------------------------------------
def test_dbutils_fs(server, w, unique, tmp_path):
    base = f"dbfs:/FileStore/{unique('dbu')}"
    assert w.dbutils.fs.mkdirs(f"{base}/d")
    assert w.dbutils.fs.put(f"{base}/d/hello.txt", "héllo wörld", overwrite=True)
    assert w.dbutils.fs.head(f"{base}/d/hello.txt") == "héllo wörld"
    assert w.dbutils.fs.head(f"{base}/d/hello.txt", 5) == "héll"
    ls = w.dbutils.fs.ls(f"{base}/d")
    assert [(f.name, f.size) for f in ls] == [("hello.txt", len("héllo wörld".encode()))]
    assert w.dbutils.fs.cp(f"{base}/d/hello.txt", f"{base}/copy.txt")
    assert w.dbutils.fs.head(f"{base}/copy.txt") == "héllo wörld"
    local = tmp_path / "local.txt"
    w.dbutils.fs.cp(f"{base}/copy.txt", f"file:{local}")
    assert local.read_text() == "héllo wörld"
    assert w.dbutils.fs.mv(f"{base}/copy.txt", f"{base}/moved.txt")
    assert sorted(f.name for f in w.dbutils.fs.ls(base)) == ["d", "moved.txt"]
    with pytest.raises(ResourceAlreadyExists):
        w.dbutils.fs.put(f"{base}/moved.txt", "again")
    assert w.dbutils.fs.rm(base, recurse=True)
    assert not w.dbfs.exists(base)


# -- raw /dbfs/<path> (MLflow's DbfsRestArtifactRepository) ---------------------------------------
def test_raw_dbfs_post_and_get(server, w, unique):
    base = f"/some/other/{unique('mlf')}/1/run/artifacts"
    data = os.urandom(300_000)
    r = server.api("POST", f"/dbfs{base}/model/data.bin", data=data)
    assert r.status_code == 200, r.text
    r = server.api("POST", f"/dbfs{base}/empty.txt", data="")
    assert r.status_code == 200
    r = server.api("GET", f"/dbfs{base}/model/data.bin")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "application/octet-stream"
    # Uploading again overwrites (artifacts are re-logged).
    assert server.api("POST", f"/dbfs{base}/empty.txt", data=b"now").status_code == 200
    assert server.api("GET", f"/dbfs{base}/empty.txt").content == b"now"
    # MLflow lists with a trailing slash, and older MLflow sends GET parameters as a JSON body.
    listing = server.api("GET", "/api/2.0/dbfs/list", params={"path": base + "/"}).json()["files"]
    assert {f["path"]: f["is_dir"] for f in listing} == {f"{base}/empty.txt": False, f"{base}/model": True}
    st = server.api("GET", "/api/2.0/dbfs/get-status", json={"path": f"{base}/model"}).json()
    assert st["is_dir"] is True
    err(server.api("GET", f"/dbfs{base}/missing.bin"), 404, "RESOURCE_DOES_NOT_EXIST")
    err(server.api("GET", f"/dbfs{base}/model"), 400, "INVALID_PARAMETER_VALUE")
    assert requests.post(server.url + f"/dbfs{base}/x", data=b"1", timeout=10).status_code == 401
    assert requests.get(server.url + f"/dbfs{base}/empty.txt", timeout=10).status_code == 401
    assert server.api("POST", f"/dbfs{base}/empty.txt?overwrite=false", data=b"1").status_code == 409


# -- atomic writes: a dropped connection leaves nothing ----------------------------------------
def _send_partial(server, request_head: bytes, sent_body: bytes) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request_head + sent_body)
        time.sleep(0.3)
    # The socket is closed here, long before Content-Length bytes arrived.


def _head(server, method: str, target: str, length: int, ctype: str = "application/octet-stream") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.token}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {length}\r\n\r\n").encode()


def _wait_no_leftovers(server) -> None:
    deadline = time.time() + 10
    while leftovers(server) and time.time() < deadline:
        time.sleep(0.1)
    assert leftovers(server) == []


@pytest.mark.parametrize("style", ["raw-dbfs", "files-api", "json-put", "multipart-put"])
def test_dropped_connection_leaves_no_file(server, w, unique, style):
    folder = f"/FileStore/{unique('drop')}"
    w.dbfs.mkdirs(folder)
    name = "target.bin"
    chunk = os.urandom(200_000)
    if style == "raw-dbfs":
        head = _head(server, "POST", f"/dbfs{folder}/{name}", 5 * MIB)
        body = chunk
    elif style == "files-api":
        head = _head(server, "PUT", f"/api/2.0/fs/files{folder}/{name}?overwrite=true", 5 * MIB)
        body = chunk
    elif style == "json-put":
        head = _head(server, "POST", "/api/2.0/dbfs/put", 5 * MIB, "application/json")
        body = f'{{"path": "{folder}/{name}", "overwrite": true, "contents": "{b64(chunk)}'.encode()
    else:
        boundary = "XyZ"
        head = _head(server, "POST", "/api/2.0/dbfs/put", 5 * MIB, f"multipart/form-data; boundary={boundary}")
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\n{folder}/{name}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + chunk
    _send_partial(server, head, body)
    _wait_no_leftovers(server)
    assert status(server, f"{folder}/{name}").status_code == 404
    assert server.api("GET", "/api/2.0/dbfs/list", params={"path": folder}).json() == {}
    assert os.listdir(server.settings.dbfs_root / folder.lstrip("/")) == []


def test_short_body_with_content_length_is_refused(server, w, unique):
    """A client that announces more bytes than it sends and then half-closes gets nothing written."""
    path = f"/FileStore/{unique('short')}.bin"
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(_head(server, "POST", f"/dbfs{path}", 1000) + b"x" * 10)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(4096)
    _wait_no_leftovers(server)
    assert status(server, path).status_code == 404


# -- paths: prefix, normalisation, confinement -----------------------------------------------------
def test_paths_are_normalised(server, w, unique):
    name = unique("norm")
    w.dbfs.put(f"dbfs:/FileStore//{name}/./a.txt", contents=b64(b"a"), overwrite=True)
    assert w.dbfs.get_status(f"/FileStore/{name}/a.txt").path == f"/FileStore/{name}/a.txt"
    assert server.api("GET", "/api/2.0/dbfs/get-status",
                      params={"path": f"DBFS:/FileStore/{name}/"}).json()["path"] == f"/FileStore/{name}"


TRAVERSALS = [
    "/../etc/passwd",
    "dbfs:/../../etc/passwd",
    "/FileStore/../../x",
    "/FileStore/..",
    "/a/%2e%2e/%2e%2e/etc/passwd",
    "/a/%2E%2E/x",
    "/a/%252e%252e/%252e%252e/x",
    "/a/%25252e%25252e/x",
    "/a/b\x00c",
    "/a/%00/b",
    "/a\\..\\..\\x",
    "/a/%5c..%5cx",
    "relative/path",
    "dbfs:relative",
    "",
    "/FileStore/" + "n" * 256,
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_refused(server, path):
    for method, endpoint, kw in (
        ("GET", "get-status", {"params": {"path": path}}),
        ("GET", "list", {"params": {"path": path}}),
        ("POST", "put", {"json": {"path": path, "contents": b64(b"pwned"), "overwrite": True}}),
        ("POST", "mkdirs", {"json": {"path": path}}),
        ("POST", "create", {"json": {"path": path, "overwrite": True}}),
        ("POST", "delete", {"json": {"path": path, "recursive": True}}),
        ("POST", "move", {"json": {"source_path": "/FileStore", "destination_path": path}}),
    ):
        r = server.api(method, f"/api/2.0/dbfs/{endpoint}", **kw)
        err(r, 400, "INVALID_PARAMETER_VALUE")
    home = server.settings.home
    assert not (home / "pwned").exists() and not (home.parent / "x").exists()


@pytest.mark.parametrize("target", ["/dbfs/%2e%2e/%2e%2e/master.key", "/dbfs/..%2f..%2fmaster.key",
                                    "/dbfs/x/%252e%252e/%252e%252e/%252e%252e/master.key",
                                    "/dbfs/../../master.key", "/dbfs/a%00b", "/dbfs/a%5c..%5c..%5cmaster.key"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_raw_path_traversal_is_refused(server, target, method):
    # http.client sends the target exactly as written (requests would normalise the dots).
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, target, body=b"pwned" if method == "POST" else None, headers=server.headers())
    reply = conn.getresponse()
    body = json.loads(reply.read())
    conn.close()
    assert (reply.status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), body
    assert not (server.settings.home.parent / "master.key").exists()


def test_symlink_out_of_root_is_refused(server, w, unique, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    link = server.settings.dbfs_root / unique("link")
    link.symlink_to(outside, target_is_directory=True)
    inside = "/" + link.name
    err(status(server, f"{inside}/secret.txt"), 400, "INVALID_PARAMETER_VALUE")
    err(server.api("GET", "/api/2.0/dbfs/read", params={"path": f"{inside}/secret.txt"}), 400,
        "INVALID_PARAMETER_VALUE")
    err(server.api("POST", "/api/2.0/dbfs/put", json={"path": f"{inside}/new.txt", "contents": b64(b"x")}), 400,
        "INVALID_PARAMETER_VALUE")
    err(server.api("POST", "/api/2.0/dbfs/delete", json={"path": f"{inside}/secret.txt"}), 400,
        "INVALID_PARAMETER_VALUE")
    err(server.api("GET", f"/dbfs{inside}/secret.txt"), 400, "INVALID_PARAMETER_VALUE")
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    link.unlink()


# -- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize("method,endpoint", [
    ("POST", "put"), ("POST", "create"), ("POST", "add-block"), ("POST", "close"), ("GET", "read"),
    ("GET", "list"), ("GET", "get-status"), ("POST", "mkdirs"), ("POST", "delete"), ("POST", "move"),
])
def test_every_endpoint_needs_a_token(server, method, endpoint):
    r = requests.request(method, f"{server.url}/api/2.0/dbfs/{endpoint}", json={"path": "/FileStore"}, timeout=10)
    err(r, 401, "UNAUTHENTICATED")
    r = server.api(method, f"/api/2.0/dbfs/{endpoint}", token="dapi" + "9" * 32, json={"path": "/FileStore"})
    err(r, 401, "UNAUTHENTICATED")


def test_restart_sweeps_only_stale_temp_files(tmp_path):
    """A crash leaves temp files; the next start removes old ones, never a live upload's."""
    from brickyard.storage.dbfs import DbfsStorage

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    old, fresh, other = tmp / "dbfs-crashed", tmp / "dbfs-live", tmp / "notebook-scratch"
    for p in (old, fresh, other):
        p.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    os.utime(other, (two_days_ago, two_days_ago))
    DbfsStorage(tmp_path / "dbfs", tmp, stale_after=3600)
    assert sorted(p.name for p in tmp.iterdir()) == ["dbfs-live", "notebook-scratch"]
