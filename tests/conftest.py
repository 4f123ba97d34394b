"""The real server on a free loopback port, driven by the real clients."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import uvicorn

from brickyard.app import create_app
from brickyard.bootstrap import bootstrap
from brickyard.context import open_workspace
from brickyard.settings import Settings
from ui_support import anon_page, browser, page  # noqa: F401 - web UI fixtures (Playwright)

REPO = Path(__file__).resolve().parent.parent
# A private variable of the workspace process: it must never reach drivers, workers or kernels.
SENTINEL = "sentinel-private-to-the-workspace"
os.environ["BRICKYARD_TEST_SENTINEL"] = SENTINEL
ADMIN_TOKEN = "dapi" + "0123456789abcdef" * 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    token: str
    settings: Settings
    workspace: object

    def headers(self, token: str | None = None) -> dict:
        return {"Authorization": f"Bearer {token or self.token}"}

    def api(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = {**self.headers(token), **kw.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def client(self, token: str | None = None):
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.core import Config

        return WorkspaceClient(config=Config(host=self.url, token=token or self.token,
                                             retry_timeout_seconds=20, auth_type="pat"))

    def new_user(self, user_name: str, admin: bool = False) -> tuple[str, str]:
        """Create a user and a token for them (as the admin); returns (user_id, token)."""
        body = {"userName": user_name}
        if admin:
            body["groups"] = [{"value": "admins"}]
        r = self.api("POST", "/api/2.0/preview/scim/v2/Users", json=body)
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        r = self.api("POST", "/api/2.0/token-management/on-behalf-of/tokens",
                     json={"application_id": uid, "comment": "test"})
        assert r.status_code == 200, r.text
        return uid, r.json()["token_value"]


class ThreadedServer:
    """uvicorn in a thread of the test process; waits for `started`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.workspace = open_workspace(settings)
        bootstrap(self.workspace)
        app = create_app(workspace=self.workspace)
        config = uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.workspace.close()


def make_settings(home: Path, **extra) -> Settings:
    return Settings(home=home, host="127.0.0.1", port=free_port(), bootstrap_token=ADMIN_TOKEN, **extra)


@contextmanager
def server_with_env(home: Path, env: dict[str, str]):
    """A workspace of its own on `home`, whose settings read BRICKYARD_* variables `env` (set only while the
    settings are made); yields its Server and stops it afterwards."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        threaded = ThreadedServer(make_settings(home))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    threaded.start()
    try:
        yield Server(f"http://127.0.0.1:{threaded.settings.port}", ADMIN_TOKEN, threaded.settings, threaded.workspace)
    finally:
        threaded.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    logging.getLogger("databricks.sdk").setLevel(logging.ERROR)
    settings = make_settings(tmp_path_factory.mktemp("home") / "brickyard")
    srv = ThreadedServer(settings)
    srv.start()
    yield Server(f"http://127.0.0.1:{settings.port}", ADMIN_TOKEN, settings, srv.workspace)
    srv.stop()


@pytest.fixture(scope="session")
def w(server):
    return server.client()


_counter = iter(range(1, 10**9))


@pytest.fixture
def unique():
    """A fresh name per call, so tests sharing the session server do not collide."""
    return lambda prefix="t": f"{prefix}{os.getpid()}x{next(_counter)}"


def run_cli_server(home: Path, port: int, env_extra: dict | None = None) -> subprocess.Popen:
    """`brickyard up` as a real process (for restart and signal tests)."""
    env = dict(os.environ)
    env.update({"BRICKYARD_HOME": str(home), "BRICKYARD_PORT": str(port), "BRICKYARD_HOST": "127.0.0.1"})
    env.update(env_extra or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "brickyard.cli", "up", "--profile", "no"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proc
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not come up")


@pytest.fixture(scope="session")
def cluster_id(w) -> str:
    """One running Single Node cluster shared by the tests that only run code on it."""
    from datetime import timedelta

    details = w.clusters.create_and_wait(
        cluster_name="shared-test-cluster", spark_version="17.3.x-cpu-ml-scala2.13", node_type_id="local.medium",
        num_workers=0, spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"},
        custom_tags={"ResourceClass": "SingleNode"}, timeout=timedelta(minutes=5),
    )
    yield details.cluster_id
    w.clusters.permanent_delete(details.cluster_id)
