"""Secret scopes, secrets and ACLs through databricks-sdk, its dbutils and raw HTTP."""
from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from databricks.sdk.errors import (
    InvalidParameterValue,
    PermissionDenied,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
)
from databricks.sdk.service.workspace import AclPermission, AzureKeyVaultSecretScopeMetadata, ScopeBackendType

from conftest import ADMIN_TOKEN, REPO, free_port, run_cli_server

KIB128 = 128 * 1024


def err(r) -> str:  # noqa: ANN001
    return r.json().get("error_code")


@pytest.fixture(scope="module")
def people(server, unique):
    """Three non-admin users with tokens (the admin is `w`): owner, writer, reader, outsider."""
    out = {"admin": ("admin", ADMIN_TOKEN)}
    for role in ("owner", "writer", "reader", "outsider"):
        name = unique(role)
        out[role] = (name, server.new_user(name)[1])
    return out


@pytest.fixture(scope="module")
def unique():
    # Module-scoped twin of conftest's `unique`, for module fixtures.
    counter = iter(range(1, 10**9))
    return lambda prefix="t": f"{prefix}{os.getpid()}m{next(counter)}"


def shared_scope(server, people, name: str) -> str:
    """A scope created by `owner`, with writer WRITE, reader READ and one secret `k`."""
    owner = server.client(people["owner"][1])
    owner.secrets.create_scope(name)
    owner.secrets.put_acl(name, people["writer"][0], AclPermission.WRITE)
    owner.secrets.put_acl(name, people["reader"][0], AclPermission.READ)
    owner.secrets.put_secret(name, "k", string_value="v-" + name)
    return name


# -- scopes ----------------------------------------------------------------------------------


def test_scope_lifecycle(server, w, unique):
    name = unique("scope.a@b-c_")
    w.secrets.create_scope(name)
    scopes = {s.name: s for s in w.secrets.list_scopes()}
    assert scopes[name].backend_type == ScopeBackendType.DATABRICKS
    assert scopes[name].keyvault_metadata is None
    # The creator gets MANAGE.
    assert w.secrets.get_acl(name, "admin").permission == AclPermission.MANAGE
    with pytest.raises(ResourceAlreadyExists):
        w.secrets.create_scope(name)
    r = server.api("POST", "/api/2.0/secrets/scopes/create", json={"scope": name})
    assert r.status_code == 409 and err(r) == "RESOURCE_ALREADY_EXISTS"
    w.secrets.delete_scope(name)
    assert name not in {s.name for s in w.secrets.list_scopes()}
    with pytest.raises(ResourceDoesNotExist):
        w.secrets.delete_scope(name)


@pytest.mark.parametrize("body", [
    {},
    {"scope": ""},
    {"scope": "has space"},
    {"scope": "a/b"},
    {"scope": "x" * 129},
    {"scope": 5},
    {"scope": "ok", "scope_backend_type": "VAULT"},
    {"scope": "ok", "initial_manage_principal": "someone"},
    {"scope": "ok", "scope_backend_type": "AZURE_KEYVAULT"},
    {"scope": "ok", "scope_backend_type": "AZURE_KEYVAULT",
     "backend_azure_keyvault": {"resource_id": "/subs/x", "dns_name": "http://kv.example/"}},
    {"scope": "ok", "scope_backend_type": "AZURE_KEYVAULT", "backend_azure_keyvault": {"dns_name": "https://kv/"}},
    {"scope": "ok", "backend_azure_keyvault": {"resource_id": "/subs/x", "dns_name": "https://kv/"}},
])
def test_create_scope_rejects_bad_input(server, w, body):
    r = server.api("POST", "/api/2.0/secrets/scopes/create", json=body)
    assert r.status_code == 400 and err(r) == "INVALID_PARAMETER_VALUE", r.text
    assert "ok" not in {s.name for s in w.secrets.list_scopes()}


def test_scope_name_limits(w, unique):
    name = (unique("L") + "x" * 128)[:128]
    w.secrets.create_scope(name)
    assert name in {s.name for s in w.secrets.list_scopes()}
    w.secrets.delete_scope(name)


def test_initial_manage_principal_users(server, w, people, unique):
    name = unique("everyone")
    w.secrets.create_scope(name, initial_manage_principal="users")
    assert [(a.principal, a.permission) for a in w.secrets.list_acls(name)] == [("users", AclPermission.MANAGE)]
    outsider = server.client(people["outsider"][1])
    outsider.secrets.put_secret(name, "k", string_value="x")
    outsider.secrets.put_acl(name, people["reader"][0], AclPermission.READ)
    outsider.secrets.delete_scope(name)


def test_delete_scope_removes_secrets_and_acls(server, w, people, unique):
    name = unique("gone")
    w.secrets.create_scope(name)
    w.secrets.put_secret(name, "k", string_value="old")
    w.secrets.put_acl(name, people["reader"][0], AclPermission.READ)
    w.secrets.delete_scope(name)
    w.secrets.create_scope(name)
    assert list(w.secrets.list_secrets(name)) == []
    assert [a.principal for a in w.secrets.list_acls(name)] == ["admin"]
    with pytest.raises(PermissionDenied):
        server.client(people["reader"][1]).secrets.list_secrets(name)


def test_akv_scope_listed_and_read_only(server, w, unique):
    name = unique("akv")
    meta = AzureKeyVaultSecretScopeMetadata(resource_id="/subscriptions/0/resourceGroups/rg/providers/"
                                            "Microsoft.KeyVault/vaults/kv", dns_name="https://kv.vault.azure.net/")
    w.secrets.create_scope(name, scope_backend_type=ScopeBackendType.AZURE_KEYVAULT, backend_azure_keyvault=meta)
    listed = {s.name: s for s in w.secrets.list_scopes()}[name]
    assert listed.backend_type == ScopeBackendType.AZURE_KEYVAULT
    assert listed.keyvault_metadata == meta
    raw = server.api("GET", "/api/2.0/secrets/scopes/list").json()["scopes"]
    assert {"name": name, "backend_type": "AZURE_KEYVAULT",
            "keyvault_metadata": meta.as_dict()} in raw
    for path, body in (("/api/2.0/secrets/put", {"scope": name, "key": "k", "string_value": "v"}),
                       ("/api/2.0/secrets/delete", {"scope": name, "key": "k"})):
        r = server.api("POST", path, json=body)
        assert r.status_code == 400 and err(r) == "INVALID_PARAMETER_VALUE"
        assert "read-only" in r.json()["message"] and "Azure Key Vault" in r.json()["message"]
    w.secrets.delete_scope(name)


# -- secrets ---------------------------------------------------------------------------------


def test_secret_lifecycle(server, w, unique):
    name = unique("life")
    w.secrets.create_scope(name)
    w.secrets.put_secret(name, "db.pass_word-1", string_value="s3cret ünïcode")
    got = w.secrets.get_secret(name, "db.pass_word-1")
    assert got.key == "db.pass_word-1"
    assert base64.b64decode(got.value).decode() == "s3cret ünïcode"
    first = {s.key: s.last_updated_timestamp for s in w.secrets.list_secrets(name)}
    assert list(first) == ["db.pass_word-1"] and first["db.pass_word-1"] > 0
    w.secrets.put_secret(name, "db.pass_word-1", string_value="second")
    assert base64.b64decode(w.secrets.get_secret(name, "db.pass_word-1").value) == b"second"
    assert [s.last_updated_timestamp for s in w.secrets.list_secrets(name)][0] >= first["db.pass_word-1"]
    w.secrets.delete_secret(name, "db.pass_word-1")
    assert list(w.secrets.list_secrets(name)) == []
    with pytest.raises(ResourceDoesNotExist):
        w.secrets.get_secret(name, "db.pass_word-1")
    with pytest.raises(ResourceDoesNotExist):
        w.secrets.delete_secret(name, "db.pass_word-1")
    for method, path in (("GET", "/api/2.0/secrets/list"), ("GET", "/api/2.0/secrets/get"),
                         ("POST", "/api/2.0/secrets/put"), ("POST", "/api/2.0/secrets/delete")):
        kw = {"params": {"scope": "no-such-scope", "key": "k"}} if method == "GET" else \
            {"json": {"scope": "no-such-scope", "key": "k", "string_value": "v"}}
        r = server.api(method, path, **kw)
        assert r.status_code == 404 and err(r) == "RESOURCE_DOES_NOT_EXIST", path


def test_bytes_value_round_trip(w, unique):
    name = unique("bytes")
    w.secrets.create_scope(name)
    raw = bytes(range(256)) + b"\xff\xfe\x00"
    w.secrets.put_secret(name, "bin", bytes_value=base64.b64encode(raw).decode())
    assert base64.b64decode(w.secrets.get_secret(name, "bin").value) == raw
    assert w.dbutils.secrets.getBytes(name, "bin") == raw


def test_value_size_limit(server, w, unique):
    name = unique("big")
    w.secrets.create_scope(name)
    w.secrets.put_secret(name, "max", string_value="a" * KIB128)
    assert len(base64.b64decode(w.secrets.get_secret(name, "max").value)) == KIB128
    w.secrets.put_secret(name, "maxb", bytes_value=base64.b64encode(b"\x01" * KIB128).decode())
    for body in ({"string_value": "a" * (KIB128 + 1)},
                 {"string_value": "é" * (KIB128 // 2 + 1)},  # 2 bytes each in UTF-8
                 {"bytes_value": base64.b64encode(b"\x01" * (KIB128 + 1)).decode()}):
        r = server.api("POST", "/api/2.0/secrets/put", json={"scope": name, "key": "over", **body})
        assert r.status_code == 400 and err(r) == "INVALID_PARAMETER_VALUE"
        assert "128 KiB" in r.json()["message"] and len(r.text) < 500
    assert sorted(s.key for s in w.secrets.list_secrets(name)) == ["max", "maxb"]


@pytest.mark.parametrize("body", [
    {"key": "k"},                                             # no value
    {"key": "k", "string_value": "a", "bytes_value": "YQ=="},  # both
    {"key": "k", "bytes_value": "not base64!!TOPSECRET"},
    {"key": "k", "string_value": 12},
    {"key": "bad key", "string_value": "v"},
    {"key": "a@b", "string_value": "v"},
    {"key": "k" * 129, "string_value": "v"},
    {"string_value": "v"},
])
def test_put_rejects_bad_input(server, w, unique, body):
    name = unique("badput")
    w.secrets.create_scope(name)
    r = server.api("POST", "/api/2.0/secrets/put", json={"scope": name, **body})
    assert r.status_code == 400 and err(r) == "INVALID_PARAMETER_VALUE", r.text
    assert "TOPSECRET" not in r.text
    assert list(w.secrets.list_secrets(name)) == []


def test_values_never_listed_or_echoed(server, w, unique):
    name = unique("quiet")
    w.secrets.create_scope(name)
    value = "VALUE-" + unique("zz")
    w.secrets.put_secret(name, "k", string_value=value)
    b64 = base64.b64encode(value.encode()).decode()
    for r in (server.api("GET", "/api/2.0/secrets/list", params={"scope": name}),
              server.api("GET", "/api/2.0/secrets/scopes/list"),
              server.api("GET", "/api/2.0/secrets/acls/list", params={"scope": name}),
              server.api("POST", "/api/2.0/secrets/put", json={"scope": name, "key": "k", "string_value": value,
                                                              "bytes_value": b64}),
              server.api("POST", "/api/2.0/secrets/put", json={"scope": name, "key": "bad key",
                                                              "string_value": value})):
        assert value not in r.text and b64 not in r.text
    assert r.status_code == 400
    assert base64.b64decode(w.secrets.get_secret(name, "k").value).decode() == value


def test_encrypted_at_rest(server, w, unique):
    name = unique("rest")
    w.secrets.create_scope(name)
    text = "PLAINTEXT-MARKER-" + unique("p")
    raw = b"RAW-BYTES-MARKER-" + os.urandom(8).hex().encode()
    w.secrets.put_secret(name, "s", string_value=text)
    w.secrets.put_secret(name, "b", bytes_value=base64.b64encode(raw).decode())
    db = server.settings.home / "workspace.db"
    files = [p for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")) if p.exists()]
    assert db in files and len(files) >= 2
    blob = b"".join(p.read_bytes() for p in files)
    for needle in (text.encode(), raw, base64.b64encode(text.encode()), base64.b64encode(raw)):
        assert needle not in blob
    # The key names are there (they are metadata), the values decrypt through the API.
    assert b"rest" in blob
    assert w.dbutils.secrets.get(name, "s") == text


def test_dbutils_secrets(server, w, unique):
    name = unique("dbu")
    w.secrets.create_scope(name)
    w.secrets.put_secret(name, "a", string_value="alpha")
    w.secrets.put_secret(name, "b", bytes_value=base64.b64encode(b"\x00\x01").decode())
    assert w.dbutils.secrets.get(name, "a") == "alpha"
    assert w.dbutils.secrets.getBytes(name, "b") == b"\x00\x01"
    assert [m.key for m in w.dbutils.secrets.list(name)] == ["a", "b"]
    assert name in [s.name for s in w.dbutils.secrets.listScopes()]
    with pytest.raises(ResourceDoesNotExist):
        w.dbutils.secrets.get(name, "missing")


def test_legacy_cli_style_get_with_json_body(server, w, unique):
    # The legacy CLI sends GET parameters as a JSON body with Content-Type text/json.
    name = unique("legacy")
    w.secrets.create_scope(name)
    w.secrets.put_secret(name, "k", string_value="v")
    headers = {"Content-Type": "text/json"}
    r = server.api("GET", "/api/2.0/secrets/list", data=f'{{"scope": "{name}"}}', headers=headers)
    assert r.status_code == 200 and [s["key"] for s in r.json()["secrets"]] == ["k"]
    r = server.api("GET", "/api/2.0/secrets/acls/list", data=f'{{"scope": "{name}"}}', headers=headers)
    assert r.json() == {"items": [{"principal": "admin", "permission": "MANAGE"}]}
    r = server.api("GET", "/api/2.0/secrets/scopes/list", headers=headers)
    assert {"name": name, "backend_type": "DATABRICKS"} in r.json()["scopes"]


def test_unauthenticated_calls_are_401(server, unique):
    for method, path in (("POST", "/api/2.0/secrets/scopes/create"), ("GET", "/api/2.0/secrets/scopes/list"),
                         ("GET", "/api/2.0/secrets/get"), ("POST", "/api/2.0/secrets/acls/put")):
        r = server.api(method, path, token="dapi" + "9" * 32, json={"scope": unique("u")})
        assert r.status_code == 401 and err(r) == "UNAUTHENTICATED"


# -- ACLs ------------------------------------------------------------------------------------


def test_acl_endpoints(server, w, people, unique):
    name = unique("acl")
    w.secrets.create_scope(name)
    reader = people["reader"][0]
    w.secrets.put_acl(name, reader, AclPermission.READ)
    w.secrets.put_acl(name, "users", AclPermission.READ)
    assert w.secrets.get_acl(name, reader).permission == AclPermission.READ
    w.secrets.put_acl(name, reader, AclPermission.WRITE)  # overwrite
    assert {(a.principal, a.permission) for a in w.secrets.list_acls(name)} == {
        ("admin", AclPermission.MANAGE), (reader, AclPermission.WRITE), ("users", AclPermission.READ)}
    w.secrets.delete_acl(name, reader)
    with pytest.raises(ResourceDoesNotExist):
        w.secrets.get_acl(name, reader)
    with pytest.raises(ResourceDoesNotExist):
        w.secrets.delete_acl(name, reader)
    with pytest.raises(ResourceDoesNotExist):
        w.secrets.list_acls("no-such-scope")
    with pytest.raises(InvalidParameterValue):
        w.secrets.put_acl(name, "nobody-" + name, AclPermission.READ)
    for body in ({"principal": reader, "permission": "OWN"}, {"principal": reader},
                 {"permission": "READ"}, {"principal": "", "permission": "READ"}):
        r = server.api("POST", "/api/2.0/secrets/acls/put", json={"scope": name, **body})
        assert r.status_code == 400 and err(r) == "INVALID_PARAMETER_VALUE", body
    r = server.api("GET", "/api/2.0/secrets/acls/get", params={"scope": name})
    assert r.status_code == 400
    r = server.api("POST", "/api/2.0/secrets/acls/put", json={"scope": "no-such-scope", "principal": reader,
                                                               "permission": "READ"})
    assert r.status_code == 404 and err(r) == "RESOURCE_DOES_NOT_EXIST"


def test_effective_permission_is_max_of_user_and_groups(server, people, unique):
    owner = server.client(people["owner"][1])
    outsider_name, outsider_token = people["outsider"]
    outsider = server.client(outsider_token)
    name = unique("groups")
    owner.secrets.create_scope(name)
    owner.secrets.put_secret(name, "k", string_value="v")
    with pytest.raises(PermissionDenied):
        outsider.secrets.list_secrets(name)
    owner.secrets.put_acl(name, "users", AclPermission.READ)
    assert outsider.dbutils.secrets.get(name, "k") == "v"
    with pytest.raises(PermissionDenied):
        outsider.secrets.put_secret(name, "k", string_value="w")
    owner.secrets.put_acl(name, outsider_name, AclPermission.WRITE)
    outsider.secrets.put_secret(name, "k", string_value="w")
    # A lower user ACL does not cut the group's level.
    owner.secrets.put_acl(name, outsider_name, AclPermission.READ)
    owner.secrets.put_acl(name, "users", AclPermission.WRITE)
    outsider.secrets.put_secret(name, "k", string_value="x")
    owner.secrets.delete_acl(name, "users")
    with pytest.raises(PermissionDenied):
        outsider.secrets.put_secret(name, "k", string_value="y")
    # `admins` as a principal: the admin manages anyway.
    owner.secrets.put_acl(name, "admins", AclPermission.READ)
    assert server.client().secrets.get_acl(name, "admins").permission == AclPermission.READ


OPERATIONS = {
    "list_secrets": ("READ", lambda c, s, p: c.secrets.list_secrets(s)),
    "get_secret": ("READ", lambda c, s, p: c.secrets.get_secret(s, "k")),
    "dbutils_get": ("READ", lambda c, s, p: c.dbutils.secrets.get(s, "k")),
    "put_secret": ("WRITE", lambda c, s, p: c.secrets.put_secret(s, "k2", string_value="x")),
    "delete_secret": ("WRITE", lambda c, s, p: c.secrets.delete_secret(s, "k")),
    "list_acls": ("MANAGE", lambda c, s, p: c.secrets.list_acls(s)),
    "get_acl": ("MANAGE", lambda c, s, p: c.secrets.get_acl(s, p["reader"][0])),
    "put_acl": ("MANAGE", lambda c, s, p: c.secrets.put_acl(s, p["outsider"][0], AclPermission.READ)),
    "delete_acl": ("MANAGE", lambda c, s, p: c.secrets.delete_acl(s, p["reader"][0])),
    "delete_scope": ("MANAGE", lambda c, s, p: c.secrets.delete_scope(s)),
}
LEVEL_OF = {"admin": 3, "owner": 3, "writer": 2, "reader": 1, "outsider": 0}
NEEDED = {"READ": 1, "WRITE": 2, "MANAGE": 3}


@pytest.mark.parametrize("role", list(LEVEL_OF))
@pytest.mark.parametrize("op", list(OPERATIONS))
def test_acl_matrix(server, people, unique, role, op):
    needed, call = OPERATIONS[op]
    scope = shared_scope(server, people, unique("matrix"))
    client = server.client(people[role][1])
    owner = server.client(people["owner"][1])
    before = (sorted(s.key for s in owner.secrets.list_secrets(scope)),
              sorted((a.principal, a.permission.value) for a in owner.secrets.list_acls(scope)))
    if LEVEL_OF[role] >= NEEDED[needed]:
        call(client, scope, people)
    else:
        with pytest.raises(PermissionDenied) as exc:
            call(client, scope, people)
        assert needed in str(exc.value)
        # Nothing changed.
        assert (sorted(s.key for s in owner.secrets.list_secrets(scope)),
                sorted((a.principal, a.permission.value) for a in owner.secrets.list_acls(scope))) == before


# -- master-key rotation -----------------------------------------------------------------------


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=30) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_master_key_rotation_keeps_secrets_and_tokens(tmp_path):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    home = tmp_path / "home"
    port = free_port()
    env = {"BRICKYARD_BOOTSTRAP_TOKEN": ADMIN_TOKEN}

    def client() -> WorkspaceClient:
        return WorkspaceClient(config=Config(host=f"http://127.0.0.1:{port}", token=ADMIN_TOKEN,
                                             auth_type="pat", retry_timeout_seconds=20))

    proc = run_cli_server(home, port, env)
    try:
        w = client()
        w.secrets.create_scope("rot")
        w.secrets.put_secret("rot", "s", string_value="before-rotation-VALUE")
        w.secrets.put_secret("rot", "b", bytes_value=base64.b64encode(b"\x00\xffbin").decode())
        extra = w.tokens.create(comment="survives").token_value
    finally:
        _stop(proc)
    old_key = (home / "master.key").read_text()
    db_before = (home / "workspace.db").read_bytes()
    brickyard = REPO / ".venv" / "bin" / "brickyard"
    cmd = [str(brickyard)] if brickyard.exists() else [sys.executable, "-m", "brickyard.cli"]
    done = subprocess.run([*cmd, "admin", "rotate-master-key", "--home", str(home)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 2 stored values" in done.stdout
    new_key = (home / "master.key").read_text()
    assert new_key != old_key and (home / "master.key").stat().st_mode & 0o777 == 0o600
    assert not (home / "master.key.new").exists()
    assert db_before != (home / "workspace.db").read_bytes()

    proc = run_cli_server(home, port, env)
    try:
        w = client()
        assert w.dbutils.secrets.get("rot", "s") == "before-rotation-VALUE"
        assert w.dbutils.secrets.getBytes("rot", "b") == b"\x00\xffbin"
        assert w.current_user.me().user_name == "admin"
        other = WorkspaceClient(config=Config(host=f"http://127.0.0.1:{port}", token=extra, auth_type="pat"))
        assert other.current_user.me().user_name == "admin"
    finally:
        _stop(proc)
    # The old master key no longer opens the workspace.
    bad = subprocess.run([sys.executable, "-c", "from brickyard.context import open_workspace;"
                          "from brickyard.settings import Settings;"
                          f"open_workspace(Settings(home={str(home)!r}, master_key={old_key.strip()!r}))"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "master key does not match" in bad.stderr


def test_master_key_file_is_private(server):
    path = Path(server.settings.home) / "master.key"
    assert path.stat().st_mode & 0o777 == 0o600


def test_interrupted_rotation_is_recovered(tmp_path, monkeypatch):
    """A crash between the rotation's commit and its rename loses nothing (start or next rotation)."""
    from brickyard.services import keys
    from conftest import ThreadedServer, make_settings

    home = tmp_path / "home"
    settings = make_settings(home)
    srv = ThreadedServer(settings)
    srv.start()
    try:
        w = server_client(settings.port)
        w.secrets.create_scope("crash")
        w.secrets.put_secret("crash", "k", string_value="still-here")
    finally:
        srv.stop()

    real_replace = os.replace

    def crash_before_rename(src, dst):  # noqa: ANN001
        if Path(dst) == settings.master_key_file:
            raise OSError("simulated crash before the rename")
        return real_replace(src, dst)

    for recover_by in ("start", "rotation"):
        monkeypatch.setattr(os, "replace", crash_before_rename)
        with pytest.raises(OSError):
            keys.rotate_master_key(settings)
        monkeypatch.undo()
        assert (home / "master.key.new").exists()  # the only copy of the key now in use
        if recover_by == "rotation":
            assert keys.rotate_master_key(settings) == 1
        srv = ThreadedServer(settings)
        srv.start()
        try:
            assert server_client(settings.port).dbutils.secrets.get("crash", "k") == "still-here"
        finally:
            srv.stop()
        assert not (home / "master.key.new").exists()


def server_client(port: int):  # noqa: ANN201
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    return WorkspaceClient(config=Config(host=f"http://127.0.0.1:{port}", token=ADMIN_TOKEN, auth_type="pat",
                                         retry_timeout_seconds=20))


# -- the legacy `databricks` CLI (port 80 only: it drops the port of its host) ----------------


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    import socket

    cli = REPO / ".venv" / "bin" / "databricks"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 80))
        except OSError as exc:
            pytest.skip(f"cannot listen on 127.0.0.1:80: {exc.strerror}")
    if not cli.exists():
        pytest.skip(f"{cli} is not installed")
    root = tmp_path_factory.mktemp("legacy-secrets")
    proc = run_cli_server(root / "brickyard", 80, {"BRICKYARD_BOOTSTRAP_TOKEN": ADMIN_TOKEN})
    (root / ".databrickscfg").write_text(f"[DEFAULT]\nhost = http://127.0.0.1\ntoken = {ADMIN_TOKEN}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABRICKS_")}
    env["HOME"] = str(root)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(cli), "secrets", *args], env=env, cwd=root, capture_output=True, text=True,
                              timeout=120)

    yield run
    _stop(proc)


def test_legacy_cli_secrets(legacy):
    def ok(*args: str) -> str:
        out = legacy(*args)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    ok("create-scope", "--scope", "cli-scope", "--initial-manage-principal", "users")
    ok("create-scope", "--scope", "cli-akv", "--scope-backend-type", "AZURE_KEYVAULT",
       "--resource-id", "/subscriptions/0/vaults/kv", "--dns-name", "https://kv.vault.azure.net/")
    scopes = ok("list-scopes")
    assert any(line.split()[:2] == ["cli-scope", "DATABRICKS"] for line in scopes.splitlines()), scopes
    assert any(line.split()[:2] == ["cli-akv", "AZURE_KEYVAULT"] for line in scopes.splitlines()), scopes
    assert "https://kv.vault.azure.net/" in scopes
    ok("put", "--scope", "cli-scope", "--key", "pw", "--string-value", "legacy-VALUE")
    ok("put", "--scope", "cli-scope", "--key", "bin", "--binary-file", str(REPO / "jvm-artifacts.txt"))
    listed = ok("list", "--scope", "cli-scope")
    assert "pw" in listed.split() and "bin" in listed.split() and "legacy-VALUE" not in listed
    ok("put-acl", "--scope", "cli-scope", "--principal", "admins", "--permission", "READ")
    assert "READ" in ok("get-acl", "--scope", "cli-scope", "--principal", "admins")
    assert "users" in ok("list-acls", "--scope", "cli-scope")
    ok("delete-acl", "--scope", "cli-scope", "--principal", "admins")
    missing = legacy("get-acl", "--scope", "cli-scope", "--principal", "admins")
    assert missing.returncode != 0 and "RESOURCE_DOES_NOT_EXIST" in missing.stdout + missing.stderr
    ro = legacy("put", "--scope", "cli-akv", "--key", "k", "--string-value", "v")
    assert ro.returncode != 0 and "INVALID_PARAMETER_VALUE" in ro.stdout + ro.stderr
    dup = legacy("create-scope", "--scope", "cli-scope")
    assert dup.returncode != 0 and "RESOURCE_ALREADY_EXISTS" in dup.stdout + dup.stderr
    ok("delete", "--scope", "cli-scope", "--key", "pw")
    ok("delete-scope", "--scope", "cli-scope")
    assert "cli-scope" not in ok("list-scopes")
