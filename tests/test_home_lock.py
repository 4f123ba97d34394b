"""One process at a time opens a workspace home. Opening a home marks its clusters' processes as gone and
stops leftover Spark daemons (they died with the previous process), and a master-key rotation under a running
workspace would seal its next secrets with a key nobody keeps; so a second `brickyard up`, `admin create-user`
or `admin rotate-master-key` on the home of a running workspace is refused with RESOURCE_CONFLICT naming the
process, and changes nothing. A killed workspace releases the home by dying."""
from __future__ import annotations

import base64
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import ADMIN_TOKEN, free_port, make_settings, run_cli_server

from brickyard.context import open_workspace
from brickyard.errors import BrickyardError

BRICKYARD = str(Path(sys.executable).with_name("brickyard"))


def brickyard(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BRICKYARD, *args], capture_output=True, text=True, timeout=180, env=env)


def test_a_second_process_on_a_running_home_is_refused_and_changes_nothing(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    server = run_cli_server(home, port, {"BRICKYARD_BOOTSTRAP_TOKEN": ADMIN_TOKEN})
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    api = f"http://127.0.0.1:{port}/api/2.0"
    try:
        assert requests.post(f"{api}/secrets/scopes/create", json={"scope": "kept"}, headers=auth).ok
        assert requests.post(f"{api}/secrets/put", json={"scope": "kept", "key": "k", "string_value": "v1"},
                             headers=auth).ok
        key_before = (home / "master.key").read_bytes()

        for args in (("admin", "create-user", "--home", str(home), "late@example.com"),
                     ("admin", "rotate-master-key", "--home", str(home)),
                     ("up", "--home", str(home), "--port", str(free_port()), "--profile", "no")):
            done = brickyard(*args)
            assert done.returncode == 1, (args, done.stdout, done.stderr)
            assert "error: RESOURCE_CONFLICT" in done.stderr and f"Brickyard process {server.pid}" in done.stderr
            assert "Stop it first" in done.stderr
        assert (home / "master.key").read_bytes() == key_before
        users = requests.get(f"{api}/preview/scim/v2/Users", headers=auth).json()["Resources"]
        assert "late@example.com" not in [u["userName"] for u in users]
        # The running workspace is untouched: it still writes and reads secrets with its keys.
        assert requests.post(f"{api}/secrets/put", json={"scope": "kept", "key": "k2", "string_value": "v2"},
                             headers=auth).ok

        # Killed, it releases the home by dying: the admin command works at once, and the data is intact.
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        done = brickyard("admin", "create-user", "--home", str(home), "late@example.com")
        assert done.returncode == 0, done.stderr
        assert "Created user late@example.com" in done.stdout
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    server = run_cli_server(home, port, {"BRICKYARD_BOOTSTRAP_TOKEN": ADMIN_TOKEN})
    try:
        users = requests.get(f"{api}/preview/scim/v2/Users", headers=auth).json()["Resources"]
        assert "late@example.com" in [u["userName"] for u in users]
        for key, value in (("k", "v1"), ("k2", "v2")):
            got = requests.get(f"{api}/secrets/get", params={"scope": "kept", "key": key}, headers=auth)
            assert got.status_code == 200, got.text
            assert base64.b64decode(got.json()["value"]).decode() == value
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def test_in_process_the_home_opens_again_once_closed(tmp_path):
    settings = make_settings(tmp_path / "home")
    ws = open_workspace(settings)
    try:
        with pytest.raises(BrickyardError) as err:
            open_workspace(settings)
        assert err.value.error_code == "RESOURCE_CONFLICT"
    finally:
        ws.close()
    again = open_workspace(settings)  # the lock went with close()
    again.close()
    # A failed open (a wrong master key) releases the lock too.
    with pytest.raises(BrickyardError, match="master key does not match"):
        open_workspace(make_settings(tmp_path / "home", master_key="A" * 43 + "="))
    open_workspace(settings).close()
