"""Clusters API through databricks-sdk, on real Spark driver processes."""
from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
from databricks.sdk.errors import InvalidParameterValue, NotFound, ResourceAlreadyExists, Unauthenticated
from databricks.sdk.service import compute

SINGLE_NODE = dict(
    spark_version="7.3.x-cpu-ml-scala2.12",
    node_type_id="Standard_DS3_v2",
    num_workers=0,
    autotermination_minutes=120,
    spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"},
    custom_tags={"ResourceClass": "SingleNode"},
    spark_env_vars={"LAB_ENV": "wine"},
)


def test_catalog_endpoints(w):
    key = w.clusters.select_spark_version(latest=True, ml=True, scala="2.13", long_term_support=True)
    assert "-ml-" in key
    assert w.clusters.select_node_type(local_disk=True)
    types = {n.node_type_id for n in w.clusters.list_node_types().node_types}
    assert {"Standard_DS3_v2", "local.small"} <= types


def test_bad_specs_name_the_field(server, w, unique):
    with pytest.raises(InvalidParameterValue, match="spark_version"):
        w.clusters.create(cluster_name=unique("c"), spark_version="nonsense", node_type_id="local.small")
    with pytest.raises(InvalidParameterValue, match="node_type_id"):
        w.clusters.create(cluster_name=unique("c"), spark_version="17.3.x-scala2.13", node_type_id="huge.box")
    with pytest.raises(InvalidParameterValue, match="autoscale"):
        w.clusters.create(cluster_name=unique("c"), spark_version="17.3.x-scala2.13", node_type_id="local.small",
                          autoscale=compute.AutoScale(min_workers=3, max_workers=1))
    with pytest.raises(InvalidParameterValue, match="num_workers"):
        w.clusters.create(cluster_name=unique("c"), spark_version="17.3.x-scala2.13", node_type_id="local.small",
                          num_workers=2, spark_conf={"spark.databricks.cluster.profile": "singleNode"})
    r = server.api("POST", "/api/2.0/clusters/create", json={"spark_version": "17.3.x-scala2.13"})
    assert r.status_code == 400 and "cluster_name" in r.json()["message"]
    r = server.api("GET", "/api/2.1/clusters/get", params={"cluster_id": "0000-000000-nothere0"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = server.api("GET", "/api/2.1/clusters/list", token="dapi" + "9" * 32)
    assert r.status_code == 401
    with pytest.raises(Unauthenticated):
        server.client(token="dapi" + "9" * 32).clusters.list_node_types()


@pytest.mark.slow
def test_single_node_lifecycle(server, w, unique):
    name = unique("lab-cluster")
    details = w.clusters.create_and_wait(cluster_name=name, **SINGLE_NODE, timeout=timedelta(minutes=5))
    cid = details.cluster_id
    try:
        assert details.state == compute.State.RUNNING
        assert details.creator_user_name == "admin"
        assert details.spark_context_id and details.cluster_cores and details.cluster_memory_mb
        assert details.custom_tags["ResourceClass"] == "SingleNode"
        assert details.driver is not None
        assert cid in {c.cluster_id for c in w.clusters.list()}
        # The legacy CLI's 2.0 path and the fields it needs.
        listed = server.api("GET", "/api/2.0/clusters/list").json()["clusters"]
        assert {"cluster_id", "cluster_name", "state"} <= set(next(c for c in listed if c["cluster_id"] == cid))
        # Names are unique.
        with pytest.raises(ResourceAlreadyExists):
            w.clusters.create(cluster_name=name, **SINGLE_NODE)
        # The driver is a real Spark driver with the cluster's environment.
        info = json.loads((server.settings.home / "clusters" / cid / "driver.json").read_text())
        environ = open(f"/proc/{info['pid']}/environ", "rb").read().split(b"\0")
        assert b"LAB_ENV=wine" in environ
        assert info["application_id"].startswith("local-")
        events = [e.type for e in w.clusters.events(cid)]
        assert compute.EventType.CREATING in events and compute.EventType.RUNNING in events
        raw = server.api("POST", "/api/2.1/clusters/events", json={"cluster_id": cid}).json()["events"]
        messages = [e["details"].get("message", "") for e in raw]
        assert any("served by 17.3.x-cpu-ml-scala2.13" in m for m in messages)
        assert any("this host gives" in m for m in messages)  # Standard_DS3_v2 capped to the host
        w.clusters.pin(cid)
        w.clusters.unpin(cid)
        w.clusters.restart_and_wait(cid, timeout=timedelta(minutes=5))
        info2 = json.loads((server.settings.home / "clusters" / cid / "driver.json").read_text())
        assert info2["pid"] != info["pid"]
        w.clusters.delete_and_wait(cid, timeout=timedelta(minutes=2))
        term = w.clusters.get(cid)
        assert term.state == compute.State.TERMINATED
        assert term.termination_reason.code == compute.TerminationReasonCode.USER_REQUEST
        assert term.terminated_time
        with pytest.raises(ProcessLookupError):
            os.kill(info2["pid"], 0)
    finally:
        w.clusters.permanent_delete(cid)
    # Databricks answers 400 INVALID_PARAMETER_VALUE "Cluster … does not exist"; the SDK maps it to NotFound.
    with pytest.raises(NotFound):
        w.clusters.get(cid)


@pytest.mark.slow
def test_two_workers_run_tasks_on_two_executors_and_share_the_catalog(server, w, unique, cluster_id):
    """A multi-node cluster (standalone master + 2 worker JVMs) sees the Delta table another cluster wrote."""
    T = timedelta(minutes=6)

    def run(cid, ctx, code):
        r = w.command_execution.execute_and_wait(cluster_id=cid, context_id=ctx, language=compute.Language.PYTHON,
                                                 command=code, timeout=T)
        assert r.results.result_type != compute.ResultType.ERROR, r.results.cause
        return r.results.data

    db = unique("shared_db")
    single_ctx = w.command_execution.create_and_wait(cluster_id=cluster_id, language=compute.Language.PYTHON,
                                                     timeout=T).id
    run(cluster_id, single_ctx, f"spark.sql('CREATE DATABASE IF NOT EXISTS {db}')\n"
                                f"spark.range(10).write.saveAsTable('{db}.numbers')")
    details = w.clusters.create_and_wait(cluster_name=unique("multi"), spark_version="17.3.x-scala2.13",
                                         node_type_id="local.small", num_workers=2, timeout=T)
    cid = details.cluster_id
    try:
        assert details.num_workers == 2 and len(details.executors) == 2
        ctx = w.command_execution.create_and_wait(cluster_id=cid, language=compute.Language.PYTHON, timeout=T).id
        assert run(cid, ctx, "sc.master").startswith("'spark://")
        hosts = run(cid, ctx, "import os\n"
                              "sorted(set(sc.parallelize(range(8), 8).map(lambda _: os.getcwd()).collect()))")
        assert hosts.count("worker-") == 2, hosts
        # One catalog: the Delta table written by the other cluster, appended to here, read back there.
        assert run(cid, ctx, f"spark.table('{db}.numbers').count()") == "10"
        run(cid, ctx, f"spark.range(10, 15).write.mode('append').saveAsTable('{db}.numbers')")
        assert run(cluster_id, single_ctx, f"spark.sql('REFRESH TABLE {db}.numbers')\n"
                                           f"spark.table('{db}.numbers').count()") == "15"
        fmt = run(cid, ctx, f"spark.sql('DESCRIBE DETAIL {db}.numbers').first().format")
        assert fmt == "'delta'"
        w.clusters.resize_and_wait(cid, num_workers=1, timeout=T)
        assert w.clusters.get(cid).num_workers == 1
    finally:
        w.command_execution.destroy(cluster_id, single_ctx)
        w.clusters.permanent_delete(cid)
