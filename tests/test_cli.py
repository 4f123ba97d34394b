"""`brickyard up` as a real process: first start, restart, signals, profile, bad settings."""
from __future__ import annotations

import base64
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys

import requests

from conftest import ADMIN_TOKEN, free_port, run_cli_server


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, out


def test_first_start_prints_token_and_secures_home(tmp_path):
    home, port = tmp_path / "home", free_port()
    cfg = tmp_path / "databrickscfg"
    cfg.write_text("[brickyard]\nhost = http://elsewhere\ntoken = keep-me\n")
    env = {"DATABRICKS_CONFIG_FILE": str(cfg)}
    proc = run_cli_server(home, port, env)
    try:
        r = requests.get(f"http://127.0.0.1:{port}/.well-known/databricks-config", timeout=5)
        assert r.ok
    finally:
        rc, out = stop(proc)
    assert rc == 0, out
    assert f"export DATABRICKS_HOST=http://127.0.0.1:{port}" in out
    token = re.search(r"export DATABRICKS_TOKEN=(dapi[0-9a-f]{32})", out).group(1)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "master.key").stat().st_mode) == 0o600
    with sqlite3.connect(home / "workspace.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    # The existing profile was not touched (--profile no in run_cli_server).
    assert "keep-me" in cfg.read_text()
    # Second start: same token works, no new banner.
    proc = run_cli_server(home, port, env)
    try:
        me = requests.get(f"http://127.0.0.1:{port}/api/2.0/preview/scim/v2/Me",
                          headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert me.status_code == 200 and me.json()["userName"] == "admin"
        assert me.headers["X-Databricks-Org-Id"].isdigit()
    finally:
        rc, out = stop(proc, signal.SIGINT)
    assert rc == 0
    assert "DATABRICKS_TOKEN=" not in out


def test_restart_keeps_data(tmp_path):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config
    from databricks.sdk.service.workspace import ExportFormat, ImportFormat, Language

    home, port = tmp_path / "home", free_port()
    env = {"BRICKYARD_BOOTSTRAP_TOKEN": ADMIN_TOKEN}
    url = f"http://127.0.0.1:{port}"

    def client():
        return WorkspaceClient(config=Config(host=url, token=ADMIN_TOKEN, retry_timeout_seconds=20))

    proc = run_cli_server(home, port, env)
    try:
        w = client()
        w.workspace.mkdirs("/Shared/kept/inner")
        tok = w.tokens.create(comment="survives restart")
        user = w.users.create(user_name="kept@example.com")
        w.secrets.create_scope(scope="kept")
        w.secrets.put_secret(scope="kept", key="pw", string_value="s3cret")
        w.dbfs.put("/FileStore/kept.txt", contents=base64.b64encode(b"kept bytes").decode(), overwrite=True)
        notebook = b"# Databricks notebook source\nprint('kept')\n"
        w.workspace.import_("/Shared/kept/nb", content=base64.b64encode(notebook).decode(),
                            format=ImportFormat.SOURCE, language=Language.PYTHON)
    finally:
        assert stop(proc)[0] == 0
    proc = run_cli_server(home, port, env)
    try:
        w = client()
        assert w.workspace.get_status("/Shared/kept/inner").object_type.value == "DIRECTORY"
        assert w.users.get(user.id).user_name == "kept@example.com"
        assert w.workspace.get_status("/Users/kept@example.com").object_type.value == "DIRECTORY"
        assert any(t.comment == "survives restart" for t in w.tokens.list())
        assert w.dbutils.secrets.get("kept", "pw") == "s3cret"
        assert w.dbfs.read("/FileStore/kept.txt").data == base64.b64encode(b"kept bytes").decode()
        exported = w.workspace.export("/Shared/kept/nb", format=ExportFormat.SOURCE)
        assert b"print('kept')" in base64.b64decode(exported.content)
        other = WorkspaceClient(config=Config(host=url, token=tok.token_value, retry_timeout_seconds=20))
        assert other.current_user.me().user_name == "admin"
    finally:
        assert stop(proc)[0] == 0


def test_profile_added_on_request(tmp_path):
    home, port = tmp_path / "home", free_port()
    cfg = tmp_path / "databrickscfg"
    cfg.write_text("[DEFAULT]\nhost = http://x\n")
    env = dict(os.environ, BRICKYARD_HOME=str(home), BRICKYARD_PORT=str(port),
               DATABRICKS_CONFIG_FILE=str(cfg), BRICKYARD_BOOTSTRAP_TOKEN=ADMIN_TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "brickyard.cli", "up", "--profile", "yes"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        import time
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
    finally:
        rc, out = stop(proc)
    assert rc == 0, out
    text = cfg.read_text()
    assert "[DEFAULT]" in text and "[brickyard]" in text and ADMIN_TOKEN in text
    assert stat.S_IMODE(cfg.stat().st_mode) in (0o600, 0o644)


def test_bad_bootstrap_token_is_refused(tmp_path):
    env = dict(os.environ, BRICKYARD_HOME=str(tmp_path / "h"), BRICKYARD_PORT=str(free_port()),
               BRICKYARD_BOOTSTRAP_TOKEN="not-a-token")
    proc = subprocess.run([sys.executable, "-m", "brickyard.cli", "up", "--profile", "no"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "dapi" in proc.stderr and "INVALID_PARAMETER_VALUE" in proc.stderr


def test_bad_port_setting_is_refused(tmp_path):
    env = dict(os.environ, BRICKYARD_HOME=str(tmp_path / "h"), BRICKYARD_PORT="99999")
    proc = subprocess.run([sys.executable, "-m", "brickyard.cli", "up", "--profile", "no"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "port" in proc.stderr
