"""Shared by the mount tests (tests/test_mounts.py, tests/test_dbfs_fuse.py): the S3 server (moto), Azurite,
the internal mounts API, and running Python on a cluster.

Import the fixtures (moto, bucket, azurite) into a test module to use them there.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from brickyard.compute import runtime
from command_support import run, text  # noqa: F401 - the mount tests import them from here

MOUNTS = "/api/2.0/brickyard/mounts"
T = timedelta(minutes=4)
SECRET = "moto-secret-" + "s3cr3t" * 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while not runtime.port_open(port):
        assert proc.poll() is None and time.time() < deadline, "moto server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    log.close()


def s3(endpoint: str):  # noqa: ANN201
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="AKIDMOTO", aws_secret_access_key=SECRET,
                        region_name="us-east-1")


def s3_configs(endpoint: str) -> dict:
    return {"fs.s3a.endpoint": endpoint, "fs.s3a.access.key": "AKIDMOTO", "fs.s3a.secret.key": SECRET,
            "fs.s3a.path.style.access": "true", "fs.s3a.endpoint.region": "us-east-1",
            "fs.s3a.connection.ssl.enabled": "false"}


@pytest.fixture
def bucket(moto, unique):
    name = unique("bkt").lower()
    s3(moto).create_bucket(Bucket=name)
    return name


def mount(server, source, point, configs=None, token=None):  # noqa: ANN001, ANN201
    return server.api("POST", f"{MOUNTS}/create", token,
                      json={"source": source, "mount_point": point, "extra_configs": configs or {}})


def unmount(server, point, token=None):  # noqa: ANN001, ANN201
    return server.api("POST", f"{MOUNTS}/delete", token, json={"mount_point": point})


def missing(reason: str) -> None:
    """A test peer or jar that is not installed: skip on a developer machine, fail in CI (./dev test installs it)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


AZURITE_ACCOUNT = "devstoreaccount1"  # Azurite's well-known development account and key
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_exe() -> str:
    import shutil

    cached = Path(os.environ.get("BRICKYARD_NODE_CACHE", Path.home() / ".cache/brickyard/node"))
    cached = cached / "node_modules/.bin/azurite-blob"
    exe = os.environ.get("BRICKYARD_AZURITE") or shutil.which("azurite-blob") or (str(cached) if cached.exists() else "")
    if not exe:
        missing("Azurite is not installed (./dev test installs it with npm into ~/.cache/brickyard/node; "
                "or set BRICKYARD_AZURITE to an azurite-blob)")
    return exe


def azurite_server(folder: Path, extra: list[str] = (), env: dict | None = None):  # noqa: ANN202
    """Start Azurite's Blob service on a free loopback port; yields 127.0.0.1:<port>, stops it after."""
    port = free_port()
    log = open(folder / "azurite.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([azurite_exe(), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                             str(folder / "data"), "--skipApiVersionCheck", "--loose", *extra],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    deadline = time.time() + 60
    while not runtime.port_open(port):
        assert proc.poll() is None and time.time() < deadline, "Azurite did not start"
        time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # Azurite may finish its requests first
        proc.kill()
        proc.wait(10)
    log.close()


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    """Azurite's Blob service over plain HTTP (npm package azurite: $BRICKYARD_AZURITE or azurite-blob on PATH)."""
    yield from azurite_server(tmp_path_factory.mktemp("azurite"))


# Azurite has the Blob API only: ABFS uses it for a flat-namespace (FNS) account (service type BLOB).
AZURITE_FNS = {"fs.azure.account.hns.enabled": "false", "fs.azure.fns.account.service.type": "BLOB",
               "fs.azure.networking.library": "JDK_HTTP_URL_CONNECTION",
               "fs.azure.createRemoteFileSystemDuringInitialization": "true"}


def azure_blobs(endpoint: str, account: str, key: str, container: str, tls: bool = False):  # noqa: ANN202
    """A ContainerClient of Azurite's container (path-style), created if missing."""
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import ContainerClient

    cc = ContainerClient(f"{'https' if tls else 'http'}://{endpoint}/{account}", container,
                         credential=AzureNamedKeyCredential(account, key))
    try:
        cc.create_container()
    except ResourceExistsError:
        pass
    return cc
