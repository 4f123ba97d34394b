"""Files API subset, signed URLs and /files/<path>, through databricks-sdk and raw HTTP."""
from __future__ import annotations

import base64
import datetime as dt
import io
import os
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from databricks.sdk.errors import AlreadyExists, NotFound

from brickyard.storage.dbfs import files_api_to_dbfs

MIB = 1 << 20


def err(r: requests.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["error_code"] == code, body
    return body


def dbfs_status(server, path: str) -> requests.Response:
    return server.api("GET", "/api/2.0/dbfs/get-status", params={"path": path})


def rfc3339(seconds_from_now: float) -> str:
    moment = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds_from_now)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_sdk_files_round_trip(server, w, unique):
    base = f"/Volumes/main/default/{unique('vol')}"
    data = os.urandom(3 * MIB)
    w.files.create_directory(f"{base}/sub")
    w.files.get_directory_metadata(f"{base}/sub")
    w.files.upload(f"{base}/sub/data.bin", io.BytesIO(data), overwrite=True)
    w.files.upload(f"{base}/top.txt", io.BytesIO(b"top"))
    assert w.files.download(f"{base}/sub/data.bin").contents.read() == data
    meta = w.files.get_metadata(f"{base}/sub/data.bin")
    assert meta.content_length == len(data) and meta.content_type == "application/octet-stream"
    assert meta.last_modified.endswith("GMT")
    entries = {e.name: e for e in w.files.list_directory_contents(base)}
    assert set(entries) == {"sub", "top.txt"}
    assert entries["sub"].is_directory and entries["top.txt"].file_size == 3
    assert entries["top.txt"].path == f"{base}/top.txt" and entries["top.txt"].last_modified > 0
    # The same bytes are in DBFS under the same path.
    assert w.dbfs.get_status(f"{base}/sub/data.bin").file_size == len(data)
    with pytest.raises(AlreadyExists):
        w.files.upload(f"{base}/top.txt", io.BytesIO(b"again"), overwrite=False)
    assert w.files.download(f"{base}/top.txt").contents.read() == b"top"
    w.files.upload(f"{base}/top.txt", io.BytesIO(b"new"), overwrite=True)
    assert w.files.download(f"{base}/top.txt").contents.read() == b"new"
    # A non-empty directory cannot be deleted; its files can.
    err(server.api("DELETE", f"/api/2.0/fs/directories{base}/sub"), 400, "DIRECTORY_NOT_EMPTY")
    w.files.delete(f"{base}/sub/data.bin")
    w.files.delete_directory(f"{base}/sub")
    with pytest.raises(NotFound):
        w.files.get_directory_metadata(f"{base}/sub")
    with pytest.raises(NotFound):
        w.files.delete(f"{base}/sub/data.bin")


def test_sdk_large_upload_and_parallel_download(server, w, unique, tmp_path):
    """Over 50 MiB the SDK first asks for a multipart session; our {} makes it send one PUT."""
    path = f"/Volumes/main/default/{unique('big')}/big.bin"
    data = os.urandom(1 << 16) * 1000  # 62.5 MiB
    w.files.upload(path, io.BytesIO(data), overwrite=True)
    assert w.files.get_metadata(path).content_length == len(data)
    target = tmp_path / "big.bin"
    # Parallel download: byte ranges of the signed URL.
    w.files.download_to(path, str(target), use_parallel=True)
    assert target.read_bytes() == data
    w.files.delete(path)


def test_missing_things_are_404(server, w, unique):
    base = f"/Volumes/main/default/{unique('miss')}"
    w.files.upload(f"{base}/f.txt", io.BytesIO(b"f"))
    with pytest.raises(NotFound):
        w.files.download(f"{base}/nope.txt").contents.read()
    with pytest.raises(NotFound):
        w.files.get_metadata(f"{base}/nope.txt")
    with pytest.raises(NotFound):
        list(w.files.list_directory_contents(f"{base}/nodir"))
    # A file is not a directory and a directory is not a file (MLflow relies on this 404).
    assert server.api("HEAD", f"/api/2.0/fs/directories{base}/f.txt").status_code == 404
    assert server.api("HEAD", f"/api/2.0/fs/directories{base}").status_code == 200
    assert server.api("HEAD", f"/api/2.0/fs/files{base}").status_code == 404
    err(server.api("GET", f"/api/2.0/fs/files{base}"), 404, "NOT_FOUND")
    err(server.api("DELETE", f"/api/2.0/fs/directories{base}/f.txt"), 404, "NOT_FOUND")
    err(server.api("PUT", f"/api/2.0/fs/directories{base}/f.txt/sub"), 409, "RESOURCE_ALREADY_EXISTS")


def test_range_and_head(server, w, unique):
    path = f"/Volumes/main/default/{unique('rng')}/r.bin"
    data = os.urandom(5000)
    r = server.api("PUT", f"/api/2.0/fs/files{path}", data=data)
    assert r.status_code == 204, r.text
    r = server.api("GET", f"/api/2.0/fs/files{path}", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == "bytes 100-199/5000"
    r = server.api("HEAD", f"/api/2.0/fs/files{path}")
    assert r.status_code == 200 and r.headers["content-length"] == "5000" and "last-modified" in r.headers
    assert r.content == b""


def test_put_overwrite_false_and_bad_paths(server, unique):
    path = f"/FileStore/{unique('ow')}.txt"
    assert server.api("PUT", f"/api/2.0/fs/files{path}?overwrite=false", data=b"1").status_code == 204
    err(server.api("PUT", f"/api/2.0/fs/files{path}?overwrite=false", data=b"2"), 409, "ALREADY_EXISTS")
    err(server.api("PUT", f"/api/2.0/fs/files{path}?overwrite=perhaps", data=b"2"), 400,
        "INVALID_PARAMETER_VALUE")
    assert server.api("GET", f"/api/2.0/fs/files{path}").content == b"1"
    for bad in ("/api/2.0/fs/files/a/%2e%2e/%2e%2e/x", "/api/2.0/fs/files/a/%252e%252e/x",
                "/api/2.0/fs/directories/a/%2e%2e/%2e%2e", "/api/2.0/fs/files/a%00"):
        for method in ("GET", "PUT", "DELETE"):
            err(server.api(method, bad, data=b"x"), 400, "INVALID_PARAMETER_VALUE")


def test_initiate_upload_falls_back_to_single_put(server, unique):
    path = f"/Volumes/main/default/{unique('mp')}/big.bin"
    r = server.api("POST", f"/api/2.0/fs/files{path}", params={"action": "initiate-upload", "overwrite": "true"})
    assert r.status_code == 200 and r.json() == {}
    err(server.api("POST", f"/api/2.0/fs/files{path}", params={"action": "complete-upload"}), 400,
        "INVALID_PARAMETER_VALUE")


def test_directory_listing_pages(server, w, unique):
    base = f"/Volumes/main/default/{unique('pages')}"
    for i in range(5):
        w.files.upload(f"{base}/f{i}.txt", io.BytesIO(b"x" * i))
    seen, token = [], None
    while True:
        params = {"page_size": 2, **({"page_token": token} if token else {})}
        body = server.api("GET", f"/api/2.0/fs/directories{base}", params=params).json()
        assert len(body["contents"]) <= 2
        seen += [c["name"] for c in body["contents"]]
        token = body.get("next_page_token")
        if not token:
            break
    assert seen == [f"f{i}.txt" for i in range(5)]
    assert [e.name for e in w.files.list_directory_contents(base, page_size=2)] == seen
    err(server.api("GET", f"/api/2.0/fs/directories{base}", params={"page_size": 5000}), 400,
        "INVALID_PARAMETER_VALUE")
    err(server.api("GET", f"/api/2.0/fs/directories{base}", params={"page_token": "***"}), 400,
        "INVALID_PARAMETER_VALUE")


# -- MLflow's hidden artifact paths --------------------------------------------------------------
def test_mlflow_paths_map_into_dbfs(server, w, unique):
    run = unique("run")
    hidden = f"/WorkspaceInternal/Mlflow/Artifacts/7/Runs/{run}/artifacts"
    r = server.api("PUT", f"/api/2.0/fs/files{hidden}/hello.txt", params={"overwrite": "true"}, data=b"hi",
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 204
    assert dbfs_status(server, f"/databricks/mlflow-tracking/7/{run}/artifacts/hello.txt").json()["file_size"] == 2
    assert server.api("HEAD", f"/api/2.0/fs/directories{hidden}").status_code == 200
    listing = server.api("GET", f"/api/2.0/fs/directories{hidden}").json()["contents"]
    assert [(c["path"], c["name"], c["is_directory"], c["file_size"]) for c in listing] == [
        (f"{hidden}/hello.txt", "hello.txt", False, 2)]
    model = unique("m-")
    lm = f"/WorkspaceInternal/Mlflow/Artifacts/7/LoggedModels/{model}/artifacts"
    w.files.upload(f"{lm}/MLmodel", io.BytesIO(b"flavors: {}"), overwrite=True)
    assert w.dbfs.download(f"/databricks/mlflow-tracking/7/logged_models/{model}/artifacts/MLmodel").read() == \
        b"flavors: {}"
    assert w.files.download(f"{lm}/MLmodel").contents.read() == b"flavors: {}"


@pytest.mark.parametrize("files_path,dbfs_path", [
    ("/WorkspaceInternal/Mlflow/Artifacts/1/Runs/abc/artifacts/x.txt",
     "/databricks/mlflow-tracking/1/abc/artifacts/x.txt"),
    ("/WorkspaceInternal/Mlflow/Artifacts/1/Runs/abc", "/databricks/mlflow-tracking/1/abc"),
    ("/WorkspaceInternal/Mlflow/Artifacts/1/LoggedModels/m-1/artifacts/MLmodel",
     "/databricks/mlflow-tracking/1/logged_models/m-1/artifacts/MLmodel"),
    ("/Volumes/c/s/v/f.csv", "/Volumes/c/s/v/f.csv"),
    ("/FileStore//a/./b", "/FileStore/a/b"),
    ("/Models/main/default/m/1/MLmodel", "/Models/main/default/m/1/MLmodel"),
])
def test_files_api_to_dbfs_mapping(files_path, dbfs_path):
    assert files_api_to_dbfs(files_path) == dbfs_path


# -- signed URLs -------------------------------------------------------------------------------
def test_signed_download_url(server, w, unique):
    path = f"/Volumes/main/default/{unique('sig')}/s.bin"
    data = os.urandom(100_000)
    w.files.upload(path, io.BytesIO(data))
    # Query parameters (the SDK) ...
    r = server.api("POST", "/api/2.0/fs/create-download-url", params={"path": path, "expire_time": rfc3339(600)})
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    assert isinstance(r.json()["headers"], list)
    got = requests.get(url, timeout=10)  # no token
    assert got.status_code == 200 and got.content == data
    part = requests.get(url, headers={"Range": "bytes=0-9"}, timeout=10)
    assert part.status_code == 206 and part.content == data[:10]
    # ... or a JSON body (MLflow's presigned repository).
    r = server.api("POST", "/api/2.0/fs/create-download-url", json={"path": path})
    assert requests.get(r.json()["url"], timeout=10).content == data
    # The SDK's own download asks create-download-url first, then GETs the URL.
    assert w.files.download(path).contents.read() == data
    # Tampering: another path, another expiry, another signature, another method.
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    base = f"{parts.scheme}://{parts.netloc}"
    for bad in (f"{base}{parts.path}x?{parts.query}",
                f"{base}{parts.path}?{urlencode({**q, 'expires': int(q['expires']) + 100})}",
                f"{base}{parts.path}?{urlencode({**q, 'signature': q['signature'][:-2] + 'AA'})}",
                f"{base}{parts.path}?expires={q['expires']}",
                f"{base}{parts.path}?{urlencode({**q, 'signature': 'é'})}"):
        r = requests.get(bad, timeout=10)
        assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content, (bad, r.text)
    r = requests.put(url, data=b"overwrite!", timeout=10)
    assert r.status_code == 403
    assert w.files.download(path).contents.read() == data


def test_signed_url_expires(server, w, unique):
    path = f"/FileStore/{unique('exp')}.txt"
    w.files.upload(path, io.BytesIO(b"soon gone"))
    r = server.api("POST", "/api/2.0/fs/create-download-url", params={"path": path, "expire_time": rfc3339(2)})
    url = r.json()["url"]
    assert requests.get(url, timeout=10).content == b"soon gone"
    time.sleep(3.1)
    r = requests.get(url, timeout=10)
    assert r.status_code == 403
    # The S3 wording lets the SDK fetch a fresh URL by itself.
    assert b"<Code>AccessDenied</Code>" in r.content and b"Request has expired" in r.content


def test_signed_upload_url(server, w, unique):
    path = f"/Models/main/default/{unique('mdl')}/1/MLmodel"
    r = server.api("POST", "/api/2.0/fs/create-upload-url", json={"path": path})
    assert r.status_code == 200
    url = r.json()["url"]
    assert requests.put(url, data=b"model bytes", timeout=10).status_code == 200
    assert w.files.download(path).contents.read() == b"model bytes"
    # An upload URL does not download.
    assert requests.get(url, timeout=10).status_code == 403


def test_create_url_errors(server, unique):
    path = f"/FileStore/{unique('urlerr')}.txt"
    err(server.api("POST", "/api/2.0/fs/create-download-url", params={"path": path}), 404, "NOT_FOUND")
    server.api("PUT", f"/api/2.0/fs/files{path}", data=b"x")
    err(server.api("POST", "/api/2.0/fs/create-download-url", params={"path": path, "expire_time": rfc3339(-60)}),
        400, "INVALID_PARAMETER_VALUE")
    err(server.api("POST", "/api/2.0/fs/create-download-url", params={"path": path, "expire_time": "tomorrow"}),
        400, "INVALID_PARAMETER_VALUE")
    err(server.api("POST", "/api/2.0/fs/create-download-url", json={}), 400, "INVALID_PARAMETER_VALUE")
    err(server.api("POST", "/api/2.0/fs/create-upload-url", json={"path": "/a/../../x"}), 400,
        "INVALID_PARAMETER_VALUE")
    # A far-away expiry is capped at one hour.
    url = server.api("POST", "/api/2.0/fs/create-download-url",
                     params={"path": path, "expire_time": rfc3339(86400 * 30)}).json()["url"]
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert expires <= time.time() + 3600 + 5


# -- /files/<path> serves FileStore -------------------------------------------------------------
def test_filestore_over_http(server, w, unique):
    folder = unique("fs")
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(64)
    w.dbfs.put(f"/FileStore/{folder}/plot.png", contents=base64.b64encode(png).decode(),
               overwrite=True)
    w.files.upload(f"/FileStore/{folder}/data.csv", io.BytesIO(b"a,b\n1,2\n"))
    r = server.api("GET", f"/files/{folder}/plot.png")
    assert r.status_code == 200 and r.content == png and r.headers["content-type"] == "image/png"
    r = server.api("GET", f"/files/{folder}/data.csv")
    assert r.content == b"a,b\n1,2\n" and r.headers["content-type"].startswith("text/csv")
    err(requests.get(f"{server.url}/files/{folder}/plot.png", timeout=10), 401, "UNAUTHENTICATED")
    err(server.api("GET", f"/files/{folder}/nope.png"), 404, "RESOURCE_DOES_NOT_EXIST")
    err(server.api("GET", f"/files/{folder}"), 404, "RESOURCE_DOES_NOT_EXIST")
    err(server.api("GET", "/files/%2e%2e/%2e%2e/master.key"), 400, "INVALID_PARAMETER_VALUE")
    # Read-only.
    assert server.api("PUT", f"/files/{folder}/plot.png", data=b"x").status_code == 405
    assert server.api("POST", f"/files/{folder}/plot.png", data=b"x").status_code == 405


# -- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", [
    ("GET", "/api/2.0/fs/files/FileStore/x"), ("HEAD", "/api/2.0/fs/files/FileStore/x"),
    ("PUT", "/api/2.0/fs/files/FileStore/x"), ("DELETE", "/api/2.0/fs/files/FileStore/x"),
    ("POST", "/api/2.0/fs/files/FileStore/x?action=initiate-upload"),
    ("GET", "/api/2.0/fs/directories/FileStore"), ("HEAD", "/api/2.0/fs/directories/FileStore"),
    ("PUT", "/api/2.0/fs/directories/FileStore/d"), ("DELETE", "/api/2.0/fs/directories/FileStore/d"),
    ("POST", "/api/2.0/fs/create-download-url?path=/FileStore/x"),
    ("POST", "/api/2.0/fs/create-upload-url?path=/FileStore/x"),
])
def test_files_api_needs_a_token(server, method, path):
    r = requests.request(method, server.url + path, data=b"x", timeout=10)
    assert r.status_code == 401
    if method != "HEAD":
        assert r.json()["error_code"] == "UNAUTHENTICATED"
    r = server.api(method, path, token="dapi" + "7" * 32, data=b"x")
    assert r.status_code == 401
