"""The workspace end of the kernel WebSocket: one frontend's messages to and from one kernel's ZMQ sockets."""
from __future__ import annotations

import asyncio
import json
import logging
import uuid

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from brickyard.jupyter import wire
from brickyard.runtime.mime import RESTART_PYTHON_MIME

log = logging.getLogger(__name__)
ALIVE_CHECK_SECONDS = 1.0


class BusyTracker:
    """Mark the cluster busy while the kernel executes, so auto-termination waits for interactive work."""

    def __init__(self, clusters, cluster_id: str):  # noqa: ANN001
        self.clusters, self.cluster_id, self.busy = clusters, cluster_id, False

    async def observe(self, frames: list[bytes]) -> None:
        at = frames.index(wire.DELIM)
        if b'"status"' not in frames[at + 1]:
            return
        try:
            header, parent, content = (json.loads(frames[at + i]) for i in (1, 2, 4))
        except ValueError:
            return
        if header.get("msg_type") != "status" or parent.get("msg_type") != "execute_request":
            return
        state = content.get("execution_state")
        if state == "busy" and not self.busy:
            await self._mark(+1)
        elif state == "idle" and self.busy:
            await self._mark(-1)

    async def _mark(self, delta: int) -> None:
        self.busy = delta > 0
        await asyncio.to_thread(self.clusters.mark_busy, self.cluster_id, delta)

    async def release(self) -> None:
        if self.busy:
            await self._mark(-1)


class RestartWatch:
    """Spots dbutils.library.restartPython() in a cell's output; due once that cell's reply and idle went by.

    The process is replaced only then, so the frontend gets the whole cell (note, reply, idle) first;
    from the note on, the relay holds the frontend's shell messages until the new process
    is there (the next cell must not reach the old one).
    """

    def __init__(self) -> None:
        self.pending: dict[str, set[str]] = {}  # execute msg_id -> what of its end was seen

    def observe(self, channel: str, frames: list[bytes]) -> bool:
        """True when the restart is due now."""
        at = frames.index(wire.DELIM)
        if channel == "iopub" and RESTART_PYTHON_MIME.encode() in frames[at + 4]:
            try:
                header, parent, content = (json.loads(frames[at + i]) for i in (1, 2, 4))
            except ValueError:
                return False
            if header.get("msg_type") == "display_data" and RESTART_PYTHON_MIME in (content.get("data") or {}):
                self.pending.setdefault(parent.get("msg_id", ""), set())
            return False
        if not self.pending or channel not in ("iopub", "shell"):
            return False
        try:
            header, parent = json.loads(frames[at + 1]), json.loads(frames[at + 2])
            seen = self.pending.get(parent.get("msg_id", ""))
            if seen is None:
                return False
            if channel == "shell" and header.get("msg_type") == "execute_reply":
                seen.add("reply")
            elif header.get("msg_type") == "status" and json.loads(frames[at + 4]).get("execution_state") == "idle":
                seen.add("idle")
        except (ValueError, AttributeError):
            return False
        if seen >= {"reply", "idle"}:
            del self.pending[parent["msg_id"]]
            return True
        return False


async def relay(websocket, kernel, clusters) -> str:  # noqa: ANN001
    """Carry messages until either side ends; returns why it ended."""
    info = kernel.connection()
    session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
    zctx = zmq.asyncio.Context()
    ident = uuid.uuid4().bytes  # shell and stdin share it: the kernel routes input_request by the shell identity
    socks: dict[str, zmq.asyncio.Socket] = {}
    for channel in ("shell", "control", "stdin", "iopub"):
        sock = zctx.socket(zmq.SUB if channel == "iopub" else zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if channel == "iopub":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        else:
            sock.setsockopt(zmq.IDENTITY, ident)
        sock.connect(f"{info['transport']}://{info['ip']}:{info[channel + '_port']}")
        socks[channel] = sock
    names = {sock: channel for channel, sock in socks.items()}
    busy = BusyTracker(clusters, kernel.cluster_id)
    restarts = RestartWatch()
    background: set[asyncio.Task] = set()
    gate = asyncio.Event()  # clear from a restartPython() request until its new process is up
    gate.set()
    can_restart = getattr(kernel, "restart", None) is not None

    def restarted(task: asyncio.Task) -> None:
        background.discard(task)
        if not restarts.pending:
            gate.set()

    async def downstream() -> str:
        poller = zmq.asyncio.Poller()
        for sock in names:
            poller.register(sock, zmq.POLLIN)
        while True:
            for sock, _ in await poller.poll():
                frames = await sock.recv_multipart()
                try:
                    frames = wire.unsign(frames, session)
                except wire.WireError as exc:
                    log.warning("kernel %s sent a bad message: %s", kernel.id, exc)
                    continue
                if names[sock] == "iopub":
                    await busy.observe(frames)
                await websocket.send_bytes(wire.pack(names[sock], frames))
                due = restarts.observe(names[sock], frames)
                if can_restart and restarts.pending:
                    gate.clear()
                if due and can_restart:
                    gate.clear()
                    task = asyncio.ensure_future(asyncio.to_thread(kernel.restart))
                    background.add(task)  # kept referenced until done
                    task.add_done_callback(restarted)

    async def upstream() -> str:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return "The frontend disconnected."
            data = message.get("bytes")
            if data is None:
                continue  # text frames are not part of the protocol
            try:
                channel, frames = wire.unpack(data)
                if channel == "iopub":
                    continue
                if channel == "shell":  # control stays open: an interrupt must always get through
                    await gate.wait()
                await socks[channel].send_multipart(wire.sign(frames, session))
            except wire.WireError as exc:
                log.warning("frontend of kernel %s sent a bad message: %s", kernel.id, exc)

    async def watch() -> str:
        while (kernel.alive() or getattr(kernel, "restarting", False)) and kernel.state == "RUNNING":
            await asyncio.sleep(ALIVE_CHECK_SECONDS)
        return "The kernel exited." if kernel.state == "RUNNING" else kernel.state_message

    tasks = [asyncio.ensure_future(c) for c in (downstream(), upstream(), watch())]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        why = "The relay stopped."
        for task in done:
            if task.exception() is None:
                why = task.result()
            else:
                why = f"The relay stopped: {task.exception()!r}"
        return why
    finally:
        await busy.release()
        zctx.destroy(linger=0)
