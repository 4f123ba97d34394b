"""The Files API download (GET/HEAD /api/2.0/fs/files/...) of files on object-store mounts: streamed from the
store in byte ranges, as /dbfs/mnt (runtime/dbfs_fuse.py) reads them. Objects are put with boto3 on moto's S3
server; everything else goes through requests and databricks-sdk against the real server."""
from __future__ import annotations

import base64
import os

import requests
from mount_support import bucket, moto, mount, s3, s3_configs, unmount  # noqa: F401 - fixtures

MIB = 1 << 20


def test_ranged_reads_of_an_object_on_an_s3_mount(server, w, unique, moto, bucket):
    data = os.urandom(3 * MIB + 12345)  # several of the server's stream chunks
    client = s3(moto)
    client.put_object(Bucket=bucket, Key="base/dir/obj.bin", Body=data)
    client.put_object(Bucket=bucket, Key="base/empty.txt", Body=b"")
    point = f"/mnt/{unique('fobj')}"
    assert mount(server, f"s3a://{bucket}/base", point, s3_configs(moto)).status_code == 200
    url = f"/api/2.0/fs/files{point}/dir/obj.bin"
    try:
        r = server.api("GET", url)
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-length"] == str(len(data)) and r.headers["accept-ranges"] == "bytes"
        r = server.api("GET", url, headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == data[100:200]
        assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
        start, end = MIB - 5, 2 * MIB + 7  # across the chunks the server sends
        r = server.api("GET", url, headers={"Range": f"bytes={start}-{end}"})
        assert r.status_code == 206 and r.content == data[start:end + 1]
        assert r.headers["content-length"] == str(end + 1 - start)
        r = server.api("GET", url, headers={"Range": "bytes=-10"})
        assert r.status_code == 206 and r.content == data[-10:]
        assert r.headers["content-range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"
        r = server.api("GET", url, headers={"Range": f"bytes={len(data) - 3}-{len(data) + 100}"})  # clipped
        assert r.status_code == 206 and r.content == data[-3:]
        # Past the end: 416 with the size, as for a local file; a malformed Range: 400.
        r = server.api("GET", url, headers={"Range": f"bytes={len(data)}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
        r = server.api("GET", url, headers={"Range": "bytes=5-2"})
        assert r.status_code == 400
        r = server.api("GET", f"/api/2.0/fs/files{point}/empty.txt", headers={"Range": "bytes=0-0"})
        assert r.status_code == 416 and r.headers["content-range"] == "bytes */0"
        r = server.api("HEAD", url)
        assert r.status_code == 200 and r.headers["content-length"] == str(len(data)) and r.content == b""
        assert r.headers["last-modified"].endswith("GMT")
        r = server.api("HEAD", url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.headers["content-length"] == "10" and r.content == b""
        # The SDK downloads it (and reads its metadata) as any other file.
        assert w.files.download(f"{point}/dir/obj.bin").contents.read() == data
        assert w.files.get_metadata(f"{point}/dir/obj.bin").content_length == len(data)
        # What is not there (or is a directory) is a 404, as for local files.
        for missing in (f"{point}/dir/nope.bin", f"{point}/dir"):
            r = server.api("GET", f"/api/2.0/fs/files{missing}", headers={"Range": "bytes=0-9"})
            assert r.status_code == 404 and r.json()["error_code"] == "NOT_FOUND", r.text
        # The object replaced behind the workspace's back: the next read sees the new bytes.
        client.put_object(Bucket=bucket, Key="base/dir/obj.bin", Body=b"0123456789")
        r = server.api("GET", url, headers={"Range": "bytes=2-4"})
        assert r.status_code == 206 and r.content == b"234" and r.headers["content-range"] == "bytes 2-4/10"
    finally:
        unmount(server, point)


def test_object_reads_are_allowed_and_refused_as_dbfs_read_is(server, unique, moto, bucket):
    """The same rules as dbfs/read for the path: any user of the workspace with a valid token (DBFS has no
    per-path ACLs), nobody without one."""
    client = s3(moto)
    client.put_object(Bucket=bucket, Key="base/secret.txt", Body=b"top secret")
    point = f"/mnt/{unique('facl')}"
    assert mount(server, f"s3a://{bucket}/base", point, s3_configs(moto)).status_code == 200
    path = f"{point}/secret.txt"
    _, user_token = server.new_user(f"{unique('reader')}@example.com")
    try:
        for token, expected in ((None, 200), (user_token, 200)):
            r = server.api("GET", "/api/2.0/dbfs/read", token, params={"path": path, "length": 6})
            assert r.status_code == expected and base64.b64decode(r.json()["data"]) == b"top se"
            r = server.api("GET", f"/api/2.0/fs/files{path}", token, headers={"Range": "bytes=0-5"})
            assert r.status_code == 206 and r.content == b"top se"
        for headers in ({}, {"Authorization": "Bearer dapi" + "7" * 32}):
            via_read = requests.get(server.url + "/api/2.0/dbfs/read", params={"path": path}, headers=headers,
                                    timeout=30)
            via_files = requests.get(server.url + f"/api/2.0/fs/files{path}",
                                     headers={**headers, "Range": "bytes=0-5"}, timeout=30)
            assert via_read.status_code == via_files.status_code == 401
            assert via_read.json()["error_code"] == via_files.json()["error_code"] == "UNAUTHENTICATED"
            assert b"secret" not in via_files.content
            head = requests.head(server.url + f"/api/2.0/fs/files{path}", headers=headers, timeout=30)
            assert head.status_code == 401 and "content-range" not in head.headers
    finally:
        unmount(server, point)


def test_dbfs_fuse_client_reads_ranges_and_through_dbfs_read(server, unique, moto, bucket, monkeypatch):
    """The reads /dbfs/mnt makes (runtime/dbfs_fuse.DbfsClient, no FUSE needed): ranged Files API requests, and
    dbfs/read in 1 MiB pieces when told to (BRICKYARD_DBFS_FUSE_RANGES=0), give the same bytes."""
    from brickyard.runtime import dbfs_fuse

    data = os.urandom(3 * MIB + 777)
    s3(moto).put_object(Bucket=bucket, Key="base/c.bin", Body=data)
    point = f"/mnt/{unique('fcli')}"
    assert mount(server, f"s3a://{bucket}/base", point, s3_configs(moto)).status_code == 200
    try:
        ranged = dbfs_fuse.DbfsClient(server.url, server.token)
        monkeypatch.setenv(dbfs_fuse.RANGES_ENV, "0")
        legacy = dbfs_fuse.DbfsClient(server.url, server.token)
        assert ranged.ranged and not legacy.ranged
        for client in (ranged, legacy):
            assert client.read(f"{point}/c.bin", 0, len(data)) == data
            assert client.read(f"{point}/c.bin", MIB - 3, 2 * MIB + 10) == data[MIB - 3:3 * MIB + 7]
            assert client.read(f"{point}/c.bin", 3 * MIB, 8 * MIB) == data[3 * MIB:]  # short at the end
            assert client.read(f"{point}/c.bin", len(data), MIB) == b""  # past the end
            try:
                client.read(f"{point}/nope.bin", 0, 10)
            except OSError as exc:
                assert exc.errno == 2, exc  # ENOENT
            else:
                raise AssertionError("a missing object was read")
        assert ranged.ranged  # this workspace serves ranges: no fallback happened
    finally:
        unmount(server, point)
