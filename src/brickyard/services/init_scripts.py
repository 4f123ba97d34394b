"""Read a cluster's init scripts from where its spec says: the workspace tree, DBFS, or a host file."""
from __future__ import annotations

from pathlib import Path

from brickyard.errors import BrickyardError

MAX_SCRIPT_BYTES = 1 << 20


def _fail(destination: str, why: str) -> BrickyardError:
    return BrickyardError("INVALID_PARAMETER_VALUE", f"Init script {destination} could not be read: {why}")


def read(ws, item: dict, creator_user_id: int) -> bytes:  # noqa: ANN001
    """The bytes of one init script, read as the cluster's creator (their permissions apply)."""
    (kind, where), = item.items()
    dest = where["destination"]
    if kind == "workspace":
        from brickyard.services.users import principal_of

        with ws.store.session() as sess:
            user = ws.services["users"].get(sess, creator_user_id)
            try:
                body = ws.services["tree"].export_object(sess, principal_of(user), dest, "SOURCE").content
            except BrickyardError as exc:
                raise _fail(dest, exc.message) from None
    elif kind == "dbfs":
        try:
            path = ws.services["dbfs"].local_file(dest)
            body = path.read_bytes()[:MAX_SCRIPT_BYTES + 1]
        except BrickyardError as exc:
            raise _fail(dest, exc.message) from None
    elif kind == "file":
        try:
            body = Path(dest.removeprefix("file:")).read_bytes()[:MAX_SCRIPT_BYTES + 1]
        except OSError as exc:
            raise _fail(dest, exc.strerror or str(exc)) from None
    else:
        raise _fail(dest, f"{kind} init scripts are not supported here; use workspace, dbfs or file.")
    if len(body) > MAX_SCRIPT_BYTES:
        raise _fail(dest, f"it is larger than {MAX_SCRIPT_BYTES} bytes.")
    return body
