"""The error contract: one JSON body shape, request ids on 500s, no stack traces."""
from __future__ import annotations

import sqlite3

import pytest
from databricks.sdk.errors import InternalError


def test_corrupted_value_gives_500_with_request_id(server, w, unique):
    scope = unique("broken")
    w.secrets.create_scope(scope=scope)
    w.secrets.put_secret(scope=scope, key="k", string_value="hush-hush-value")
    # Simulate a damaged database row (disk corruption or a foreign master key).
    with sqlite3.connect(server.settings.home / "workspace.db") as db:
        db.execute("UPDATE secrets SET ciphertext = ? WHERE key = 'k' AND scope_id = "
                   "(SELECT id FROM secret_scopes WHERE name = ?)", (b"\0" * 40, scope))
    r = server.api("GET", "/api/2.0/secrets/get", params={"scope": scope, "key": "k"})
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == "INTERNAL_ERROR"
    assert r.headers["x-request-id"] in body["message"]
    assert "Traceback" not in r.text and "hush-hush" not in r.text
    with pytest.raises(InternalError):
        w.secrets.get_secret(scope=scope, key="k")


def test_malformed_and_unknown(server):
    r = server.api("POST", "/api/2.0/secrets/scopes/create", data=b"\xff\xfe junk")
    assert r.status_code == 400 and r.json()["error_code"] == "MALFORMED_REQUEST"
    r = server.api("POST", "/api/2.0/secrets/scopes/create", json=["not", "an", "object"])
    assert r.status_code == 400 and r.json()["error_code"] == "MALFORMED_REQUEST"
    r = server.api("DELETE", "/api/2.0/token/list")
    assert r.status_code == 405 and set(r.json()) == {"error_code", "message"}
