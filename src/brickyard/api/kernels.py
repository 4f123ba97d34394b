"""Brickyard kernels API: Jupyter kernels on a cluster for JupyterLab / VS Code (see brickyard.jupyter)."""
from __future__ import annotations

import logging

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from brickyard.api.deps import Body, CurrentUser, WorkspaceDep, opt_str, query_or_body
from brickyard.errors import BrickyardError, unauthenticated

router = APIRouter(tags=["brickyard-kernels"])
log = logging.getLogger(__name__)
PREFIX = "/api/2.0/brickyard/kernels"


def _svc(ws):  # noqa: ANN001, ANN202
    return ws.services["kernels"]


@router.post(f"{PREFIX}/create")
def create_kernel(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return _svc(ws).create(me, body.get("cluster_id"), opt_str(body, "notebook_path"))


@router.get(f"{PREFIX}/get")
def get_kernel(request: Request, body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    return _svc(ws).get(me, query_or_body(request, body).get("kernel_id"))


@router.get(f"{PREFIX}/list")
def list_kernels(me: CurrentUser, ws: WorkspaceDep) -> dict:
    return {"kernels": _svc(ws).list(me)}


@router.post(f"{PREFIX}/delete")
def delete_kernel(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).delete(me, body.get("kernel_id"))
    return {}


@router.post(f"{PREFIX}/interrupt")
def interrupt_kernel(body: Body, me: CurrentUser, ws: WorkspaceDep) -> dict:
    _svc(ws).interrupt(me, body.get("kernel_id"))
    return {}


@router.websocket(f"{PREFIX}/channels")
async def kernel_channels(websocket: WebSocket) -> None:
    """The kernel's Jupyter channels (framing in brickyard.jupyter.wire); the kernel ends when this closes."""
    from brickyard.jupyter.relay import relay

    ws = websocket.app.state.workspace
    svc = _svc(ws)

    def claim():  # noqa: ANN202
        scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("Missing credentials: send 'Authorization: Bearer <token>'.")
        with ws.store.session() as sess:
            me = ws.services["tokens"].authenticate(sess, token.strip())
        return svc.attach(me, websocket.query_params.get("kernel_id"))

    try:
        kernel = await run_in_threadpool(claim)
    except BrickyardError as exc:
        await websocket.send_denial_response(JSONResponse(exc.to_dict(), status_code=exc.http_status))
        return
    await websocket.accept()
    why = "The relay stopped."
    try:
        why = await relay(websocket, kernel, ws.services["clusters"])
    except Exception as exc:  # noqa: BLE001 - the kernel must not outlive a broken relay
        log.exception("relay of kernel %s", kernel.id)
        why = f"The relay failed: {exc!r}"
    finally:
        await run_in_threadpool(svc.detach, kernel, why)
        try:
            await websocket.close(code=1000, reason=why[:120])
        except Exception:  # noqa: BLE001 - already closed by the other side
            pass
