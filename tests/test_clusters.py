"""Clusters API through databricks-sdk, on real Spark driver processes."""
from __future__ import annotations

import base64
import json
import os
import time
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
        # Pinning shows who pinned it (the raw ClusterInfo) and in the SDK's is_pinned listing filter.
        pinned = compute.ListClustersFilterBy(is_pinned=True)
        assert cid not in {c.cluster_id for c in w.clusters.list(filter_by=pinned)}
        w.clusters.pin(cid)
        raw = server.api("GET", "/api/2.1/clusters/get", params={"cluster_id": cid}).json()
        assert raw["pinned_by_user_name"] == "admin"
        assert cid in {c.cluster_id for c in w.clusters.list(filter_by=pinned)}
        w.clusters.unpin(cid)
        raw = server.api("GET", "/api/2.1/clusters/get", params={"cluster_id": cid}).json()
        assert "pinned_by_user_name" not in raw
        assert cid not in {c.cluster_id for c in w.clusters.list(filter_by=pinned)}
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


def _wait(check, timeout=180, every=0.5, what="condition"):
    deadline = time.time() + timeout
    while not (value := check()):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return value


@pytest.mark.slow
def test_init_script_failures_put_the_cluster_in_error(server, w, unique):
    """A failing DBFS script (its output in an event) and a missing workspace script: ERROR, no driver."""
    path = f"/FileStore/init/{unique('fail')}.sh"
    w.dbfs.put(path, contents=base64.b64encode(b"#!/bin/bash\necho 'about to fail: boom'\nexit 3\n").decode(),
               overwrite=True)
    for where, text in ((compute.InitScriptInfo(dbfs=compute.DbfsStorageInfo(destination=f"dbfs:{path}")), "boom"),
                        (compute.InitScriptInfo(workspace=compute.WorkspaceStorageInfo(
                            destination="/Shared/no-such-script.sh")), "could not be read")):
        cid = w.clusters.create(cluster_name=unique("init-fail"), spark_version="17.3.x-scala2.13",
                                node_type_id="local.small", num_workers=0, init_scripts=[where]).cluster_id
        try:
            details = _wait(lambda: (d := w.clusters.get(cid)).state in (compute.State.ERROR, compute.State.RUNNING)
                            and d, what="ERROR")
            assert details.state == compute.State.ERROR, details.state_message
            assert details.termination_reason.code == compute.TerminationReasonCode.INIT_SCRIPT_FAILURE
            events = server.api("POST", "/api/2.1/clusters/events",
                                json={"cluster_id": cid, "event_types": ["INIT_SCRIPTS_FINISHED"]}).json()["events"]
            assert any(text in e["details"].get("message", "") for e in events), events
            assert not (server.settings.home / "clusters" / cid / "driver.json").exists()
        finally:
            w.clusters.permanent_delete(cid)


@pytest.mark.slow
def test_autoscale_up_and_down_then_auto_termination(server, w, unique):
    """Workers are added while tasks wait and removed after the cool-down; a running command holds off
    auto-termination, which comes (INACTIVITY) once the cluster has been idle for a minute."""
    details = w.clusters.create_and_wait(
        cluster_name=unique("autoscale"), spark_version="17.3.x-scala2.13", node_type_id="local.small",
        autoscale=compute.AutoScale(min_workers=1, max_workers=2), autotermination_minutes=1,
        spark_conf={"spark.databricks.aggressiveWindowDownS": "4"}, spark_env_vars={"AUTO_ENV": "cold"},
        timeout=timedelta(minutes=6))
    cid = details.cluster_id
    try:
        assert details.num_workers == 1
        ctx = w.command_execution.create_and_wait(cluster_id=cid, language=compute.Language.PYTHON,
                                                  timeout=timedelta(minutes=3)).id
        # spark_env_vars reach the notebook and the Python workers on the standalone executors.
        r = w.command_execution.execute_and_wait(
            cluster_id=cid, context_id=ctx, language=compute.Language.PYTHON, timeout=timedelta(minutes=3),
            command="import os\nprint(os.environ['AUTO_ENV'], "
                    "sc.parallelize([1], 1).map(lambda _: os.environ.get('AUTO_ENV')).collect())")
        assert r.results.data == "cold ['cold']"
        started = time.time()
        # 16 two-second tasks on one 1-core worker: they wait, so a second worker comes; then the command
        # keeps running without tasks, so the idle worker goes while the command holds off termination.
        waiter = w.command_execution.execute(
            cluster_id=cid, context_id=ctx, language=compute.Language.PYTHON,
            command="import time\nn = sc.parallelize(range(16), 16).map(lambda x: time.sleep(2) or x).count()\n"
                    "time.sleep(75 - (time.time() - %f))\nprint(n)" % started)
        _wait(lambda: w.clusters.get(cid).num_workers == 2, timeout=60, what="upscale to 2 workers")
        _wait(lambda: w.clusters.get(cid).num_workers == 1 and w.clusters.get(cid).state == compute.State.RUNNING,
              timeout=70, what="downscale to 1 worker")
        result = waiter.result(timeout=timedelta(minutes=3))
        assert result.results.data == "16"
        assert time.time() - started > 70
        assert w.clusters.get(cid).state == compute.State.RUNNING  # the running command held it off
        types = [e.type for e in w.clusters.events(cid)]
        assert compute.EventType.UPSIZE_COMPLETED in types and compute.EventType.AUTOSCALING_STATS_REPORT in types
        assert compute.EventType.RESIZING in types
        idle_from = time.time()
        term = _wait(lambda: (d := w.clusters.get(cid)).state == compute.State.TERMINATED and d, timeout=120,
                     every=2, what="auto-termination")
        assert term.termination_reason.code == compute.TerminationReasonCode.INACTIVITY
        assert time.time() - idle_from > 50
    finally:
        w.clusters.permanent_delete(cid)
