"""JupyterLab and Jupyter clients on the workspace: `brickyard jupyter`, workspace contents, cluster kernels."""
from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import websocket
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session

from conftest import free_port

KERNELS = "/api/2.0/brickyard/kernels"
TABLE_MIME = "application/vnd.brickyard.table+json"
LAB_TOKEN = "jupyter-test-token"


class Lab:
    """A JupyterLab started by `brickyard jupyter`, driven over its REST API as a browser would."""

    def __init__(self, url: str, data_dir: Path, env: dict):
        self.url, self.data_dir, self.env = url, data_dir, env

    def api(self, method: str, path: str, **kw) -> requests.Response:
        return requests.request(method, self.url + path, headers={"Authorization": f"token {LAB_TOKEN}"},
                                timeout=120, **kw)


@pytest.fixture(scope="module")
def user(server):
    name = f"jupyter{os.getpid()}@example.com"
    _, token = server.new_user(name)
    return name, token


def _cli(server, token: str, *args: str, env_extra: dict | None = None, stdout=subprocess.PIPE,  # noqa: ANN001
         **kw) -> subprocess.Popen:
    env = {**os.environ, "DATABRICKS_TOKEN": token, **(env_extra or {})}
    env.pop("DATABRICKS_HOST", None)
    return subprocess.Popen([sys.executable, "-m", "brickyard.cli", "jupyter", "--host", server.url, *args],
                            env=env, stdout=stdout, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def lab(server, user, tmp_path_factory):
    base = tmp_path_factory.mktemp("jupyter")
    data_dir = base / "data"
    port = free_port()
    env = {"JUPYTER_TOKEN": LAB_TOKEN, "JUPYTER_CONFIG_DIR": str(base / "config"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "JUPYTER_DATA_DIR": str(base / "userdata")}
    log = open(base / "lab.log", "w")  # noqa: SIM115 - read when a test fails
    proc = _cli(server, user[1], "--no-browser", "--allow-root", "--port", str(port), "--data-dir", str(data_dir),
                env_extra=env, cwd=base, stdout=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"brickyard jupyter exited: {(base / 'lab.log').read_text()}")
        try:
            if requests.get(url + "/api/status", headers={"Authorization": f"token {LAB_TOKEN}"}, timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError("JupyterLab did not come up")
        time.sleep(0.3)
    yield Lab(url, data_dir, env)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    print((base / "lab.log").read_text()[-20000:])  # shown by pytest when a test failed


def _import(server, token: str, path: str, source: str) -> None:
    r = server.api("POST", "/api/2.0/workspace/import", token=token, json={
        "path": path, "format": "SOURCE", "language": "PYTHON", "overwrite": True,
        "content": base64.b64encode(source.encode()).decode()})
    assert r.status_code == 200, r.text


def _export(server, token: str, path: str, fmt: str = "SOURCE") -> str:
    r = server.api("GET", "/api/2.0/workspace/export", token=token, params={"path": path, "format": fmt})
    assert r.status_code == 200, r.text
    return base64.b64decode(r.json()["content"]).decode()


# ---- kernelspecs and the launcher --------------------------------------------------------------
def test_lab_lists_the_brickyard_kernelspec_and_keeps_the_token_private(lab, server):
    specs = lab.api("GET", "/api/kernelspecs").json()["kernelspecs"]
    spec = specs["brickyard"]["spec"]
    assert spec["display_name"].startswith("Brickyard")
    assert spec["interrupt_mode"] == "message"
    assert spec["argv"][1:4] == ["-m", "brickyard.jupyter.proxy", "-f"]
    assert spec["metadata"]["brickyard"]["host"] == server.url
    creds = lab.data_dir / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    kernel_json = (lab.data_dir / "kernels" / "brickyard" / "kernel.json").read_text()
    assert json.loads(creds.read_text())["token"] not in kernel_json


def test_cli_refuses_a_bad_token(server, tmp_path):
    proc = _cli(server, "dapi-not-a-token", "--kernelspecs-only", "--data-dir", str(tmp_path))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "UNAUTHENTICATED" in out
    assert not (tmp_path / "kernels").exists()


# ---- contents: workspace notebooks in JupyterLab -----------------------------------------------
def test_open_modify_save_a_workspace_notebook(lab, server, user):
    name, token = user
    folder = f"/Users/{name}/lab1"
    server.api("POST", "/api/2.0/workspace/mkdirs", token=token, json={"path": folder})
    _import(server, token, f"{folder}/etl", "# Databricks notebook source\nx = 1\n\n# COMMAND ----------\n\n"
                                            "%sql\nSELECT 1\n")
    listing = lab.api("GET", f"/api/contents{folder}").json()
    assert [(c["name"], c["type"]) for c in listing["content"]] == [("etl.ipynb", "notebook")]

    model = lab.api("GET", f"/api/contents{folder}/etl.ipynb").json()
    assert model["type"] == "notebook"
    cells = model["content"]["cells"]
    assert [c["source"] for c in cells] == ["x = 1", "%sql\nSELECT 1"]

    cells.append({"cell_type": "code", "source": "print('edited in JupyterLab')", "metadata": {},
                  "outputs": [], "execution_count": None})
    model["content"]["metadata"]["kernelspec"] = {"name": "brickyard", "display_name": "Brickyard",
                                                  "language": "python"}
    r = lab.api("PUT", f"/api/contents{folder}/etl.ipynb",
                json={"type": "notebook", "format": "json", "content": model["content"]})
    assert r.status_code == 200, r.text
    saved = r.json()

    source = _export(server, token, f"{folder}/etl")
    assert "print('edited in JupyterLab')" in source and "%sql" in source
    status = server.api("GET", "/api/2.0/workspace/get-status", token=token, params={"path": f"{folder}/etl"}).json()
    assert status["object_type"] == "NOTEBOOK"
    # JupyterLab compares this with the stored time to detect edits made elsewhere.
    reopened = lab.api("GET", f"/api/contents{folder}/etl.ipynb", params={"content": "0"}).json()
    assert reopened["last_modified"] == saved["last_modified"]
    assert json.loads(_export(server, token, f"{folder}/etl", "JUPYTER"))["metadata"]["kernelspec"]["name"] \
        == "brickyard"
    # A checkpoint ("Save and checkpoint") and its restore.
    assert lab.api("POST", f"/api/contents{folder}/etl.ipynb/checkpoints").status_code == 201
    assert len(lab.api("GET", f"/api/contents{folder}/etl.ipynb/checkpoints").json()) == 1


def test_new_rename_files_folders_and_delete(lab, server, user):
    name, token = user
    folder = f"/Users/{name}/lab2"
    assert lab.api("PUT", f"/api/contents{folder}", json={"type": "directory"}).status_code == 201
    r = lab.api("POST", f"/api/contents{folder}", json={"type": "notebook"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Untitled.ipynb"
    assert server.api("GET", "/api/2.0/workspace/get-status", token=token,
                      params={"path": f"{folder}/Untitled"}).json()["object_type"] == "NOTEBOOK"
    r = lab.api("PATCH", f"/api/contents{folder}/Untitled.ipynb", json={"path": f"{folder[1:]}/train.ipynb"})
    assert r.status_code == 200, r.text
    assert server.api("GET", "/api/2.0/workspace/get-status", token=token,
                      params={"path": f"{folder}/Untitled"}).status_code == 404

    r = lab.api("PUT", f"/api/contents{folder}/params.yaml",
                json={"type": "file", "format": "text", "content": "alpha: 0.5\n"})
    assert r.status_code == 201, r.text
    info = server.api("GET", "/api/2.0/workspace/get-status", token=token,
                      params={"path": f"{folder}/params.yaml"}).json()
    assert info["object_type"] == "FILE"
    assert lab.api("GET", f"/api/contents{folder}/params.yaml").json()["content"] == "alpha: 0.5\n"

    # A folder moves with its notebooks and files.
    r = lab.api("PATCH", f"/api/contents{folder}", json={"path": f"{folder[1:]}-moved"})
    assert r.status_code == 200, r.text
    moved = server.api("GET", "/api/2.0/workspace/list", token=token, params={"path": f"{folder}-moved"}).json()
    assert sorted((o["path"], o["object_type"]) for o in moved["objects"]) == [
        (f"{folder}-moved/params.yaml", "FILE"), (f"{folder}-moved/train", "NOTEBOOK")]
    assert server.api("GET", "/api/2.0/workspace/get-status", token=token,
                      params={"path": folder}).status_code == 404

    assert lab.api("DELETE", f"/api/contents{folder}-moved/train.ipynb").status_code == 204
    assert server.api("GET", "/api/2.0/workspace/get-status", token=token,
                      params={"path": f"{folder}-moved/train"}).status_code == 404


def test_contents_errors(lab, server, user):
    name, token = user
    folder = f"/Users/{name}/lab3"
    server.api("POST", "/api/2.0/workspace/mkdirs", token=token, json={"path": folder})
    _import(server, token, f"{folder}/a", "x = 1\n")
    _import(server, token, f"{folder}/b", "y = 2\n")
    assert lab.api("GET", f"/api/contents{folder}/missing.ipynb").status_code == 404
    # The contents manager acts as the user: another user's home stays closed.
    assert lab.api("GET", "/api/contents/Users/admin").status_code == 403
    assert lab.api("PUT", "/api/contents/Users/admin/x.ipynb",
                   json={"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4,
                                                         "nbformat_minor": 5}}).status_code == 403
    r = lab.api("PUT", f"/api/contents{folder}/not-a-notebook.txt",
                json={"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4,
                                                      "nbformat_minor": 5}})
    assert r.status_code == 400
    assert lab.api("PATCH", f"/api/contents{folder}/a.ipynb", json={"path": f"{folder[1:]}/b.ipynb"}).status_code \
        == 409
    assert _export(server, token, f"{folder}/b").rstrip().endswith("y = 2")
    r = lab.api("DELETE", f"/api/contents{folder}")
    assert r.status_code == 400  # not empty: nothing deleted
    assert server.api("GET", "/api/2.0/workspace/get-status", token=token, params={"path": f"{folder}/a"}).ok


# ---- the kernels API ---------------------------------------------------------------------------
def test_kernels_api_errors(server, user):
    _, token = user
    assert server.api("POST", f"{KERNELS}/create", token="dapi-bad", json={"cluster_id": "x"}).status_code == 401
    r = server.api("POST", f"{KERNELS}/create", token=token, json={})
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    r = server.api("POST", f"{KERNELS}/create", token=token, json={"cluster_id": "0000-000000-nothere"})
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    r = server.api("GET", f"{KERNELS}/get", token=token, params={"kernel_id": "nope"})
    assert (r.status_code, r.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert server.api("POST", f"{KERNELS}/delete", token=token, json={"kernel_id": "nope"}).status_code == 404
    assert server.api("GET", f"{KERNELS}/list", token=token).json() == {"kernels": []}
    ws_url = server.url.replace("http://", "ws://") + f"{KERNELS}/channels?kernel_id=nope"
    for headers, status in (([], 401), ([f"Authorization: Bearer {token}"], 404)):
        with pytest.raises(websocket.WebSocketBadStatusException) as err:
            websocket.create_connection(ws_url, header=headers, timeout=10)
        assert err.value.status_code == status


# ---- kernels on a cluster ----------------------------------------------------------------------
class LabKernel:
    """A kernel of the Jupyter server, spoken to over its WebSocket as JupyterLab does."""

    def __init__(self, lab: Lab, kernel_id: str):
        self.session = Session(username="test")
        url = lab.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {LAB_TOKEN}"], timeout=180)

    def execute(self, code: str) -> tuple[dict, list[dict]]:
        msg = self.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                                   "user_expressions": {}, "allow_stdin": False})
        msg["channel"] = "shell"
        self.ws.send(json.dumps(msg, default=json_default))
        outputs, reply, idle = [], None, False
        while reply is None or not idle:
            got = json.loads(self.ws.recv())
            if got.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                continue
            kind = got["msg_type"]
            if got["channel"] == "shell":
                reply = got["content"]
            elif kind == "status":
                idle = got["content"]["execution_state"] == "idle"
            elif kind in ("stream", "execute_result", "display_data", "error"):
                outputs.append({"type": kind, **got["content"]})
        return reply, outputs


def _wait_state(server, token: str, kernel_id: str, state: str) -> dict:
    deadline = time.time() + 60
    while True:
        info = server.api("GET", f"{KERNELS}/get", token=token, params={"kernel_id": kernel_id}).json()
        if info["state"] == state or time.time() > deadline:
            return info
        time.sleep(0.3)


@pytest.mark.slow
def test_jupyterlab_runs_a_workspace_notebook_on_the_cluster(lab, server, user, cluster_id):
    name, token = user
    # The launcher, run again, adds a kernelspec for the (now running) cluster; the lab sees it at once.
    proc = _cli(server, token, "--kernelspecs-only", "--data-dir", str(lab.data_dir))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    specs = lab.api("GET", "/api/kernelspecs").json()["kernelspecs"]
    spec_name = f"brickyard-{cluster_id}"
    assert specs[spec_name]["spec"]["display_name"] == "Brickyard: shared-test-cluster"

    folder = f"/Users/{name}/lab4"
    server.api("POST", "/api/2.0/workspace/mkdirs", token=token, json={"path": folder})
    _import(server, token, f"{folder}/explore", "# Databricks notebook source\nprint('hi')\n")
    r = lab.api("POST", "/api/sessions", json={"path": f"{folder[1:]}/explore.ipynb", "type": "notebook",
                                               "name": "explore.ipynb", "kernel": {"name": spec_name}})
    assert r.status_code == 201, r.text
    lab_kernel_id = r.json()["kernel"]["id"]
    kernel = LabKernel(lab, lab_kernel_id)
    try:
        reply, outputs = kernel.execute("spark.range(5).count()")
        assert reply["status"] == "ok", outputs
        assert [o["data"]["text/plain"] for o in outputs if o["type"] == "execute_result"] == ["5"]

        reply, outputs = kernel.execute("%sql\nSELECT id, id * 2 AS twice FROM range(3)")
        assert reply["status"] == "ok", outputs
        table = [o["data"][TABLE_MIME] for o in outputs if o["type"] == "display_data"][0]
        assert table["data"] == [[0, 0], [1, 2], [2, 4]]
        assert [f["name"] for f in table["schema"]] == ["id", "twice"]

        # Streaming: each print arrives as its own message; the runtime knows the notebook and user.
        reply, outputs = kernel.execute(
            "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)\n"
            "ctx = dbutils.notebook.entry_point.getDbutils().notebook().getContext()\n"
            "print(ctx.notebookPath().get(), ctx.tags().apply('user'))")
        streams = [o["text"] for o in outputs if o["type"] == "stream"]
        assert len(streams) >= 3 and "".join(streams).startswith("0\n1\n2\n")
        assert f"{folder}/explore {name}" in "".join(streams), outputs

        reply, outputs = kernel.execute("1/0")
        assert reply["status"] == "error"
        assert [o["ename"] for o in outputs if o["type"] == "error"] == ["ZeroDivisionError"]

        # The workspace side: one running kernel of this user, attached; others cannot touch it.
        kernels = server.api("GET", f"{KERNELS}/list", token=token).json()["kernels"]
        assert [(k["cluster_id"], k["state"], k["attached"], k["notebook_path"]) for k in kernels] == [
            (cluster_id, "RUNNING", True, f"{folder}/explore")]
        remote_id = kernels[0]["kernel_id"]
        _, other = server.new_user(f"other{os.getpid()}@example.com")
        r = server.api("GET", f"{KERNELS}/get", token=other, params={"kernel_id": remote_id})
        assert (r.status_code, r.json()["error_code"]) == (403, "PERMISSION_DENIED")
        assert server.api("POST", f"{KERNELS}/delete", token=other, json={"kernel_id": remote_id}).status_code == 403
        ws_url = server.url.replace("http://", "ws://") + f"{KERNELS}/channels?kernel_id={remote_id}"
        with pytest.raises(websocket.WebSocketBadStatusException) as err:
            websocket.create_connection(ws_url, header=[f"Authorization: Bearer {token}"], timeout=10)
        assert err.value.status_code == 409  # one frontend per kernel
    finally:
        kernel.ws.close()
    # Shutting the kernel down in JupyterLab ends the cluster kernel (and revokes its token).
    assert lab.api("DELETE", f"/api/kernels/{lab_kernel_id}").status_code == 204
    assert _wait_state(server, token, remote_id, "TERMINATED")["state"] == "TERMINATED"
    tokens = server.api("GET", "/api/2.0/token/list", token=token).json().get("token_infos", [])
    assert not [t for t in tokens if t.get("comment") == "Brickyard notebook kernel"]


@pytest.mark.slow
def test_kernelspec_works_from_plain_jupyter_client_with_interrupt(lab, server, user, cluster_id):
    """What VS Code and nbclient do: start the kernelspec directly from JUPYTER_PATH."""
    from jupyter_client.manager import start_new_kernel

    _, token = user
    os.environ["JUPYTER_PATH"] = str(lab.data_dir)
    try:
        km, kc = start_new_kernel(kernel_name=f"brickyard-{cluster_id}", startup_timeout=120)
    finally:
        del os.environ["JUPYTER_PATH"]
    try:
        msgs = []
        reply = kc.execute_interactive("spark.range(10).selectExpr('sum(id) AS s').first().s", timeout=120,
                                       output_hook=msgs.append)
        assert reply["content"]["status"] == "ok"
        assert [m["content"]["data"]["text/plain"] for m in msgs if m["msg_type"] == "execute_result"] == ["45"]

        # stdin: input() in the cluster kernel asks the frontend.
        asked = []

        def answer(msg):  # noqa: ANN001
            asked.append(msg["content"]["prompt"])
            kc.input("forty-two")

        msgs = []
        reply = kc.execute_interactive("print(input('value? ').upper())", timeout=60, allow_stdin=True,
                                       stdin_hook=answer, output_hook=msgs.append)
        assert reply["content"]["status"] == "ok"
        assert asked == ["value? "]
        assert "FORTY-TWO" in "".join(m["content"].get("text", "") for m in msgs if m["msg_type"] == "stream")

        clusters = server.workspace.services["clusters"]
        msg_id = kc.execute("import time\ntime.sleep(120)")
        deadline = time.time() + 30
        while not clusters.busy(cluster_id) and time.time() < deadline:
            time.sleep(0.2)
        assert clusters.busy(cluster_id)  # interactive work holds off auto-termination
        started = time.time()
        km.interrupt_kernel()  # interrupt_mode "message": an interrupt_request through the relay
        reply = kc.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.time() - started < 30
        deadline = time.time() + 10
        while clusters.busy(cluster_id) and time.time() < deadline:
            time.sleep(0.2)
        assert not clusters.busy(cluster_id)
        kernels = server.api("GET", f"{KERNELS}/list", token=token).json()["kernels"]
        remote_id = [k["kernel_id"] for k in kernels if k["state"] == "RUNNING"][0]
        # The REST interrupt (what the stand-in does on SIGINT) reaches the same kernel.
        msg_id = kc.execute("import time\ntime.sleep(120)")
        time.sleep(2)
        r = server.api("POST", f"{KERNELS}/interrupt", token=token, json={"kernel_id": remote_id})
        assert r.status_code == 200, r.text
        reply = kc.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)  # kills the local stand-in: the WebSocket closes
    assert _wait_state(server, token, remote_id, "TERMINATED")["state"] == "TERMINATED"
    r = server.api("POST", f"{KERNELS}/interrupt", token=token, json={"kernel_id": remote_id})
    assert (r.status_code, r.json()["error_code"]) == (400, "INVALID_STATE")


# ---- the WebSocket framing -----------------------------------------------------------------------
def test_wire_framing_and_signatures():
    from brickyard.jupyter import wire

    session = Session(key=b"k1")
    parts = [b'{"msg_type":"x"}', b"{}", b"{}", b'{"a":1}', b"buffer"]
    signed = wire.sign([b"client-id", wire.DELIM, *parts], session)
    unsigned = wire.unsign(signed, session)
    assert unsigned == [b"client-id", wire.DELIM, *parts]
    assert wire.unpack(wire.pack("shell", unsigned)) == ("shell", unsigned)
    # Re-signed with the other side's key, the message verifies there and nowhere else.
    other = Session(key=b"k2")
    assert wire.unsign(wire.sign(unsigned, other), other) == unsigned
    with pytest.raises(wire.WireError):
        wire.unsign(signed, other)
    with pytest.raises(wire.WireError):
        wire.unpack(wire.pack("shell", unsigned)[:-1])
    with pytest.raises(wire.WireError):
        wire.unpack(wire.pack("hb", unsigned))
    with pytest.raises(wire.WireError):
        wire.sign([b"no delimiter"], session)
