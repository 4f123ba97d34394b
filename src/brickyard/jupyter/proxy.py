"""The process a Brickyard kernelspec starts: a local stand-in for a kernel that runs on a cluster.

Jupyter (JupyterLab's server, VS Code, nbclient) writes a connection file and starts this
process as if it were the kernel. It asks the workspace for a kernel on the cluster, binds the
connection file's ports, and carries every message between them and the workspace's kernel
WebSocket, re-signing with the connection file's key. It exits when the remote kernel ends, and
the remote kernel ends when this process goes away.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from urllib.parse import quote

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from brickyard.jupyter import wire
from brickyard.jupyter.client import Api, ApiError, resolve

log = logging.getLogger("brickyard.jupyter.proxy")
PREFIX = "/api/2.0/brickyard/kernels"
START_TIMEOUT_SECONDS = 180


def pick_cluster(api: Api, wanted: str | None) -> str:
    """The cluster id to use: the one asked for, else the only running cluster."""
    if wanted and wanted != "auto":
        return wanted
    running = [c for c in api.call("GET", "/api/2.0/clusters/list").get("clusters", [])
               if c.get("state") == "RUNNING"]
    if len(running) == 1:
        return running[0]["cluster_id"]
    if not running:
        raise SystemExit("No running cluster: start one, or pick a kernel named after a cluster.")
    names = ", ".join(f"{c.get('cluster_name')} ({c['cluster_id']})" for c in running)
    raise SystemExit(f"Several clusters are running ({names}): pick the kernel named after one of them.")


def notebook_path(api: Api, session_name: str | None) -> str | None:
    """The workspace notebook behind Jupyter's session path, when the contents come from the workspace."""
    if not session_name or not session_name.endswith(".ipynb"):
        return None
    path = "/" + session_name.lstrip("/")[: -len(".ipynb")]
    try:
        status = api.call("GET", "/api/2.0/workspace/get-status", path=path)
    except (ApiError, OSError):
        return None
    return path if status.get("object_type") == "NOTEBOOK" else None


def start_remote(api: Api, cluster_id: str, nb_path: str | None) -> str:
    """Start the cluster kernel and wait until it runs; returns its id."""
    fields = {"cluster_id": cluster_id, **({"notebook_path": nb_path} if nb_path else {})}
    kernel = api.call("POST", f"{PREFIX}/create", **fields)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while kernel["state"] == "PENDING" and time.monotonic() < deadline:
        time.sleep(0.3)
        kernel = api.call("GET", f"{PREFIX}/get", kernel_id=kernel["kernel_id"])
    if kernel["state"] != "RUNNING":
        raise SystemExit(f"The kernel on cluster {cluster_id} did not start: {kernel['state_message']}")
    return kernel["kernel_id"]


def _heartbeat(zctx: zmq.Context, url: str) -> None:
    """Echo heartbeats, as ipykernel does; this process lives exactly as long as the remote kernel."""
    sock = zctx.socket(zmq.REP)
    sock.linger = 0
    sock.bind(url)
    try:
        zmq.proxy(sock, sock)
    except zmq.ContextTerminated:
        pass
    finally:
        sock.close()


async def bridge(api: Api, kernel_id: str, conn: dict) -> str:
    """Carry messages between the local Jupyter ports and the kernel WebSocket; returns why it ended."""
    from websockets.asyncio.client import connect

    session = Session(key=conn.get("key", "").encode(), signature_scheme=conn.get("signature_scheme", "hmac-sha256"))
    base = f"{conn.get('transport', 'tcp')}://{conn['ip']}:"
    zctx = zmq.asyncio.Context()
    hb_ctx = zmq.Context()
    threading.Thread(target=_heartbeat, args=(hb_ctx, base + str(conn["hb_port"])), daemon=True).start()
    socks = {}
    for channel in wire.CHANNELS:
        sock = zctx.socket(zmq.PUB if channel == "iopub" else zmq.ROUTER)
        sock.linger = 0
        sock.bind(base + str(conn[f"{channel}_port"]))
        socks[channel] = sock
    names = {sock: ch for ch, sock in socks.items() if ch != "iopub"}
    url = api.ws_url(f"{PREFIX}/channels?kernel_id={quote(kernel_id)}")
    headers = {"Authorization": f"Bearer {api.creds.token}"}
    try:
        async with connect(url, additional_headers=headers, max_size=None, ping_interval=20,
                           ping_timeout=60) as remote:

            async def upstream() -> str:
                poller = zmq.asyncio.Poller()
                for sock in names:
                    poller.register(sock, zmq.POLLIN)
                while True:
                    for sock, _ in await poller.poll():
                        frames = await sock.recv_multipart()
                        try:
                            await remote.send(wire.pack(names[sock], wire.unsign(frames, session)))
                        except wire.WireError as exc:
                            log.warning("dropped a local message: %s", exc)

            async def downstream() -> str:
                async for data in remote:
                    if isinstance(data, str):
                        continue
                    channel, frames = wire.unpack(data)
                    await socks[channel].send_multipart(wire.sign(frames, session))
                return f"The workspace closed the kernel: {remote.close_reason or 'no reason given'}"

            tasks = [asyncio.ensure_future(c) for c in (upstream(), downstream())]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            task = done.pop()
            return task.result() if task.exception() is None else f"The connection broke: {task.exception()!r}"
    finally:
        zctx.destroy(linger=0)
        hb_ctx.term()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brickyard.jupyter.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("-f", dest="connection_file", required=True, help="Jupyter connection file")
    parser.add_argument("--cluster", default="auto", help="cluster id ('auto': the only running cluster)")
    parser.add_argument("--credentials", help="JSON file with the workspace host and token")
    parser.add_argument("--notebook-path", help="workspace path of the notebook (for %%run and dbutils)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[brickyard kernel] %(message)s", stream=sys.stderr)
    api = Api(resolve(credentials_file=args.credentials))
    with open(args.connection_file) as fh:
        conn = json.load(fh)
    try:
        cluster_id = pick_cluster(api, args.cluster)
        kernel_id = start_remote(api, cluster_id, args.notebook_path or notebook_path(
            api, os.environ.get("JPY_SESSION_NAME")))
    except ApiError as exc:
        raise SystemExit(f"The workspace refused the kernel: {exc}") from None
    log.info("kernel %s on cluster %s (%s)", kernel_id, cluster_id, api.creds.host)

    def interrupt(signum, frame) -> None:  # noqa: ANN001, ARG001 - frontends that interrupt by signal
        threading.Thread(target=api.call, args=("POST", f"{PREFIX}/interrupt"), kwargs={"kernel_id": kernel_id},
                         daemon=True).start()

    signal.signal(signal.SIGINT, interrupt)
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(bridge(api, kernel_id, conn))
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)  # close the WebSocket: the remote kernel stops
    try:
        why = loop.run_until_complete(main_task)
    except asyncio.CancelledError:
        why = "Stopped by the frontend."
    except Exception as exc:  # noqa: BLE001 - e.g. the WebSocket was refused: do not leave the kernel behind
        why = f"Could not reach the kernel: {exc}"
        try:
            api.call("POST", f"{PREFIX}/delete", kernel_id=kernel_id)
        except (ApiError, OSError):
            pass
        raise SystemExit(why) from None
    finally:
        loop.close()
    log.info("%s", why)
    return 0


if __name__ == "__main__":
    sys.exit(main())
