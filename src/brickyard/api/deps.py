"""Dependencies shared by the routers: the workspace, the caller, request parsing."""
from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Request

from brickyard.context import Workspace
from brickyard.errors import BrickyardError, invalid, unauthenticated
from brickyard.services.users import Principal


def get_workspace(request: Request) -> Workspace:
    return request.app.state.workspace


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return ""


def get_principal(request: Request) -> Principal:
    """Authenticate the bearer token on every call; cached on the request."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    ws: Workspace = request.app.state.workspace
    token = bearer_token(request)
    if not token:
        raise unauthenticated("Missing credentials: send 'Authorization: Bearer <token>'.")
    with ws.store.session() as sess:
        principal = ws.services["tokens"].authenticate(sess, token)
    request.state.principal = principal
    return principal


CurrentUser = Annotated[Principal, Depends(get_principal)]


async def json_body(request: Request) -> dict[str, Any]:
    """The JSON object in the request body ({} when empty); any content type is accepted.

    The legacy CLI sends `Content-Type: text/json`, so the type is not checked.
    """
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BrickyardError("MALFORMED_REQUEST", f"Could not parse request body as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BrickyardError("MALFORMED_REQUEST", "The request body must be a JSON object.")
    return data


Body = Annotated[dict[str, Any], Depends(json_body)]


def query_or_body(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """GET parameters come in the query string; some clients send them as a JSON body."""
    merged = dict(body)
    for key, value in request.query_params.items():
        merged.setdefault(key, value)
    return merged


def req_str(data: dict, name: str, *, max_len: int | None = None) -> str:
    value = data.get(name)
    if value is None or value == "":
        raise invalid(f"Missing required field: {name}")
    if not isinstance(value, str):
        raise invalid(f"Field {name} must be a string.")
    if max_len is not None and len(value) > max_len:
        raise invalid(f"Field {name} is longer than {max_len} characters.")
    return value


def opt_str(data: dict, name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"Field {name} must be a string.")
    return value


def opt_bool(data: dict, name: str, default: bool = False) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid(f"Field {name} must be a boolean.")


def opt_int(data: dict, name: str, default: int | None = None) -> int | None:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool):
        raise invalid(f"Field {name} must be an integer.")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise invalid(f"Field {name} must be an integer.")
