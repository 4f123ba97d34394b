"""/dbfs/mnt/<object-store mount> for local file APIs (open, os, pandas): the FUSE file system of
src/brickyard/runtime/dbfs_fuse.py over the real server's DBFS API.

Two ways in: a Python process started as kernels are (its own mount namespace, the DBFS root
bound on /dbfs) that mounts /dbfs/mnt exactly as kernel_init does, and notebook commands on a real
cluster through the SDK. Objects are put and checked with boto3 (moto's S3 server) and
azure-storage-blob (Azurite). Needs root, /dev/fuse and libfuse 3 (`./dev setup` installs
Debian's libfuse3-3): without them the tests skip, and fail under CI=true.
"""
from __future__ import annotations

import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
from databricks.sdk.service import compute
from mount_support import (  # noqa: F401 - moto, bucket, azurite are fixtures
    AZURITE_ACCOUNT, AZURITE_FNS, AZURITE_KEY, T, azure_blobs, azurite, bucket, missing, moto, mount, s3, s3_configs,
    text, unmount)

from brickyard.runtime import dbfs_paths


@pytest.fixture(scope="module")
def fuse_usable():
    """Root, /dev/fuse, libfuse 3 and unshare: what the kernels need to serve /dbfs/mnt."""
    if os.geteuid() != 0:
        missing("FUSE tests need root (kernels mount /dbfs/mnt in their own mount namespace)")
    if not os.path.exists("/dev/fuse"):
        missing("/dev/fuse does not exist")
    if not ctypes.util.find_library("fuse3"):
        missing("libfuse 3 is not installed (./dev setup installs it: apt-get install libfuse3-3 fuse3)")
    if not shutil.which("unshare") or not shutil.which("mount"):
        missing("unshare/mount (util-linux) are not installed")


def in_namespace(server, script: str, token: str | None = None, env: dict | None = None,
                 timeout: float = 240) -> tuple[dict, str]:
    """Run `script` as kernels run: own mount namespace, the DBFS root on /dbfs, /dbfs/mnt mounted by
    dbfs_fuse.start_from_kernel (as kernel_init does) first. Returns (the JSON it prints last, its stderr)."""
    root = str(server.settings.dbfs_root)
    prefix = dbfs_paths.namespace_argv(root)
    assert prefix, "no mount namespace"
    head = textwrap.dedent("""
        import json, os, sys
        from brickyard.runtime import dbfs_fuse
        _mounted = dbfs_fuse.start_from_kernel(os.environ["BRICKYARD_DBFS_ROOT"])
        _daemon_pid = dbfs_fuse._daemon.pid if dbfs_fuse._daemon else None
    """)
    full_env = {**os.environ, "BRICKYARD_HOST": server.url, "BRICKYARD_TOKEN": token or server.token,
                "BRICKYARD_DBFS_ROOT": root, **(env or {})}
    proc = subprocess.run([*prefix, sys.executable, "-c", head + textwrap.dedent(script)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-4000:]
    return json.loads(lines[-1]), proc.stderr


def gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # reap it if it is ours (it is not: its parent is the namespace's process)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    return False


S3_SCRIPT = """
import errno, hashlib, shutil
import pandas as pd
import requests
P = "/dbfs{point}"
out = {"mounted": _mounted, "daemon": _daemon_pid, "pid": os.getpid()}
out["mounts_line"] = [l.split()[4] for l in open("/proc/self/mountinfo") if " /dbfs/mnt " in l]
out["top"] = sorted(os.listdir("/dbfs/mnt"))
out["ls"] = sorted(os.listdir(P))
df = pd.read_csv(P + "/in.csv")
out["pandas"] = [len(df), list(df.columns), int(df["b"].sum())]
with open(P + "/dir/y.txt") as f:
    out["y"] = f.read()
with open(P + "/out.txt", "w") as f:
    f.write("written through FUSE\\n")
    f.write("second line\\n")
out["exists"] = [os.path.exists(P + "/out.txt"), os.path.exists(P + "/nope.txt"), os.path.isdir(P + "/dir")]
with open(P + "/dir/y.txt", "w") as f:  # an existing object is replaced whole
    f.write("replaced")
out["replaced"] = open(P + "/dir/y.txt").read()
out["size"] = os.path.getsize(P + "/out.txt")
try:
    open(P + "/nope.txt")
except FileNotFoundError as e:
    out["missing"] = e.errno
try:
    os.listdir(P + "/nope")
except FileNotFoundError as e:
    out["missing_dir"] = e.errno
os.makedirs(P + "/made/deeper", exist_ok=True)
out["made"] = [os.path.isdir(P + "/made/deeper"), sorted(os.listdir(P + "/made"))]
with open(P + "/made/deeper/z.bin", "wb") as f:
    f.write(b"z" * 10)
big = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: several read blocks, one upload
with open(P + "/big.bin", "wb") as f:
    for i in range(0, len(big), 100_000):
        f.write(big[i:i + 100_000])
with open(P + "/big.bin", "rb") as f:
    back = f.read()
    f.seek(1 << 20)
    mid = f.read(10)
out["big"] = [len(back), hashlib.sha256(back).hexdigest() == hashlib.sha256(big).hexdigest(),
              mid == big[1 << 20:(1 << 20) + 10]]
pd.DataFrame({"k": [1, 2, 3]}).to_csv(P + "/made/frame.csv", index=False)
out["frame"] = len(pd.read_csv(P + "/made/frame.csv"))
# pyarrow opens the path itself (native code) and reads the footer first: ranged reads out of order.
pd.DataFrame({"n": range(50_000), "s": ["v%d" % i for i in range(50_000)]}).to_parquet(P + "/t.parquet")
pq = pd.read_parquet(P + "/t.parquet")
out["parquet"] = [len(pq), int(pq["n"].sum()), pq["s"].iloc[-1]]
try:
    with open(P + "/out.txt", "a") as f:
        f.write("appended")
except OSError as e:
    out["append"] = e.errno
os.rename(P + "/made/frame.csv", P + "/made/renamed.csv")
out["renamed"] = sorted(os.listdir(P + "/made"))
shutil.copy(P + "/in.csv", P + "/copied.csv")
out["copied"] = open(P + "/copied.csv").read()
os.remove(P + "/copied.csv")
out["removed"] = os.path.exists(P + "/copied.csv")
try:
    os.rmdir(P + "/made")
except OSError as e:
    out["rmdir_nonempty"] = e.errno
os.remove(P + "/made/deeper/z.bin")
os.rmdir(P + "/made/deeper")
out["after_rmdir"] = sorted(os.listdir(P + "/made"))
# zipfile seeks back to write its headers: fine in a file being written (a local temporary file).
import zipfile
with zipfile.ZipFile(P + "/a.zip", "w") as z:
    z.writestr("inside.txt", "zipped")
out["zip"] = zipfile.ZipFile(P + "/a.zip").read("inside.txt").decode()
# A directory of an object store cannot be renamed (EXDEV): shutil.move copies it instead.
try:
    os.rename(P + "/made", P + "/moved")
except OSError as e:
    out["rename_dir"] = e.errno
shutil.move(P + "/made", P + "/moved")
out["moved"] = [sorted(os.listdir(P + "/moved")), os.path.exists(P + "/made")]
# Other processes of the namespace (%sh) see it too.
import subprocess
out["sh"] = subprocess.run(["cat", P + "/in.csv"], capture_output=True, text=True).stdout
# A mount made after the file system started is there at once (nothing is listed ahead).
r = requests.post(os.environ["BRICKYARD_HOST"] + "/api/2.0/brickyard/mounts/create",
                  headers={"Authorization": "Bearer " + os.environ["BRICKYARD_TOKEN"]},
                  json={"source": "s3a://{bucket}/late", "mount_point": "{late}", "extra_configs": {configs}})
out["late_mount"] = r.status_code
out["late"] = open("/dbfs{late}/l.txt").read()
out["late_top"] = "{late_name}" in os.listdir("/dbfs/mnt")
# Still the same DBFS: a file: mount and /dbfs/FileStore work as before, random writes included.
F = "/dbfs{local_point}"
with open(F + "/local.txt", "w") as f:
    f.write("0123456789")
with open(F + "/local.txt", "r+") as f:
    f.seek(3)
    f.write("xyz")
out["local"] = [open(F + "/local.txt").read(), sorted(os.listdir(F)), len(pd.read_csv(F + "/t.csv"))]
os.makedirs("/dbfs/FileStore/{fs_dir}", exist_ok=True)
with open("/dbfs/FileStore/{fs_dir}/f.txt", "w") as f:
    f.write("filestore")
out["filestore"] = open("/dbfs/FileStore/{fs_dir}/f.txt").read()
print(json.dumps(out))
"""


def test_fuse_serves_an_s3_mount_to_local_file_apis(server, fuse_usable, unique, moto, bucket, tmp_path):
    point, late = f"/mnt/{unique('fs3')}", f"/mnt/{unique('flate')}"
    local_point = f"/mnt/{unique('floc')}"
    client = s3(moto)
    client.put_object(Bucket=bucket, Key="base/in.csv", Body=b"a,b\n1,2\n3,4\n")
    client.put_object(Bucket=bucket, Key="base/dir/y.txt", Body=b"from boto3")
    client.put_object(Bucket=bucket, Key="late/l.txt", Body=b"mounted later")
    (tmp_path / "t.csv").write_text("x\n1\n2\n")
    assert mount(server, f"s3a://{bucket}/base", point, s3_configs(moto)).status_code == 200
    assert mount(server, f"file:{tmp_path}", local_point).status_code == 200
    fs_dir = unique("ffs")
    script = (S3_SCRIPT.replace("{point}", point).replace("{late}", late).replace("{bucket}", bucket)
              .replace("{late_name}", late.rsplit("/", 1)[1]).replace("{configs}", json.dumps(s3_configs(moto)))
              .replace("{local_point}", local_point).replace("{fs_dir}", fs_dir))
    try:
        out, stderr = in_namespace(server, script)
    finally:
        unmount(server, point)
        unmount(server, late)
        unmount(server, local_point)
    assert out["mounted"] is True, stderr
    assert out["mounts_line"] == ["/dbfs/mnt"]
    assert {point.rsplit("/", 1)[1], local_point.rsplit("/", 1)[1]} <= set(out["top"])
    assert out["ls"] == ["dir", "in.csv"]
    assert out["pandas"] == [2, ["a", "b"], 6]
    assert out["y"] == "from boto3"
    assert out["exists"] == [True, False, True] and out["size"] == len("written through FUSE\nsecond line\n")
    assert out["missing"] == 2 and out["missing_dir"] == 2  # ENOENT: FileNotFoundError
    assert out["made"] == [True, ["deeper"]]
    assert out["big"] == [3 * (1 << 20) + 7 * 256, True, True]
    assert out["frame"] == 3
    assert out["parquet"] == [50_000, sum(range(50_000)), "v49999"]
    assert out["append"] == 95  # EOPNOTSUPP: objects are replaced whole, as with DBFS FUSE
    assert out["renamed"] == ["deeper", "renamed.csv"]
    assert out["copied"] == "a,b\n1,2\n3,4\n" and out["removed"] is False
    assert out["rmdir_nonempty"] == 39  # ENOTEMPTY
    assert out["after_rmdir"] == ["renamed.csv"]
    assert out["zip"] == "zipped"
    assert out["rename_dir"] == 18 and out["moved"] == [["renamed.csv"], False]  # EXDEV
    assert out["sh"] == "a,b\n1,2\n3,4\n"
    assert out["replaced"] == "replaced"
    assert client.get_object(Bucket=bucket, Key="base/dir/y.txt")["Body"].read() == b"replaced"
    assert out["late_mount"] == 200 and out["late"] == "mounted later" and out["late_top"] is True
    assert out["local"] == ["012xyz6789", ["local.txt", "t.csv"], 2]
    assert (tmp_path / "local.txt").read_text() == "012xyz6789"
    assert out["filestore"] == "filestore"
    assert (server.settings.dbfs_root / "FileStore" / fs_dir / "f.txt").read_text() == "filestore"
    # What the notebook wrote is in the bucket, as boto3 sees it.
    body = client.get_object(Bucket=bucket, Key="base/out.txt")["Body"].read()
    assert body == b"written through FUSE\nsecond line\n"
    big = client.get_object(Bucket=bucket, Key="base/big.bin")["Body"].read()
    assert hashlib.sha256(big).hexdigest() == hashlib.sha256(bytes(range(256)) * (3 * 4096 + 7)).hexdigest()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="base/")["Contents"])
    assert "base/copied.csv" not in keys and "base/moved/renamed.csv" in keys and "base/a.zip" in keys
    assert not any(k.startswith("base/made") for k in keys)
    # The daemon left with its parent, and never wrote the token anywhere.
    assert gone(out["daemon"])
    assert server.token not in stderr
    # Nothing went wrong on the way (a failed operation logs a warning or a traceback).
    assert [line for line in stderr.splitlines() if line.strip()] == [
        f"brickyard dbfs-fuse: the kernel (pid {out['pid']}) is gone; unmounting /dbfs/mnt"], stderr


def test_fuse_serves_an_abfs_mount_on_azurite(server, fuse_usable, unique, azurite):
    host = f"{AZURITE_ACCOUNT}.dfs.core.windows.net"
    lake = azure_blobs(azurite, AZURITE_ACCOUNT, AZURITE_KEY, unique("flake").lower())
    lake.upload_blob("data/in.csv", b"a,b\n1,2\n")
    point = f"/mnt/{unique('fabfs')}"
    configs = {**AZURITE_FNS, f"fs.azure.account.key.{host}": AZURITE_KEY, "fs.azure.abfs.endpoint": azurite,
               "fs.azure.always.use.https": "false"}
    assert mount(server, f"abfs://{lake.container_name}@{host}/data", point, configs).status_code == 200
    script = """
import pandas as pd
P = "/dbfs{point}"
out = {"mounted": _mounted}
out["rows"] = len(pd.read_csv(P + "/in.csv"))
try:
    open(P + "/sub/out.txt", "w")
except FileNotFoundError:
    out["no_parent"] = True
os.mkdir(P + "/sub")
with open(P + "/sub/out.txt", "w") as f:
    f.write("to azure")
out["ls"] = sorted(os.listdir(P)) + sorted(os.listdir(P + "/sub"))
print(json.dumps(out))
""".replace("{point}", point)
    try:
        out, stderr = in_namespace(server, script)
    finally:
        unmount(server, point)
    assert out == {"mounted": True, "rows": 1, "no_parent": True, "ls": ["in.csv", "sub", "out.txt"]}, stderr
    assert lake.download_blob("data/sub/out.txt").readall() == b"to azure"


RESTART_SCRIPT = """
import signal, time
P = "/dbfs{point}/r.txt"

def read_back(limit=60):  # what the notebook sees until the daemon is back
    deadline, seen = time.time() + limit, set()
    while time.time() < deadline:
        try:
            return open(P).read(), sorted(seen)
        except OSError as e:
            seen.add(e.errno)
            time.sleep(0.2)
    return None, sorted(seen)

out = {"mounted": _mounted, "first": open(P).read(), "daemons": [_daemon_pid]}
for round_ in range(dbfs_fuse.RESTART_LIMIT + 1):
    os.kill(dbfs_fuse._daemon.pid, signal.SIGKILL)
    if round_ < dbfs_fuse.RESTART_LIMIT:
        out[f"after_kill_{round_}"] = read_back()
        out["daemons"].append(dbfs_fuse._daemon.pid)
time.sleep(3)  # the last stop is not restarted: /dbfs/mnt is then the DBFS root's folder, not a dead mount
try:
    open(P)
except OSError as e:
    missing = e.errno  # ENOENT (the object is not on this host), not ENOTCONN (a dead FUSE mount)
out["given_up"] = [os.path.ismount("/dbfs/mnt"), missing, dbfs_fuse._daemon.poll() is not None]
print(json.dumps(out))
"""


def test_a_killed_daemon_is_restarted_by_its_kernel(server, fuse_usable, unique, moto, bucket):
    """The daemon killed under a living kernel: the kernel mounts /dbfs/mnt again at once, RESTART_LIMIT times
    within RESTART_WINDOW seconds; past that it says so once and leaves the DBFS root's folder (never a dead
    mount, whose every access fails with ENOTCONN)."""
    from brickyard.runtime import dbfs_fuse

    point = f"/mnt/{unique('frst')}"
    s3(moto).put_object(Bucket=bucket, Key="restart/r.txt", Body=b"still here")
    assert mount(server, f"s3a://{bucket}/restart", point, s3_configs(moto)).status_code == 200
    try:
        out, stderr = in_namespace(server, RESTART_SCRIPT.replace("{point}", point))
    finally:
        unmount(server, point)
    assert out["mounted"] is True and out["first"] == "still here", stderr
    for round_ in range(dbfs_fuse.RESTART_LIMIT):
        assert out[f"after_kill_{round_}"][0] == "still here", (round_, out, stderr)
    daemons = out["daemons"]
    assert len(set(daemons)) == len(daemons) == dbfs_fuse.RESTART_LIMIT + 1, daemons
    assert out["given_up"] == [False, errno.ENOENT, True], stderr
    lines = [line for line in stderr.splitlines() if line.startswith("brickyard dbfs-fuse: ")]
    restarts = [f"brickyard dbfs-fuse: the daemon (pid {pid}) was killed by signal 9; mounting /dbfs/mnt again"
                for pid in daemons[:-1]]
    assert lines[:len(restarts)] == restarts, stderr
    assert lines[len(restarts)].startswith(f"brickyard dbfs-fuse: the daemon (pid {daemons[-1]}) was killed by "
                                           f"signal 9, its {dbfs_fuse.RESTART_LIMIT + 1}th stop within 60 s: "
                                           "not restarting it"), stderr
    assert server.token not in stderr


def test_no_fuse_logs_one_line_and_file_mounts_still_work(server, fuse_usable, unique, tmp_path):
    """Turned off (or unusable): start_from_kernel says why in one line, and /dbfs still serves file: mounts."""
    (tmp_path / "t.txt").write_text("local")
    point = f"/mnt/{unique('fnone')}"
    assert mount(server, f"file:{tmp_path}", point).status_code == 200
    try:
        out, stderr = in_namespace(server, f"""
print(json.dumps({{"mounted": _mounted, "read": open("/dbfs{point}/t.txt").read(),
                  "fuse": [l for l in open("/proc/self/mountinfo") if " /dbfs/mnt " in l]}}))
""", env={"BRICKYARD_DBFS_FUSE": "0"})
    finally:
        unmount(server, point)
    assert out == {"mounted": False, "read": "local", "fuse": []}
    lines = [line for line in stderr.splitlines() if "dbfs-fuse" in line]
    assert lines == ["brickyard dbfs-fuse: object-store mounts are not served under /dbfs/mnt (file: mounts are): "
                     "turned off (BRICKYARD_DBFS_FUSE=0)"], stderr


NOTEBOOK = """
import json, os, errno
import pandas as pd
from brickyard.runtime import dbfs_fuse
out = {"fuse": [l.split()[4] for l in open("/proc/self/mountinfo") if l.split(" - ")[1].startswith("fuse")],
       "daemon": dbfs_fuse._daemon.pid if dbfs_fuse._daemon else None}
# Mounted now, after the kernel started: there at once.
dbutils.fs.mount(source="s3a://{bucket}/base", mount_point="{point}", extra_configs={configs})
P = "/dbfs{point}"
out["ls"] = sorted(os.listdir(P))
out["pandas"] = pd.read_csv(P + "/in.csv").to_dict("list")
with open(P + "/out.txt", "w") as f:
    f.write("from a notebook")
out["exists"] = [os.path.exists(P + "/out.txt"), os.path.exists(P + "/nope.csv")]
os.makedirs(P + "/made/sub")
open(P + "/made/sub/gone.txt", "w").write("x")
os.remove(P + "/made/sub/gone.txt")
out["made"] = [os.path.isdir(P + "/made/sub"), os.listdir(P + "/made/sub")]
try:
    pd.read_csv(P + "/nope.csv")
except FileNotFoundError as e:
    out["missing"] = e.errno
A = "/dbfs{az_point}"
out["az_read"] = open(A + "/in.txt").read()
with open(A + "/out.txt", "w") as f:
    f.write("notebook to azure")
out["az_ls"] = sorted(os.listdir(A))
L = "/dbfs{local_point}"
out["local"] = pd.read_csv(L + "/t.csv")["x"].tolist()
pd.DataFrame({"y": [7]}).to_csv(L + "/w.csv", index=False)
os.makedirs("/dbfs/FileStore/{fs_dir}", exist_ok=True)
open("/dbfs/FileStore/{fs_dir}/f.txt", "w").write("filestore")
out["filestore"] = dbutils.fs.head("dbfs:/FileStore/{fs_dir}/f.txt")
out["dbutils_sees"] = sorted(f.name for f in dbutils.fs.ls("{point}"))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_notebooks_use_object_store_mounts_through_dbfs_mnt(server, w, cluster_id, fuse_usable, unique, moto, bucket,
                                                            azurite, tmp_path):
    """On a cluster, through the SDK: s3a:// (moto) and abfs:// (Azurite) mounts made after the kernel started are
    read and written with open, os and pandas under /dbfs/mnt, as file: mounts and /dbfs/FileStore still are;
    in a context that got the cluster's spare kernel (bound late to its user) and in one started afresh."""
    client = s3(moto)
    client.put_object(Bucket=bucket, Key="base/in.csv", Body=b"a,b\n1,x\n2,y\n")
    host = f"{AZURITE_ACCOUNT}.dfs.core.windows.net"
    lake = azure_blobs(azurite, AZURITE_ACCOUNT, AZURITE_KEY, unique("nblake").lower())
    lake.upload_blob("nb/in.txt", b"from azurite")
    (tmp_path / "t.csv").write_text("x\n4\n5\n")
    az_configs = {**AZURITE_FNS, f"fs.azure.account.key.{host}": AZURITE_KEY, "fs.azure.abfs.endpoint": azurite,
                  "fs.azure.always.use.https": "false"}
    contexts = [w.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.PYTHON,
                                                    timeout=T).id for _ in range(2)]
    points = []
    try:
        for ctx in contexts:
            point, az_point, local_point = (f"/mnt/{unique(p)}" for p in ("nbs3", "nbaz", "nbloc"))
            points += [point, az_point, local_point]
            # Made through the API after the kernel started, too.
            assert mount(server, f"abfs://{lake.container_name}@{host}/nb", az_point, az_configs).status_code == 200
            assert mount(server, f"file:{tmp_path}", local_point).status_code == 200
            fs_dir = unique("nbfs")
            code = (NOTEBOOK.replace("{bucket}", bucket).replace("{point}", point)
                    .replace("{configs}", repr(s3_configs(moto))).replace("{az_point}", az_point)
                    .replace("{local_point}", local_point).replace("{fs_dir}", fs_dir))
            out = json.loads(text(w, cluster_id, ctx, code).splitlines()[-1])
            assert out["fuse"] == ["/dbfs/mnt"] and out["daemon"], out
            assert out["ls"] == ["in.csv"] and out["pandas"] == {"a": [1, 2], "b": ["x", "y"]}
            assert out["exists"] == [True, False] and out["missing"] == 2
            assert out["made"] == [True, []]
            assert out["az_read"] == "from azurite" and out["az_ls"] == ["in.txt", "out.txt"]
            assert out["local"] == [4, 5] and (tmp_path / "w.csv").read_text() == "y\n7\n"
            assert out["filestore"] == "filestore"
            assert out["dbutils_sees"] == ["in.csv", "made/", "out.txt"]
            assert client.get_object(Bucket=bucket, Key="base/out.txt")["Body"].read() == b"from a notebook"
            assert lake.download_blob("nb/out.txt").readall() == b"notebook to azure"
            keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="base/made/")["Contents"])
            assert keys == ["base/made/", "base/made/sub/"]  # folder markers (as S3A writes them); gone.txt is gone
            w.command_execution.destroy(cluster_id, ctx)
            assert gone(out["daemon"]), "the FUSE daemon outlived its kernel"
            for p in (point, az_point, local_point):
                unmount(server, p)
            for key in ("base/out.txt", *keys):
                client.delete_object(Bucket=bucket, Key=key)
    finally:
        for ctx in contexts:
            try:
                w.command_execution.destroy(cluster_id, ctx)
            except Exception:  # noqa: BLE001 - destroyed already
                pass
        for p in points:
            unmount(server, p)
    logs = "".join(p.read_text(errors="replace") for p in server.settings.home.rglob("kernel.log"))
    assert server.token not in logs


def test_without_a_mount_namespace_the_kernel_goes_on_without_fuse(tmp_path):
    """Not root (so /dbfs is mapped in Python by dbfs_paths.install): no FUSE, one line in the kernel log."""
    root = tmp_path / "dbfs"
    (root / "FileStore").mkdir(parents=True)
    (root / "FileStore" / "a.txt").write_text("still here")
    code = f"""
from brickyard.runtime import dbfs_paths, dbfs_fuse
dbfs_paths.install({str(root)!r})
print(dbfs_fuse.start_from_kernel({str(root)!r}), open('/dbfs/FileStore/a.txt').read())
"""
    env = {**os.environ, "BRICKYARD_HOST": "http://127.0.0.1:9", "BRICKYARD_TOKEN": "dapi-not-used"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False still here"
    assert proc.stderr.splitlines() == [
        "brickyard dbfs-fuse: object-store mounts are not served under /dbfs/mnt (file: mounts are): /dbfs is not "
        "this kernel's own mount of the DBFS root (the workspace does not run as root)"]
