"""Instance pools (warm drivers), cluster libraries, single-user mode and a dead driver, through databricks-sdk."""
from __future__ import annotations

import base64
import json
import os
import signal
import time
from datetime import timedelta

import pytest
from databricks.sdk.errors import DatabricksError, InvalidParameterValue, PermissionDenied, ResourceAlreadyExists
from databricks.sdk.service import compute, workspace

T = timedelta(minutes=5)
MISSING_PACKAGE = "brickyard-no-such-package-4f1e2d"


def wait_for(check, timeout: float = 180, every: float = 0.25, what: str = "condition"):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def run(w, cluster_id, ctx, code):
    r = w.command_execution.execute_and_wait(cluster_id=cluster_id, context_id=ctx,
                                             language=compute.Language.PYTHON, command=code, timeout=T)
    assert r.results.result_type != compute.ResultType.ERROR, r.results.cause
    return r.results.data


def stats(w, pool_id):
    return w.instance_pools.get(pool_id).stats


def test_pool_api_and_errors(server, w, unique):
    """CRUD and bad input; a pool with no idle minimum starts no process."""
    name = unique("pool")
    pool_id = w.instance_pools.create(instance_pool_name=name, node_type_id="local.small", min_idle_instances=0,
                                      max_capacity=3, idle_instance_autotermination_minutes=15,
                                      preloaded_spark_versions=["17.3.x-scala2.13"],
                                      custom_tags={"team": "lab"}).instance_pool_id
    try:
        got = w.instance_pools.get(pool_id)
        assert got.instance_pool_name == name and got.state == compute.InstancePoolState.ACTIVE
        assert got.max_capacity == 3 and got.min_idle_instances == 0 and got.custom_tags == {"team": "lab"}
        assert got.stats.idle_count == 0 and got.stats.used_count == 0
        assert pool_id in {p.instance_pool_id for p in w.instance_pools.list()}
        w.instance_pools.edit(instance_pool_id=pool_id, instance_pool_name=name + "-2", node_type_id="local.small",
                              max_capacity=4)
        assert w.instance_pools.get(pool_id).max_capacity == 4
        with pytest.raises(InvalidParameterValue, match="node_type_id"):
            w.instance_pools.edit(instance_pool_id=pool_id, instance_pool_name=name, node_type_id="local.large")
        with pytest.raises(InvalidParameterValue, match="node_type_id"):
            w.instance_pools.create(instance_pool_name=unique("p"), node_type_id="huge.box")
        with pytest.raises(InvalidParameterValue, match="min_idle_instances"):
            w.instance_pools.create(instance_pool_name=unique("p"), node_type_id="local.small",
                                    min_idle_instances=3, max_capacity=2)
        with pytest.raises(InvalidParameterValue, match="preloaded_spark_versions"):
            w.instance_pools.create(instance_pool_name=unique("p"), node_type_id="local.small",
                                    preloaded_spark_versions=["nonsense"])
        with pytest.raises(ResourceAlreadyExists):
            w.instance_pools.create(instance_pool_name=name + "-2", node_type_id="local.small")
        r = server.api("GET", "/api/2.0/instance-pools/get", params={"instance_pool_id": "nope"})
        assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        assert server.api("GET", "/api/2.0/instance-pools/list", token="dapi" + "9" * 32).status_code == 401
        _, token = server.new_user(unique("pool-outsider"))
        other = server.client(token)
        with pytest.raises(PermissionDenied):
            other.instance_pools.delete(pool_id)
        # A cluster naming a node type other than its pool's is refused, naming the field.
        with pytest.raises(InvalidParameterValue, match="node_type_id"):
            w.clusters.create(cluster_name=unique("c"), spark_version="17.3.x-scala2.13", instance_pool_id=pool_id,
                              node_type_id="local.large", num_workers=0)
        with pytest.raises(InvalidParameterValue, match="(?i)instance pool"):
            w.clusters.create(cluster_name=unique("c"), spark_version="17.3.x-scala2.13",
                              instance_pool_id="0000-nothere", num_workers=0)
    finally:
        w.instance_pools.delete(pool_id)
    assert w.instance_pools.get(pool_id).state == compute.InstancePoolState.DELETED
    assert pool_id not in {p.instance_pool_id for p in w.instance_pools.list()}


def test_library_request_errors(server, w):
    r = server.api("POST", "/api/2.0/libraries/install", json={"cluster_id": "0000-000000-nothere0",
                                                               "libraries": [{"pypi": {"package": "x"}}]})
    assert r.status_code == 400 and "does not exist" in r.json()["message"]
    assert server.api("GET", "/api/2.0/libraries/all-cluster-statuses",
                      token="dapi" + "9" * 32).status_code == 401


SINGLE_NODE_CONF = {"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]",
                    # a SQL setting (applied to the warm driver) and a JVM-start one (reported)
                    "spark.sql.shuffle.partitions": "7", "spark.executor.memory": "1g"}


@pytest.fixture(scope="module")
def pool(w):
    pool_id = w.instance_pools.create(instance_pool_name=f"warm-{os.getpid()}", node_type_id="local.small",
                                      min_idle_instances=1, max_capacity=2,
                                      idle_instance_autotermination_minutes=10).instance_pool_id
    yield pool_id
    w.instance_pools.delete(pool_id)


@pytest.fixture(scope="module")
def outsider(server):
    return server.new_user(f"single-user-outsider-{os.getpid()}")


@pytest.fixture(scope="module")
def pooled(server, w, pool):
    """A Single Node, single-user cluster that adopted a warm driver, with a workspace init script."""
    marker = server.settings.home / f"init-marker-{os.getpid()}"
    script = f"#!/bin/bash\necho \"from init script on $DB_CLUSTER_ID\" > {marker}\necho done\n"
    w.workspace.mkdirs("/Shared/init")
    w.workspace.import_("/Shared/init/marker.sh", content=base64.b64encode(script.encode()).decode(),
                        format=workspace.ImportFormat.RAW, overwrite=True)
    wait_for(lambda: stats(w, pool).idle_count == 1, timeout=240, what="a warm driver in the pool")
    started = time.time()
    cid = w.clusters.create(cluster_name=f"pooled-{os.getpid()}", spark_version="17.3.x-cpu-ml-scala2.13",
                            instance_pool_id=pool, num_workers=0, spark_conf=SINGLE_NODE_CONF,
                            custom_tags={"ResourceClass": "SingleNode"}, spark_env_vars={"POOL_ENV": "warm"},
                            data_security_mode=compute.DataSecurityMode.SINGLE_USER, single_user_name="admin",
                            init_scripts=[compute.InitScriptInfo(
                                workspace=compute.WorkspaceStorageInfo(destination="/Shared/init/marker.sh"))],
                            ).cluster_id
    wait_for(lambda: w.clusters.get(cid).state == compute.State.RUNNING, timeout=120, every=0.05,
             what="the pooled cluster RUNNING")
    print(f"pool create -> RUNNING: {time.time() - started:.2f} s")
    yield cid, marker
    w.clusters.permanent_delete(cid)


@pytest.fixture(scope="module")
def pctx(w, pooled):
    ctx = w.command_execution.create_and_wait(cluster_id=pooled[0], language=compute.Language.PYTHON, timeout=T).id
    yield ctx
    try:
        w.command_execution.destroy(pooled[0], ctx)
    except DatabricksError:
        pass  # the cluster was terminated by a later test


@pytest.mark.slow
def test_cluster_adopts_warm_driver(server, w, pool, pooled, pctx):
    cid, marker = pooled
    details = w.clusters.get(cid)
    assert details.node_type_id == "local.small" and details.instance_pool_id == pool
    info = json.loads((server.settings.home / "clusters" / cid / "driver.json").read_text())
    assert info.get("pool_instance", "").startswith(pool)
    events = server.api("POST", "/api/2.1/clusters/events", json={"cluster_id": cid, "order": "ASC"}).json()["events"]
    healthy = next(e for e in events if e["type"] == "DRIVER_HEALTHY")
    assert healthy["details"]["not_applied_spark_conf"] == ["spark.executor.memory"]
    assert "spark.executor.memory" in healthy["details"]["message"]
    assert any(e["type"] == "INIT_SCRIPTS_FINISHED" and e["details"].get("init_scripts") for e in events)
    # Cluster conf applied at run time: SQL conf, env for the notebook and its Python workers, the init script.
    assert run(w, cid, pctx, "spark.conf.get('spark.sql.shuffle.partitions')") == "'7'"
    assert run(w, cid, pctx, "import os\nos.environ.get('POOL_ENV')") == "'warm'"
    assert run(w, cid, pctx, "import os\nsc.parallelize([1], 1).map(lambda _: os.environ.get('POOL_ENV'))"
                             ".collect()") == "['warm']"
    assert run(w, cid, pctx, f"open({str(marker)!r}).read().strip()") == f"'from init script on {cid}'"
    # The pool refills to its minimum: one used, one idle again.
    wait_for(lambda: (s := stats(w, pool)).used_count == 1 and s.idle_count == 1, timeout=240,
             what="the pool to refill")


@pytest.mark.slow
def test_single_user_cluster_refuses_others(server, w, pooled, outsider):
    cid, _ = pooled
    r = server.api("POST", "/api/1.2/contexts/create", token=outsider[1],
                   json={"clusterId": cid, "language": "python"})
    assert r.status_code == 403 and r.json()["error_code"] == "PERMISSION_DENIED"
    assert "single-user" in r.json()["message"]
    r = server.api("POST", "/api/2.0/clusters/create", json={
        "cluster_name": "no-user", "spark_version": "17.3.x-scala2.13", "node_type_id": "local.small",
        "num_workers": 0, "data_security_mode": "SINGLE_USER"})
    assert r.status_code == 400 and "single_user_name" in r.json()["message"]


@pytest.mark.slow
def test_pool_capacity_is_enforced(server, w, unique, pool, pooled):
    wait_for(lambda: stats(w, pool).idle_count == 1, timeout=240, what="an idle instance")
    second = w.clusters.create(cluster_name=unique("pooled-2"), spark_version="17.3.x-scala2.13",
                               instance_pool_id=pool, num_workers=0,
                               spark_conf={"spark.databricks.cluster.profile": "singleNode"}).cluster_id
    try:
        wait_for(lambda: w.clusters.get(second).state == compute.State.RUNNING, timeout=60, what="second RUNNING")
        s = stats(w, pool)
        assert s.used_count == 2 and s.idle_count == 0 and s.pending_idle_count == 0  # at max_capacity
        r = server.api("POST", "/api/2.1/clusters/create", json={
            "cluster_name": unique("pooled-3"), "spark_version": "17.3.x-scala2.13", "instance_pool_id": pool,
            "num_workers": 0})
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_STATE"
        assert "max_capacity" in r.json()["message"]
    finally:
        w.clusters.permanent_delete(second)


@pytest.mark.slow
def test_libraries_install_fail_uninstall_and_restart(server, w, pooled, pctx, outsider):
    cid, _ = pooled
    pyjokes = compute.Library(pypi=compute.PythonPyPiLibrary(package="pyjokes==0.8.3"))
    missing = compute.Library(pypi=compute.PythonPyPiLibrary(package=MISSING_PACKAGE))
    maven = compute.Library(maven=compute.MavenLibrary(coordinates="org.apache.commons:commons-text:1.12.0",
                                                       exclusions=["org.apache.commons:commons-lang3"]))
    with pytest.raises(PermissionDenied):
        server.client(outsider[1]).libraries.install(cid, [pyjokes])
    with pytest.raises(InvalidParameterValue, match="dbfs"):
        w.libraries.install(cid, [compute.Library(whl="/tmp/x.whl")])
    w.libraries.install(cid, [pyjokes, missing, maven])

    def settled():
        sts = {json.dumps(s.library.as_dict(), sort_keys=True): s for s in w.libraries.cluster_status(cid)}
        return sts if all(s.status in (compute.LibraryInstallStatus.INSTALLED, compute.LibraryInstallStatus.FAILED)
                          for s in sts.values()) and len(sts) == 3 else None

    sts = wait_for(settled, timeout=300, every=1, what="libraries to settle")
    by_kind = {next(iter(json.loads(k))): s for k, s in sts.items()}
    assert by_kind["maven"].status == compute.LibraryInstallStatus.INSTALLED
    assert "sc.addJar" in by_kind["maven"].messages[0]
    failed = [s for s in sts.values() if s.status == compute.LibraryInstallStatus.FAILED]
    assert len(failed) == 1 and failed[0].library.pypi.package == MISSING_PACKAGE
    assert "No matching distribution" in failed[0].messages[0] or "Could not find" in failed[0].messages[0]
    assert any(s.library.pypi and s.library.pypi.package == "pyjokes==0.8.3"
               and s.status == compute.LibraryInstallStatus.INSTALLED for s in sts.values())
    # The package works in the notebook and in Python UDF workers; the runtime's packages were not reinstalled.
    libdir = server.workspace.services["clusters"].launcher.library_dir(cid)
    assert run(w, cid, pctx, "import pyjokes\nprint(bool(pyjokes.get_joke()), pyjokes.__file__)") \
        == f"True {libdir}/pyjokes/__init__.py"
    assert run(w, cid, pctx, "sc.parallelize([1], 1).map(lambda _: __import__('pyjokes').__file__).collect()") \
        == f"['{libdir}/pyjokes/__init__.py']"
    assert sorted(p.name.split("-")[0] for p in libdir.iterdir() if p.name.endswith(".dist-info")) == ["pyjokes"]
    # The cluster kept working through the failure; all-cluster-statuses lists it.
    assert cid in {s.cluster_id for s in w.libraries.all_cluster_statuses()}
    # Uninstall takes effect on restart; the others are installed again.
    w.libraries.uninstall(cid, [pyjokes, missing])
    left = {json.dumps(s.library.as_dict(), sort_keys=True): s.status for s in w.libraries.cluster_status(cid)}
    assert compute.LibraryInstallStatus.UNINSTALL_ON_RESTART in left.values() and len(left) == 2
    w.clusters.restart_and_wait(cid, timeout=T)
    statuses = wait_for(lambda: (s := list(w.libraries.cluster_status(cid))) and all(
        x.status == compute.LibraryInstallStatus.INSTALLED for x in s) and s, timeout=240, what="reinstall")
    assert [s.library.maven.coordinates for s in statuses] == ["org.apache.commons:commons-text:1.12.0"]
    assert not statuses[0].messages  # on the driver's spark.jars now
    ctx = w.command_execution.create_and_wait(cluster_id=cid, language=compute.Language.PYTHON, timeout=T).id
    assert run(w, cid, ctx, "import importlib.util\nimportlib.util.find_spec('pyjokes') is None") == "True"
    assert "commons-text-1.12.0.jar" in run(w, cid, ctx, "sc.getConf().get('spark.jars')")
    assert run(w, cid, ctx, "sc._jvm.org.apache.commons.text.WordUtils.capitalize('ab cd')") == "'Ab Cd'"


@pytest.mark.slow
def test_dead_driver_terminates_cluster_and_libraries_queue(server, w, pooled):
    cid, _ = pooled
    pid = json.loads((server.settings.home / "clusters" / cid / "driver.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: w.clusters.get(cid).state == compute.State.TERMINATED, timeout=30, what="TERMINATED")
    details = w.clusters.get(cid)
    assert details.termination_reason.code == compute.TerminationReasonCode.DRIVER_UNREACHABLE
    assert "SIGKILL" in details.state_message and str(pid) in details.state_message
    # Installing on a terminated cluster queues the library until it starts.
    w.libraries.install(cid, [compute.Library(pypi=compute.PythonPyPiLibrary(package="art==6.5"))])
    time.sleep(1)
    st = {s.library.pypi.package: s.status for s in w.libraries.cluster_status(cid) if s.library.pypi}
    assert st == {"art==6.5": compute.LibraryInstallStatus.PENDING}
    with pytest.raises(InvalidParameterValue, match="does not exist"):
        next(w.libraries.cluster_status("0000-000000-nothere0"))


@pytest.mark.slow
def test_pool_survives_a_restart_and_refills(tmp_path):
    """The pool is in the store; its warm drivers die with the workspace and the next one starts new ones."""
    from conftest import ADMIN_TOKEN, ThreadedServer, make_settings

    settings = make_settings(tmp_path / "home")
    pids = []
    for round_ in range(2):
        srv = ThreadedServer(settings)
        srv.start()
        try:
            pools = srv.workspace.services["pools"]
            if round_ == 0:
                from brickyard.services.users import Principal

                pool_id = pools.create(Principal(id=1, user_name="admin", is_admin=True), {
                    "instance_pool_name": "survivor", "node_type_id": "local.small", "min_idle_instances": 1})
            import requests

            def idle():
                r = requests.get(f"http://127.0.0.1:{settings.port}/api/2.0/instance-pools/get",
                                 params={"instance_pool_id": pool_id},
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
                assert r.status_code == 200 and r.json()["state"] == "ACTIVE", r.text
                return r.json()["stats"]["idle_count"] == 1

            wait_for(idle, timeout=240, every=0.5, what="an idle warm driver")
            pids.append(pools.idle[pool_id][0][0].driver.pid)
        finally:
            srv.stop()
    assert pids[0] != pids[1]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow
def test_multi_node_cluster_adopts_warm_worker_jvms(server, w, unique):
    """After a multi-node cluster asked a pool, the pool keeps a set ready (standalone master, worker JVMs and a
    driver with executors on them); the next multi-node cluster adopts those very processes."""
    from brickyard.compute.runtime import pid_alive

    pools = server.workspace.services["clusters"].pools
    pool = w.instance_pools.create(instance_pool_name=unique("workers"), node_type_id="local.small",
                                   min_idle_instances=0, max_capacity=6,
                                   idle_instance_autotermination_minutes=10).instance_pool_id
    spec = {"spark_version": "17.3.x-scala2.13", "instance_pool_id": pool, "num_workers": 2,
            "spark_env_vars": {"SET_ENV": "warm"}}
    clusters, pids = [], []
    try:
        first = w.clusters.create_and_wait(cluster_name=unique("cold-multi"), timeout=T, **spec).cluster_id
        clusters.append(first)
        events = server.api("POST", "/api/2.1/clusters/events", json={"cluster_id": first}).json()["events"]
        assert any("no idle multi-node set" in e["details"].get("message", "") for e in events), events
        w.clusters.permanent_delete(clusters.pop())
        wait_for(lambda: stats(w, pool).idle_count == 3, timeout=300, what="an idle driver + 2 workers set")
        (ready, _), = pools.sets[pool]
        workers = sorted(d.pid for n, d in ready.standalone.daemons.items() if n != "master")
        pids = [ready.driver.pid, ready.standalone.master.pid, *workers]
        second = w.clusters.create_and_wait(cluster_name=unique("warm-multi"), timeout=T, **spec)
        clusters.append(second.cluster_id)
        assert second.num_workers == 2
        procs = server.workspace.services["clusters"].procs[second.cluster_id]
        assert procs.driver.pid == pids[0] and procs.standalone.master.pid == pids[1]
        assert sorted(d.pid for n, d in procs.standalone.daemons.items() if n != "master") == workers
        events = server.api("POST", "/api/2.1/clusters/events",
                            json={"cluster_id": second.cluster_id, "event_types": ["DRIVER_HEALTHY"]}).json()["events"]
        assert "2 worker JVM(s) came warm" in events[0]["details"]["message"]
        ctx = w.command_execution.create_and_wait(cluster_id=second.cluster_id, language=compute.Language.PYTHON,
                                                  timeout=T).id
        cwds = run(w, second.cluster_id, ctx, "import os\n"
                                              "sorted(set(sc.parallelize(range(8), 8).map(lambda _: os.getcwd())"
                                              ".collect()))")
        assert cwds.count(ready.cluster_dir.name) == 2 and cwds.count("worker-") == 2, cwds
        assert run(w, second.cluster_id, ctx, "sc.parallelize([1], 1).map(lambda _: os.environ.get('SET_ENV'))"
                                              ".collect()") == "['warm']"
        w.command_execution.destroy(second.cluster_id, ctx)
    finally:
        for cid in clusters:
            w.clusters.permanent_delete(cid)
        w.instance_pools.delete(pool)
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=120, what="the set's processes to stop")
    # The set the pool started after the adoption (or is still starting) goes with the pool: no process is left.
    wait_for(lambda: not processes_under(server.settings.home / "pool-instances" / pool), timeout=300,
             what="no process of the deleted pool's instances")


def processes_under(prefix) -> list[int]:
    """Pids whose command line names a path starting with prefix (a pool instance's folders)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if str(prefix).encode() in fh.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found
