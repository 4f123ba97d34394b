"""The unmodified legacy `databricks` CLI (0.18) against a real `brickyard up` on port 80.

databricks-cli drops the port of its host setting, so only a server on port 80 reaches it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import ADMIN_TOKEN, REPO, run_cli_server

PORT = 80
CLI = REPO / ".venv" / "bin" / "databricks"
MIB = 1 << 20


def _port_free(port: int) -> str | None:
    """None when we can listen on the port, else why not."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return f"cannot listen on 127.0.0.1:{port}: {exc.strerror}"
    return None


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    reason = _port_free(PORT)
    if reason:
        pytest.skip(reason)
    if not CLI.exists():
        pytest.skip(f"{CLI} is not installed")
    root = tmp_path_factory.mktemp("legacy")
    proc = run_cli_server(root / "brickyard", PORT, {"BRICKYARD_BOOTSTRAP_TOKEN": ADMIN_TOKEN})
    home = root / "user"
    home.mkdir()
    (home / ".databrickscfg").write_text(f"[DEFAULT]\nhost = http://127.0.0.1\ntoken = {ADMIN_TOKEN}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    env["HOME"] = str(home)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(CLI), *args], env=env, cwd=root, capture_output=True, text=True, timeout=120)

    run.root = root
    yield run
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()




def test_fs_cp_round_trip_3mib(cli):
    data = os.urandom(3 * MIB)
    src = Path(cli.root) / "three_mb.bin"
    src.write_bytes(data)
    up = cli("fs", "cp", str(src), "dbfs:/FileStore/x.bin")
    assert up.returncode == 0, up.stdout + up.stderr
    ls = cli("fs", "ls", "dbfs:/FileStore")
    assert ls.returncode == 0 and "x.bin" in ls.stdout.split(), ls.stdout + ls.stderr
    long = cli("fs", "ls", "-l", "dbfs:/FileStore")
    assert str(len(data)) in long.stdout, long.stdout
    back = Path(cli.root) / "back.bin"
    down = cli("fs", "cp", "dbfs:/FileStore/x.bin", str(back))
    assert down.returncode == 0, down.stdout + down.stderr
    assert back.read_bytes() == data
    # Again without --overwrite: refused, and the server's error code is shown.
    again = cli("fs", "cp", str(src), "dbfs:/FileStore/x.bin")
    assert again.returncode != 0
    assert "RESOURCE_ALREADY_EXISTS" in again.stdout + again.stderr
    src.write_bytes(b"smaller now")
    forced = cli("fs", "cp", "--overwrite", str(src), "dbfs:/FileStore/x.bin")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    cat = cli("fs", "cat", "dbfs:/FileStore/x.bin")
    assert cat.stdout == "smaller now"


def test_fs_tree_commands(cli):
    assert cli("fs", "mkdirs", "dbfs:/FileStore/cli/a/b").returncode == 0
    ls = cli("fs", "ls", "dbfs:/FileStore/cli/a")
    assert ls.stdout.split() == ["b"], ls.stdout
    assert cli("fs", "mv", "dbfs:/FileStore/cli/a", "dbfs:/FileStore/cli/z").returncode == 0
    assert cli("fs", "ls", "dbfs:/FileStore/cli").stdout.split() == ["z"]
    missing = cli("fs", "ls", "dbfs:/FileStore/cli/nope")
    assert missing.returncode != 0 and "RESOURCE_DOES_NOT_EXIST" in missing.stdout + missing.stderr
    assert cli("fs", "rm", "-r", "dbfs:/FileStore/cli").returncode == 0
    assert "cli" not in cli("fs", "ls", "dbfs:/FileStore").stdout.split()
    bad = cli("fs", "ls", "dbfs:/../../etc")
    assert bad.returncode != 0 and "INVALID_PARAMETER_VALUE" in bad.stdout + bad.stderr


def test_workspace_ls(cli):
    out = cli("workspace", "ls", "/")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Users" in out.stdout.split()


def test_secrets_list_scopes(cli):
    out = cli("secrets", "list-scopes")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_the_readmes_cli_commands(tmp_path):
    """scripts/check-legacy-cli: every command README's "Using the databricks CLI" shows, with the profile
    `brickyard up --profile yes` writes, against a fresh workspace on port 80 in a network namespace of its own."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("scripts/check-legacy-cli needs root, unshare and ip (a network namespace)")
    done = subprocess.run([str(REPO / "scripts" / "check-legacy-cli")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "FAILED" not in done.stdout and "$ databricks clusters list" in done.stdout, done.stdout[-4000:]
