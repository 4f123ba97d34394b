"""Users (SCIM), tokens and token management through databricks-sdk and raw HTTP."""
from __future__ import annotations

import time

import pytest
import requests
from databricks.sdk.errors import NotFound, PermissionDenied, Unauthenticated
from databricks.sdk.service import iam


def test_discovery_and_me(server, w):
    r = requests.get(server.url + "/.well-known/databricks-config", timeout=10)
    assert r.status_code == 200 and r.json()["workspace_id"] == server.workspace.workspace_id
    me = w.current_user.me()
    assert me.user_name == "admin"
    assert any(g.display == "admins" for g in me.groups)
    assert w.get_workspace_id() == int(server.workspace.workspace_id)
    assert w.workspace.get_status("/Users/admin").object_type.value == "DIRECTORY"


def test_openapi_lists_the_api(server):
    spec = requests.get(server.url + "/openapi.json", timeout=10).json()
    assert "/api/2.0/token/create" in spec["paths"]
    assert "/api/2.0/preview/scim/v2/Me" in spec["paths"]


def test_missing_and_bad_token_are_401(server):
    r = requests.get(server.url + "/api/2.0/token/list", timeout=10)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    r = server.api("GET", "/api/2.0/token/list", token="dapi" + "f" * 32)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    with pytest.raises(Unauthenticated):
        server.client(token="dapi" + "e" * 32).current_user.me()


def test_unknown_endpoint_is_json_404(server):
    r = server.api("GET", "/api/2.0/no/such/thing")
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_token_lifecycle_with_sdk(server, w):
    created = w.tokens.create(comment="ci", lifetime_seconds=3600)
    assert created.token_value.startswith("dapi") and len(created.token_value) == 36
    info = created.token_info
    assert info.comment == "ci" and info.expiry_time - info.creation_time == 3600 * 1000
    forever = w.tokens.create(comment="forever")
    assert forever.token_info.expiry_time == -1
    ids = {t.token_id for t in w.tokens.list()}
    assert {info.token_id, forever.token_info.token_id} <= ids
    other = server.client(token=created.token_value)
    assert other.current_user.me().user_name == "admin"
    w.tokens.delete(info.token_id)
    # Revoked: rejected on the very next request.
    r = server.api("GET", "/api/2.0/token/list", token=created.token_value)
    assert r.status_code == 401
    with pytest.raises(NotFound):
        w.tokens.delete(info.token_id)


def test_expired_token_is_rejected(server, w):
    created = w.tokens.create(comment="short", lifetime_seconds=1)
    assert server.api("GET", "/api/2.0/token/list", token=created.token_value).status_code == 200
    time.sleep(1.2)
    r = server.api("GET", "/api/2.0/token/list", token=created.token_value)
    assert r.status_code == 401 and "expired" in r.json()["message"]


def test_token_create_validation(server):
    r = server.api("POST", "/api/2.0/token/create", json={"lifetime_seconds": "soon"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = server.api("POST", "/api/2.0/token/create", data="{not json")
    assert r.status_code == 400 and r.json()["error_code"] == "MALFORMED_REQUEST"
    r = server.api("POST", "/api/2.0/token/delete", json={})
    assert r.status_code == 400 and "token_id" in r.json()["message"]


def test_tokens_stored_only_as_hash(server, w):
    created = w.tokens.create(comment="grep me")
    db = (server.settings.home / "workspace.db").read_bytes()
    wal = server.settings.home / "workspace.db-wal"
    blob = db + (wal.read_bytes() if wal.exists() else b"")
    assert created.token_value.encode() not in blob
    assert created.token_value[4:].encode() not in blob


def test_scim_users_admin_only(server, w, unique):
    name = unique("user") + "@example.com"
    user = w.users.create(user_name=name, display_name="Someone")
    assert user.user_name == name and user.active
    assert w.users.get(user.id).display_name == "Someone"
    assert name in {u.user_name for u in w.users.list()}
    assert [u.user_name for u in w.users.list(filter=f'userName eq "{name}"')] == [name]
    # The home folder exists with the user.
    assert w.workspace.get_status(f"/Users/{name}").object_type.value == "DIRECTORY"
    uid, token = server.new_user(unique("plain") + "@example.com")
    plain = server.client(token=token)
    assert plain.current_user.me().id == uid
    with pytest.raises(PermissionDenied):
        plain.users.create(user_name=unique("x"))
    with pytest.raises(PermissionDenied):
        plain.users.get(user.id)
    r = server.api("GET", "/api/2.0/token-management/tokens", token=token)
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"
    w.users.delete(user.id)
    with pytest.raises(NotFound):
        w.users.get(user.id)
    r = server.api("POST", "/api/2.0/preview/scim/v2/Users", json={"userName": "bad name!"})
    assert r.status_code == 400
    r = server.api("POST", "/api/2.0/preview/scim/v2/Users", json={"userName": "admin"})
    assert r.status_code == 409 and r.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"


def test_scim_patch_deactivates(server, w, unique):
    # The SDK drops a falsy `value`, so send the SCIM string form.
    uid, token = server.new_user(unique("deact"))
    w.users.patch(uid, operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value="false")],
                  schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP])
    assert server.api("GET", "/api/2.0/token/list", token=token).status_code == 401


def test_token_management_on_behalf_of(server, w, unique):
    name = unique("obo")
    uid, _ = server.new_user(name)
    created = w.token_management.create_obo_token(application_id=name, lifetime_seconds=600, comment="for ci")
    assert server.client(token=created.token_value).current_user.me().user_name == name
    admin_id = int(w.current_user.me().id)
    # TokenInfo: owner_id is the user the token is for; created_by_id and created_by_username both name
    # the admin who created it (Databricks' token management).
    assert created.token_info.owner_id == int(uid)
    assert (created.token_info.created_by_id, created.token_info.created_by_username) == (admin_id, "admin")
    listed = [t for t in w.token_management.list() if t.token_id == created.token_info.token_id]
    assert len(listed) == 1
    assert (listed[0].owner_id, listed[0].created_by_id, listed[0].created_by_username) == (
        int(uid), admin_id, "admin")
    # The filters name the creator too, by id or by name, and agree with each other.
    by_name = {t.token_id for t in w.token_management.list(created_by_username="admin")}
    by_id = {t.token_id for t in w.token_management.list(created_by_id=admin_id)}
    assert created.token_info.token_id in by_name and by_name == by_id
    assert created.token_info.token_id not in {t.token_id for t in w.token_management.list(created_by_username=name)}
    # A token the user made for themselves: owner and creator are the same user.
    own = server.client(token=created.token_value).tokens.create(comment="own", lifetime_seconds=600)
    mine = [t for t in w.token_management.list(created_by_username=name) if t.token_id == own.token_info.token_id]
    assert len(mine) == 1 and (mine[0].owner_id, mine[0].created_by_id) == (int(uid), int(uid))
    assert mine[0].created_by_username == name
    got = w.token_management.get(created.token_info.token_id)
    assert got.token_info.comment == "for ci"
    assert (got.token_info.owner_id, got.token_info.created_by_username) == (int(uid), "admin")
    w.token_management.delete(created.token_info.token_id)
    assert server.api("GET", "/api/2.0/token/list", token=created.token_value).status_code == 401
    r = server.api("POST", "/api/2.0/token-management/on-behalf-of/tokens", json={"application_id": "nobody"})
    assert r.status_code == 400
    with pytest.raises(NotFound):
        w.token_management.get("0" * 64)
