"""Who may manage a cluster: its creator and admins; pin/unpin: admins only (Databricks' rules without a cluster ACL).

Two users through databricks-sdk (and the legacy 2.0 path through requests). Bob's cluster names an init script
that does not exist, so it goes to ERROR without starting a JVM; the running shared cluster shows that the calls
of someone else are refused before they change anything.
"""
from __future__ import annotations

import time

import pytest
from databricks.sdk.errors import PermissionDenied
from databricks.sdk.service import compute

SPEC = dict(
    spark_version="17.3.x-scala2.13", node_type_id="local.small", num_workers=0,
    spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"},
    custom_tags={"ResourceClass": "SingleNode"},
    init_scripts=[compute.InitScriptInfo(workspace=compute.WorkspaceStorageInfo(destination="/Shared/no/such.sh"))],
)


def wait_state(w, cid: str, *states: compute.State, timeout: float = 120) -> compute.ClusterDetails:
    deadline = time.monotonic() + timeout
    while True:
        details = w.clusters.get(cid)
        if details.state in states:
            return details
        assert time.monotonic() < deadline, f"cluster {cid} stayed {details.state}: {details.state_message}"
        time.sleep(0.3)


def raw_get(server, cid: str) -> dict:
    r = server.api("GET", "/api/2.1/clusters/get", params={"cluster_id": cid})
    assert r.status_code == 200, r.text
    return r.json()


def pinned_ids(client, pinned: bool) -> set[str]:
    """The SDK's ListClustersFilterBy(is_pinned=...)."""
    return {c.cluster_id for c in client.clusters.list(filter_by=compute.ListClustersFilterBy(is_pinned=pinned))}


def management_calls(client, cid: str, name: str) -> dict:
    return {
        "edit": lambda: client.clusters.edit(cid, cluster_name=name + "-renamed", **SPEC),
        "start": lambda: client.clusters.start(cid),
        "restart": lambda: client.clusters.restart(cid),
        "resize": lambda: client.clusters.resize(cid, num_workers=1),
        "delete": lambda: client.clusters.delete(cid),
        "permanent_delete": lambda: client.clusters.permanent_delete(cid),
        "pin": lambda: client.clusters.pin(cid),
        "unpin": lambda: client.clusters.unpin(cid),
    }


@pytest.fixture(scope="module")
def users(server):
    stamp = time.monotonic_ns()
    _, bob = server.new_user(f"bob-clusters-{stamp}@example.com")
    _, eve = server.new_user(f"eve-clusters-{stamp}@example.com")
    return server.client(bob), server.client(eve), bob, eve


def test_creator_admin_and_others_on_a_users_cluster(server, w, users, unique):
    bob, eve, _, eve_token = users
    name = unique("bobs-cluster")
    cid = bob.clusters.create(cluster_name=name, **SPEC).cluster_id
    try:
        before = wait_state(w, cid, compute.State.ERROR)
        assert before.creator_user_name.startswith("bob-clusters-")
        # Someone else: every management call is refused, before any state check.
        for what, call in management_calls(eve, cid, name).items():
            with pytest.raises(PermissionDenied):
                call()
        r = server.api("POST", "/api/2.0/clusters/delete", token=eve_token, json={"cluster_id": cid})
        assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED", r.text
        assert "only its creator" in r.json()["message"]
        after = w.clusters.get(cid)
        assert (after.state, after.cluster_name) == (compute.State.ERROR, name)
        assert "pinned_by_user_name" not in raw_get(server, cid)
        assert cid in {c.cluster_id for c in eve.clusters.list()}  # reading stays open to every user
        assert not any((e.details.user or "").startswith("eve-") for e in w.clusters.events(cid))

        # The creator manages their cluster, except pinning (admins only).
        for what in ("pin", "unpin"):
            with pytest.raises(PermissionDenied, match="admins"):
                management_calls(bob, cid, name)[what]()
        bob.clusters.edit(cid, cluster_name=name + "-renamed", **SPEC)
        assert w.clusters.get(cid).cluster_name == name + "-renamed"
        bob.clusters.start(cid)
        wait_state(w, cid, compute.State.ERROR)  # started again, and failed on its init script again
        assert any(e.type == compute.EventType.STARTING and (e.details.user or "").startswith("bob-")
                   for e in w.clusters.events(cid))

        # An admin manages anyone's cluster, and pins it in their own name.
        by_state = compute.ListClustersFilterBy(cluster_states=[compute.State.ERROR, compute.State.TERMINATED])
        assert cid in {c.cluster_id for c in bob.clusters.list(filter_by=by_state)}
        by_state = compute.ListClustersFilterBy(cluster_states=[compute.State.RUNNING])
        assert cid not in {c.cluster_id for c in bob.clusters.list(filter_by=by_state)}
        assert cid not in pinned_ids(bob, True) and cid in pinned_ids(bob, False)
        w.clusters.pin(cid)
        assert raw_get(server, cid)["pinned_by_user_name"] == "admin"
        listed = server.api("GET", "/api/2.0/clusters/list").json()["clusters"]
        assert next(c for c in listed if c["cluster_id"] == cid)["pinned_by_user_name"] == "admin"
        assert cid in pinned_ids(bob, True) and cid not in pinned_ids(bob, False)
        w.clusters.unpin(cid)
        assert "pinned_by_user_name" not in raw_get(server, cid)
        assert cid not in pinned_ids(bob, True) and cid in pinned_ids(bob, False)
        w.clusters.edit(cid, cluster_name=name, **SPEC)
        assert w.clusters.get(cid).cluster_name == name
    finally:
        bob.clusters.permanent_delete(cid)
    assert cid not in {c.cluster_id for c in w.clusters.list()}


@pytest.mark.slow
def test_others_cannot_touch_a_running_cluster(server, w, users, cluster_id):
    """The shared RUNNING cluster (the admin's): restart, resize, terminate, edit by another user are refused."""
    _, eve, _, _ = users
    before = w.clusters.get(cluster_id)
    assert before.state == compute.State.RUNNING
    for what, call in management_calls(eve, cluster_id, before.cluster_name).items():
        with pytest.raises(PermissionDenied):
            call()
    after = w.clusters.get(cluster_id)
    assert after.state == compute.State.RUNNING
    assert after.spark_context_id == before.spark_context_id  # not restarted
    assert (after.cluster_name, after.num_workers) == (before.cluster_name, before.num_workers)
