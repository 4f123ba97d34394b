"""Reads through /dbfs/mnt (the FUSE file system of kernels) vs boto3 straight from the store, as ratios.

Starts a workspace (`brickyard up`) and moto's S3 server, mounts s3a://<bucket>/bench on /mnt/bench,
writes a 64 MiB object and a ~7 MB CSV with boto3, then, in a process started as kernels are (its own
mount namespace, /dbfs/mnt mounted by dbfs_fuse.start_from_kernel), times reading them whole with open()
and pd.read_csv, once with the ranged Files API reads (the default) and once with dbfs/read only
(BRICKYARD_DBFS_FUSE_RANGES=0, what workspaces without ranged object-store reads get). The same reads
with boto3 (get_object, pd.read_csv of the body) are the baseline. Medians of --rounds.

Needs root, /dev/fuse, libfuse 3 and unshare (as the FUSE tests do); says so and exits 0 without them.

    python bench/dbfs_fuse.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import ctypes.util
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking import TOKEN, free_port, start_workspace, wait_healthy  # noqa: E402

MIB = 1 << 20
KEY_ID, SECRET = "AKIDBENCH", "bench-secret-" + "x" * 20

READER = """
import hashlib, json, os, statistics, sys, time
import pandas as pd
from brickyard.runtime import dbfs_fuse
if not dbfs_fuse.start_from_kernel(os.environ["BRICKYARD_DBFS_ROOT"]):
    print(json.dumps({"error": "not mounted"}))
    sys.exit(0)
P = "/dbfs/mnt/bench"
big, csv = [], []
for _ in range(int(os.environ["ROUNDS"])):
    t = time.perf_counter()
    h = hashlib.sha256()
    with open(P + "/big.bin", "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    big.append(time.perf_counter() - t)
    t = time.perf_counter()
    rows = len(pd.read_csv(P + "/data.csv"))
    csv.append(time.perf_counter() - t)
print(json.dumps({"big": statistics.median(big), "csv": statistics.median(csv), "sha": h.hexdigest(), "rows": rows}))
"""


def unusable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (kernels mount /dbfs/mnt in their own mount namespace)"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not ctypes.util.find_library("fuse3"):
        return "libfuse 3 is not installed (apt-get install libfuse3-3 fuse3)"
    if not shutil.which("unshare") or not shutil.which("mount"):
        return "unshare/mount (util-linux) are not installed"
    return None


def fuse_times(url: str, root: str, rounds: int, ranged: bool) -> dict:
    from brickyard.runtime import dbfs_paths

    env = {**os.environ, "BRICKYARD_HOST": url, "BRICKYARD_TOKEN": TOKEN, "BRICKYARD_DBFS_ROOT": root,
           "ROUNDS": str(rounds), "BRICKYARD_DBFS_FUSE_RANGES": "1" if ranged else "0"}
    proc = subprocess.run([*dbfs_paths.namespace_argv(root), sys.executable, "-c", textwrap.dedent(READER)],
                          env=env, capture_output=True, text=True, timeout=900)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the reader failed: {proc.stderr[-3000:]}")
    out = json.loads(lines[-1])
    if "error" in out:
        raise SystemExit(f"/dbfs/mnt was not mounted: {proc.stderr[-3000:]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    reason = unusable()
    if reason:
        print(f"dbfs_fuse bench skipped: {reason}")
        return
    import boto3
    import hashlib

    import pandas as pd

    tmp = Path(tempfile.mkdtemp(prefix="bench-dbfs-fuse-"))
    procs = []
    try:
        port = free_port()
        moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(moto)
        endpoint = f"http://127.0.0.1:{port}"
        wait_healthy(endpoint + "/moto-api/", moto, "moto server")
        url, ws = start_workspace(tmp)
        procs.append(ws)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                          region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        big = os.urandom(64 * MIB)
        frame = pd.DataFrame({"id": range(200_000), "name": [f"name-{i}" for i in range(200_000)],
                              "value": [i * 0.37 for i in range(200_000)]})
        csv = frame.to_csv(index=False).encode()
        s3.put_object(Bucket="bench", Key="bench/big.bin", Body=big)
        s3.put_object(Bucket="bench", Key="bench/data.csv", Body=csv)
        configs = {"fs.s3a.endpoint": endpoint, "fs.s3a.access.key": KEY_ID, "fs.s3a.secret.key": SECRET,
                   "fs.s3a.path.style.access": "true", "fs.s3a.connection.ssl.enabled": "false"}
        r = requests.post(url + "/api/2.0/brickyard/mounts/create", headers={"Authorization": f"Bearer {TOKEN}"},
                          json={"source": "s3a://bench/bench", "mount_point": "/mnt/bench", "extra_configs": configs},
                          timeout=60)
        r.raise_for_status()
        root = str(tmp / "brickyard" / "dbfs")
        if not Path(root).is_dir():
            raise SystemExit(f"no DBFS root at {root}")

        direct_big, direct_csv = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            body = s3.get_object(Bucket="bench", Key="bench/big.bin")["Body"].read()
            direct_big.append(time.perf_counter() - t)
            t = time.perf_counter()
            pd.read_csv(io.BytesIO(s3.get_object(Bucket="bench", Key="bench/data.csv")["Body"].read()))
            direct_csv.append(time.perf_counter() - t)
        assert body == big
        base = {"big": statistics.median(direct_big), "csv": statistics.median(direct_csv)}
        modes = {"/dbfs/mnt, ranged Files API reads": fuse_times(url, root, args.rounds, ranged=True),
                 "/dbfs/mnt, dbfs/read only (before)": fuse_times(url, root, args.rounds, ranged=False)}
        sha = hashlib.sha256(big).hexdigest()
        print(f"dbfs_fuse on {os.uname().nodename} ({args.rounds} round(s), median), baseline boto3 straight from moto:")
        print(f"  {'boto3 get_object':<40} 64 MiB {base['big']:6.2f} s   read_csv {len(csv) / 1e6:.1f} MB "
              f"{base['csv']:6.2f} s")
        for name, out in modes.items():
            assert out["sha"] == sha and out["rows"] == len(frame), f"{name}: wrong bytes"
            print(f"  {name:<40} 64 MiB {out['big']:6.2f} s (ratio to boto3 {out['big'] / base['big']:5.1f})   "
                  f"read_csv {out['csv']:6.2f} s (ratio {out['csv'] / base['csv']:4.1f})")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
