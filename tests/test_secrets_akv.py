"""AZURE_KEYVAULT scopes read through azure-keyvault-secrets from a real Key Vault endpoint.

Two vaults, each on free loopback ports over HTTPS:
- `lowkey`: Lowkey Vault's Spring Boot jar run with the machine's Java. Maven Central does not
  serve `lowkey-vault-app`, so the jar is taken from the JVM cache (or
  $BRICKYARD_LOWKEY_VAULT_JAR); without it these runs skip, quoting Maven's error.
- `standin`: a small Key Vault REST double in this module (challenge auth, versioned secret
  bundles, paged listing, disabled secrets, `api-version`), served with a certificate from
  its own CA, so the TLS trust (CA bundle) path is exercised too.
Values are seeded with azure-keyvault-secrets directly and read back through our API.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.keyvault.secrets import SecretClient
from databricks.sdk.errors import PermissionDenied, ResourceDoesNotExist
from databricks.sdk.service.workspace import AclPermission, AzureKeyVaultSecretScopeMetadata, ScopeBackendType

from brickyard.jvm import jar_path, jvm_cache_dir
from brickyard.secrets.azure_keyvault import StaticTokenCredential, kv_secret_name
from conftest import ADMIN_TOKEN, ThreadedServer, free_port, make_settings

LOWKEY = "com.github.nagyesta.lowkey-vault:lowkey-vault-app"
LOWKEY_VERSION = "2.7.1"  # a Spring Boot 3 / Java 17 release
TOKEN = "emulator-token-" + os.urandom(4).hex()


# -- the stand-in Key Vault ------------------------------------------------------------------


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf certificate for 127.0.0.1/localhost signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def cert(subject, issuer, pub, signer, ca: bool, san=None):  # noqa: ANN001, ANN202
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
            b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        else:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False)
        return b.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "brickyard test CA")])
    ca = cert(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name,
                leaf_key.public_key(), ca_key, False, san)
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return paths


class StandInVault:
    """Key Vault's secrets REST protocol, just enough for SecretClient: set/get/update/list."""

    PAGE = 2  # small pages, so listing must follow nextLink

    def __init__(self, folder: Path):
        self.ca, cert, key = make_tls_files(folder)
        self.secrets: dict[str, dict] = {}
        self.api_versions: set[str] = set()
        self.lock = threading.Lock()
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

            def do_GET(self) -> None:  # noqa: N802
                vault.handle(self, "GET")

            def do_PUT(self) -> None:  # noqa: N802
                vault.handle(self, "PUT")

            def do_PATCH(self) -> None:  # noqa: N802
                vault.handle(self, "PATCH")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _bundle(self, name: str, with_value: bool) -> dict:
        s = self.secrets[name]
        out = {"id": f"{self.url}/secrets/{name}" + (f"/{s['version']}" if with_value else ""),
               "attributes": {"enabled": s["enabled"], "created": s["created"], "updated": s["updated"],
                              "recoveryLevel": "Recoverable+Purgeable"}}
        if with_value:
            out["value"] = s["value"]
        return out

    def handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(req.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.api_versions.add(query.get("api-version", ""))
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        if req.headers.get("Authorization") != f"Bearer {TOKEN}":
            # Key Vault's challenge: the client learns where to get a token, then retries.
            return self._send(req, 401, {"error": {"code": "Unauthorized", "message": "AKV10000"}}, {
                "WWW-Authenticate": 'Bearer authorization="https://login.microsoftonline.com/'
                                    '00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"'})
        segs = [s for s in parts.path.split("/") if s]
        if not segs or segs[0] != "secrets":
            return self._send(req, 404, {"error": {"code": "NotFound", "message": "no such route"}})
        with self.lock:
            if method == "GET" and len(segs) == 1:
                names = sorted(self.secrets)
                start = int(query.get("$skiptoken", "0"))
                page = {"value": [self._bundle(n, False) for n in names[start:start + self.PAGE]], "nextLink": None}
                if start + self.PAGE < len(names):
                    page["nextLink"] = (f"{self.url}/secrets?api-version={query.get('api-version', '')}"
                                        f"&$skiptoken={start + self.PAGE}")
                return self._send(req, 200, page)
            name = segs[1]
            now = int(time.time())
            if method == "PUT":
                data = json.loads(body or b"{}")
                prev = self.secrets.get(name, {})
                self.secrets[name] = {"value": data["value"], "version": os.urandom(16).hex(),
                                      "enabled": data.get("attributes", {}).get("enabled", True),
                                      "created": prev.get("created", now), "updated": now}
                return self._send(req, 200, self._bundle(name, True))
            if name not in self.secrets:
                return self._send(req, 404, {"error": {"code": "SecretNotFound", "message":
                                  f"A secret with (name/id) {name} was not found in this key vault."}})
            if method == "PATCH":
                attrs = json.loads(body or b"{}").get("attributes", {})
                if "enabled" in attrs:
                    self.secrets[name]["enabled"] = attrs["enabled"]
                self.secrets[name]["updated"] = now
                return self._send(req, 200, self._bundle(name, False))
            if not self.secrets[name]["enabled"]:
                return self._send(req, 403, {"error": {"code": "Forbidden", "message": "Operation get is not "
                                  "allowed on a disabled secret.", "innererror": {"code": "SecretDisabled"}}})
            return self._send(req, 200, self._bundle(name, True))

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.end_headers()
        req.wfile.write(data)


# -- Lowkey Vault ------------------------------------------------------------------------------


def lowkey_jar() -> Path:
    """The Lowkey Vault jar, or pytest.skip quoting why it cannot be had."""
    override = os.environ.get("BRICKYARD_LOWKEY_VAULT_JAR")
    if override:
        return Path(override)
    try:
        return jar_path("lowkey-vault-app")
    except FileNotFoundError:
        pass
    if shutil.which("mvn") is None:
        pytest.skip("Lowkey Vault jar not cached and Maven (mvn) is not installed")
    coords = f"{LOWKEY}:{LOWKEY_VERSION}"
    done = subprocess.run(["mvn", "-q", "-B", "-U", "-Dstyle.color=never", "dependency:copy",
                           f"-Dartifact={coords}", f"-DoutputDirectory={jvm_cache_dir()}"],
                          capture_output=True, text=True, timeout=300)
    try:
        return jar_path("lowkey-vault-app")
    except FileNotFoundError:
        text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
        lines = [ln for ln in text.splitlines() if "ERROR" in ln]
        pytest.skip(f"Lowkey Vault jar unavailable: `mvn dependency:copy -Dartifact={coords}` failed: "
                    + (lines[0].strip() if lines else f"exit {done.returncode}"))


class LowkeyVault:
    def __init__(self, folder: Path):
        jar = lowkey_jar()
        java = os.environ.get("BRICKYARD_LOWKEY_JAVA", "java")
        port = free_port()
        self.log = folder / "lowkey.log"
        self.proc = subprocess.Popen(
            [java, "-jar", str(jar), f"--server.port={port}", f"--app.token.port={free_port()}",
             "--LOWKEY_VAULT_RELAXED_PORTS=true"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=folder)
        self.url = f"https://127.0.0.1:{port}"
        self.ca = None
        self.api_versions: set[str] = set()
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError(f"Lowkey Vault did not start: {self.log.read_text()[-2000:]}")
            try:
                requests.get(self.url + "/ping", verify=False, timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# -- fixtures ----------------------------------------------------------------------------------


def emulator_settings(vault, **extra) -> dict:  # noqa: ANN001
    base = {"akv_credential": "static_token", "akv_static_token": TOKEN, "akv_retry_total": 0,
            "akv_timeout_seconds": 10, "akv_disable_challenge_resource_verification": True}
    if vault.ca:
        base["akv_ca_bundle"] = str(vault.ca)
    else:
        base["akv_verify_tls"] = False  # Lowkey's self-signed certificate has no CA to trust
    base.update(extra)
    return base


@pytest.fixture(scope="module", params=["lowkey", "standin"])
def vault(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    v = LowkeyVault(folder) if request.param == "lowkey" else StandInVault(folder)
    v.kind = request.param
    yield v
    v.close()


@pytest.fixture(scope="module")
def seed(vault):
    """A SecretClient straight to the emulator (not through Brickyard), to seed and inspect values."""
    client = SecretClient(vault.url, StaticTokenCredential(TOKEN), verify_challenge_resource=False,
                          connection_verify=str(vault.ca) if vault.ca else False, retry_total=0)
    yield client
    client.close()


@contextmanager
def workspace(tmp_path_factory, vault, **extra):  # noqa: ANN001, ANN201
    srv = ThreadedServer(make_settings(tmp_path_factory.mktemp("akvhome") / "b", **emulator_settings(vault, **extra)))
    srv.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.settings.port}"
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def akv(tmp_path_factory, vault, seed):
    """A Brickyard workspace configured for the emulator, with one AKV scope over it."""
    with workspace(tmp_path_factory, vault) as (srv, url):
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.core import Config

        w = WorkspaceClient(config=Config(host=url, token=ADMIN_TOKEN, auth_type="pat", retry_timeout_seconds=20))
        meta = AzureKeyVaultSecretScopeMetadata(
            resource_id="/subscriptions/0/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/emu",
            dns_name=vault.url + "/")
        w.secrets.create_scope("kv", scope_backend_type=ScopeBackendType.AZURE_KEYVAULT, backend_azure_keyvault=meta)
        seed.set_secret("db-password", "p@ss-" + vault.kind)
        seed.set_secret("api-key", "k3y")
        seed.set_secret("zz-extra", "z")
        seed.set_secret("unicode", "ünïcødé ✓")
        yield srv, url, w


def api(url: str, method: str, path: str, token: str = ADMIN_TOKEN, **kw) -> requests.Response:
    return requests.request(method, url + path, headers={"Authorization": f"Bearer {token}"}, timeout=60, **kw)


# -- tests -------------------------------------------------------------------------------------


def test_read_seeded_secrets(akv, vault):
    _, _, w = akv
    assert w.dbutils.secrets.get("kv", "db-password") == "p@ss-" + vault.kind
    assert w.dbutils.secrets.getBytes("kv", "unicode") == "ünïcødé ✓".encode()
    got = w.secrets.get_secret("kv", "api-key")
    assert got.key == "api-key" and got.value == "azN5"  # base64 of k3y
    # Our keys may hold '_' and '.', Key Vault names may not: both read `db-password`.
    assert w.dbutils.secrets.get("kv", "db_password") == "p@ss-" + vault.kind
    assert w.dbutils.secrets.get("kv", "db.password") == "p@ss-" + vault.kind


def test_list_follows_pages_and_hides_values(akv, vault, seed):
    _, url, w = akv
    keys = [m.key for m in w.secrets.list_secrets("kv")]
    assert {"db-password", "api-key", "zz-extra", "unicode"} <= set(keys) and keys == sorted(keys)
    assert all(m.last_updated_timestamp > 1_600_000_000_000 for m in w.secrets.list_secrets("kv"))
    assert {m.key for m in w.dbutils.secrets.list("kv")} == set(keys)
    r = api(url, "GET", "/api/2.0/secrets/list", params={"scope": "kv"})
    assert "p@ss" not in r.text and "k3y" not in r.text
    kv_scope = {s.name: s for s in w.dbutils.secrets.listScopes()}
    assert "kv" in kv_scope


def test_disabled_secret_is_not_listed(akv, seed):
    _, _, w = akv
    seed.set_secret("turned-off", "x")
    seed.update_secret_properties("turned-off", enabled=False)
    assert "turned-off" not in {m.key for m in w.secrets.list_secrets("kv")}


def test_disabled_secret_read_is_denied(akv, vault, seed):
    if vault.kind != "standin":
        pytest.skip("the disabled-secret answer is checked against the stand-in's Key Vault 403")
    _, _, w = akv
    seed.set_secret("off-read", "x")
    seed.update_secret_properties("off-read", enabled=False)
    with pytest.raises(PermissionDenied):
        w.dbutils.secrets.get("kv", "off-read")


def test_missing_and_invalid_keys(akv):
    _, url, w = akv
    with pytest.raises(ResourceDoesNotExist) as exc:
        w.secrets.get_secret("kv", "no-such-secret")
    assert "no-such-secret" in str(exc.value)
    r = api(url, "GET", "/api/2.0/secrets/get", params={"scope": "kv", "key": "k" * 128})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert kv_secret_name("a_b.c") == "a-b-c"


def test_put_and_delete_are_read_only(akv, seed):
    _, url, _ = akv
    r = api(url, "POST", "/api/2.0/secrets/put", json={"scope": "kv", "key": "api-key", "string_value": "new"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "read-only" in r.json()["message"]
    r = api(url, "POST", "/api/2.0/secrets/delete", json={"scope": "kv", "key": "api-key"})
    assert r.status_code == 400 and "read-only" in r.json()["message"]
    assert seed.get_secret("api-key").value == "k3y"


def test_acls_guard_akv_scopes(akv):
    srv, url, w = akv
    body = {"userName": "akvreader"}
    assert api(url, "POST", "/api/2.0/preview/scim/v2/Users", json=body).status_code == 201
    uid = api(url, "GET", "/api/2.0/preview/scim/v2/Users").json()["Resources"]
    uid = next(u["id"] for u in uid if u["userName"] == "akvreader")
    token = api(url, "POST", "/api/2.0/token-management/on-behalf-of/tokens",
                json={"application_id": uid}).json()["token_value"]
    r = api(url, "GET", "/api/2.0/secrets/get", token=token, params={"scope": "kv", "key": "api-key"})
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"
    w.secrets.put_acl("kv", "akvreader", AclPermission.READ)
    r = api(url, "GET", "/api/2.0/secrets/get", token=token, params={"scope": "kv", "key": "api-key"})
    assert r.status_code == 200 and r.json()["value"] == "azN5"


def test_configured_api_version_is_sent(tmp_path_factory, vault, seed):
    if vault.kind != "standin":
        pytest.skip("the stand-in records the api-version it receives")
    seed.set_secret("versioned", "v")
    for version in ("7.4", "7.6"):
        vault.api_versions.clear()
        with workspace(tmp_path_factory, vault, akv_api_version=version) as (_, url):
            make_kv_scope(url, vault)
            r = api(url, "GET", "/api/2.0/secrets/get", params={"scope": "kv", "key": "versioned"})
            assert r.status_code == 200, r.text
        assert vault.api_versions == {version}


def make_kv_scope(url: str, vault) -> None:  # noqa: ANN001
    r = api(url, "POST", "/api/2.0/secrets/scopes/create", json={
        "scope": "kv", "scope_backend_type": "AZURE_KEYVAULT",
        "backend_azure_keyvault": {"resource_id": "/subscriptions/0/x", "dns_name": vault.url}})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("extra, status, code, words", [
    ({"akv_static_token": "wrong-token"}, 403, "PERMISSION_DENIED", "refused access"),
    ({"akv_disable_challenge_resource_verification": False}, 502, "IO_ERROR",
     "BRICKYARD_AKV_DISABLE_CHALLENGE_RESOURCE_VERIFICATION"),
    ({"akv_ca_bundle": ""}, 502, "IO_ERROR", "certificate verify failed"),
    ({"akv_api_version": "1.0"}, 400, "INVALID_STATE", "API version"),
])
def test_misconfiguration_gives_clear_errors(tmp_path_factory, vault, seed, extra, status, code, words):
    if vault.kind != "standin":
        pytest.skip("misconfigurations are checked against the stand-in")
    seed.set_secret("probe", "PROBE-VALUE")
    with workspace(tmp_path_factory, vault, **extra) as (_, url):
        make_kv_scope(url, vault)
        r = api(url, "GET", "/api/2.0/secrets/get", params={"scope": "kv", "key": "probe"})
        assert (r.status_code, r.json()["error_code"]) == (status, code), r.text
        assert words in r.json()["message"] and "PROBE-VALUE" not in r.text and "Traceback" not in r.text


def test_unreachable_vault_is_a_clear_error(tmp_path_factory, vault):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with workspace(tmp_path_factory, vault) as (_, url):
        r = api(url, "POST", "/api/2.0/secrets/scopes/create", json={
            "scope": "gone", "scope_backend_type": "AZURE_KEYVAULT",
            "backend_azure_keyvault": {"resource_id": "/x", "dns_name": f"https://127.0.0.1:{closed}/"}})
        assert r.status_code == 200
        started = time.time()
        r = api(url, "GET", "/api/2.0/secrets/list", params={"scope": "gone"})
        assert r.status_code == 502 and r.json()["error_code"] == "IO_ERROR"
        assert f"127.0.0.1:{closed}" in r.json()["message"] and time.time() - started < 30
