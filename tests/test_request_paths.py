"""Request paths as real clients send them: the seed lab's curl calls `https://host//api/2.0/clusters/list`."""
from __future__ import annotations

import requests


def raw(server, method: str, path: str, **kw) -> requests.Response:
    """A request whose path goes on the wire exactly as given (requests keeps a leading '//')."""
    prepared = requests.Request(method, server.url + path, headers=server.headers(), **kw).prepare()
    assert prepared.path_url.startswith(path.split("?")[0]), prepared.path_url
    with requests.Session() as session:
        return session.send(prepared, timeout=60)


def test_doubled_leading_slashes_reach_the_api(server, unique):
    single = server.api("GET", "/api/2.0/clusters/list")
    assert single.status_code == 200
    for path in ("//api/2.0/clusters/list", "///api/2.0/clusters/list", "//api/2.1/clusters/list"):
        r = raw(server, "GET", path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert {c["cluster_id"] for c in r.json().get("clusters", [])} == \
            {c["cluster_id"] for c in single.json().get("clusters", [])}
        assert r.headers.get("x-request-id")

    scope = unique("dblslash")
    r = raw(server, "POST", "//api/2.0/secrets/scopes/create", json={"scope": scope})
    assert r.status_code == 200, r.text
    r = raw(server, "GET", "//api/2.0/secrets/scopes/list")
    assert r.status_code == 200, r.text
    assert scope in {s["name"] for s in r.json()["scopes"]}
    # The handler sees the query string and answers its own errors, as on the single-slash path.
    r = raw(server, "GET", "//api/2.1/clusters/get?cluster_id=0000-000000-nothere0")
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.text
    # Unknown paths stay unknown; authentication still applies.
    r = raw(server, "GET", "//api/2.0/no/such/thing")
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    assert "'GET /api/2.0/no/such/thing'" in r.json()["message"]
    r = requests.get(server.url + "//api/2.0/secrets/scopes/list", headers={"Authorization": "Bearer dapi" + "9" * 32},
                     timeout=60)
    assert r.status_code == 401
    r = raw(server, "POST", "//api/2.0/secrets/scopes/delete", json={"scope": scope})
    assert r.status_code == 200, r.text
