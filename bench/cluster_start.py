"""Cluster start times on this machine, through databricks-sdk against a fresh workspace.

Prints, in one run: cold create -> RUNNING, create from an instance pool -> RUNNING, and
context create -> first `spark.range(1000).count()` result on a running cluster (which takes
the cluster's spare kernel), each with its ratio to the cold start, and whether the targets are
met (cold <= 10 s, pool <= 1 s, context to first result <= 1.5 s; Databricks: 145 s median cold,
< 40 s from a pool). The same for a 2-worker cluster (standalone master + 2 worker JVMs): cold,
and from a pool holding a ready set (its first multi-node cluster, untimed, made it keep one),
with the ratio to the 2-worker cold start. For reference, it also prints a context that starts
its own kernel (created right after the spare was taken).

    python bench/cluster_start.py [--rounds 1]
"""
from __future__ import annotations

import argparse
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

TARGETS = {"cold": 10.0, "pool": 1.0, "context": 1.5, "multi_cold": None, "multi_pool": 1.0}
SINGLE_NODE = {"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"}
TOKEN = "dapi" + "c4" * 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(home: Path):  # noqa: ANN201
    """The workspace in this process (uvicorn in a thread), as the tests run it."""
    import uvicorn

    from brickyard.app import create_app
    from brickyard.bootstrap import bootstrap
    from brickyard.context import open_workspace
    from brickyard.settings import Settings

    settings = Settings(home=home, host="127.0.0.1", port=free_port(), bootstrap_token=TOKEN)
    ws = open_workspace(settings)
    bootstrap(ws)
    server = uvicorn.Server(uvicorn.Config(create_app(workspace=ws), host="127.0.0.1", port=settings.port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return settings, ws, server, thread


def until_running(w, cluster_id: str, started: float, timeout: float = 300) -> float:  # noqa: ANN001
    from databricks.sdk.service import compute

    while time.time() - started < timeout:
        state = w.clusters.get(cluster_id).state
        if state == compute.State.RUNNING:
            return time.time() - started
        if state in (compute.State.ERROR, compute.State.TERMINATED):
            raise SystemExit(f"cluster {cluster_id} ended {state}: {w.clusters.get(cluster_id).state_message}")
        time.sleep(0.02)
    raise SystemExit(f"cluster {cluster_id} not RUNNING within {timeout} s")


def until_idle(w, pool: str, timeout: float = 300, count: int = 1) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while w.instance_pools.get(pool).stats.idle_count < count:
        if time.time() > deadline:
            raise SystemExit("the pool never had an idle instance")
        time.sleep(0.2)


def until_spare(ws, cluster_id: str, timeout: float = 300) -> None:  # noqa: ANN001
    """A running cluster keeps a pre-started kernel for the next context: wait until it has one."""
    deadline = time.time() + timeout
    while ws.services["contexts"].spare_pid(cluster_id) is None:
        if time.time() > deadline:
            raise SystemExit(f"cluster {cluster_id} never had a spare kernel")
        time.sleep(0.1)


def first_result(w, ws, cluster_id: str) -> float:  # noqa: ANN001
    """Context create -> the result of its first command, polled every 20 ms (the SDK waiters sleep 1 s+)."""
    from databricks.sdk.service import compute

    spare = ws.services["contexts"].spares.get(cluster_id)
    started = time.time()
    ctx = w.command_execution.create(cluster_id=cluster_id, language=compute.Language.PYTHON).context_id
    while (st := w.command_execution.context_status(cluster_id, ctx).status) != compute.ContextStatus.RUNNING:
        if st == compute.ContextStatus.ERROR:
            raise SystemExit(f"context failed: {w.command_execution.context_status(cluster_id, ctx)}")
        time.sleep(0.02)
    ready = time.time() - started
    cmd = w.command_execution.execute(cluster_id=cluster_id, context_id=ctx, language=compute.Language.PYTHON,
                                      command="spark.range(1000).count()").command_id
    while (r := w.command_execution.command_status(cluster_id, ctx, cmd)).status != compute.CommandStatus.FINISHED:
        time.sleep(0.02)
    elapsed = time.time() - started
    used = "the spare kernel" if spare is not None and spare.ctx_id == ctx else "a new kernel"
    print(f"  (context on {used}: ready {ready:.2f} s, first command {elapsed - ready:.2f} s)")
    assert r.results.data == "1000", r.results
    w.command_execution.destroy(cluster_id, ctx)
    return elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    args, _ = parser.parse_known_args(argv)
    logging.getLogger("databricks.sdk").setLevel(logging.ERROR)
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config
    from databricks.sdk.service import compute

    with tempfile.TemporaryDirectory(prefix="brickyard-bench-") as tmp:
        settings, ws, server, thread = serve(Path(tmp) / "home")
        w = WorkspaceClient(config=Config(host=f"http://127.0.0.1:{settings.port}", token=TOKEN, auth_type="pat",
                                          retry_timeout_seconds=30))
        times: dict[str, list[float]] = {"cold": [], "pool": [], "context": [], "multi_cold": [], "multi_pool": [],
                                         "no_spare": []}
        try:
            # The shared metastore starts with the first cluster of a workspace: not part of a cluster start.
            ws.services["clusters"].launcher.metastore.start()
            pool = w.instance_pools.create(instance_pool_name="bench", node_type_id="local.medium",
                                           min_idle_instances=1, max_capacity=1 + args.rounds).instance_pool_id
            for i in range(args.rounds):
                # Nothing else starts meanwhile: the pool is full before the cold start is timed.
                until_idle(w, pool)
                started = time.time()
                cold = w.clusters.create(cluster_name=f"cold-{i}", spark_version="17.3.x-scala2.13",
                                         node_type_id="local.medium", num_workers=0, spark_conf=SINGLE_NODE).cluster_id
                times["cold"].append(until_running(w, cold, started))
                time.sleep(3)  # let the driver's own warm-up job finish, as on a cluster that has been up a while
                until_spare(ws, cold)
                times["context"].append(first_result(w, ws, cold))
                times["no_spare"].append(first_result(w, ws, cold))  # the spare's replacement starts later
                started = time.time()
                warm = w.clusters.create(cluster_name=f"pool-{i}", spark_version="17.3.x-scala2.13",
                                         instance_pool_id=pool, num_workers=0, spark_conf=SINGLE_NODE).cluster_id
                times["pool"].append(until_running(w, warm, started))
                w.clusters.permanent_delete(cold)
                w.clusters.permanent_delete(warm)
            # 2-worker clusters: cold, and from a pool whose ready set (driver + 2 worker JVMs) it adopts.
            multi = {"spark_version": "17.3.x-scala2.13", "num_workers": 2}
            mpool = w.instance_pools.create(instance_pool_name="bench-multi", node_type_id="local.small",
                                            max_capacity=6).instance_pool_id
            ask = w.clusters.create(cluster_name="multi-ask", instance_pool_id=mpool, **multi).cluster_id
            until_running(w, ask, time.time())
            w.clusters.permanent_delete(ask)
            for i in range(args.rounds):
                until_idle(w, mpool, count=3)
                started = time.time()
                cold = w.clusters.create(cluster_name=f"multi-cold-{i}", node_type_id="local.small",
                                         **multi).cluster_id
                times["multi_cold"].append(until_running(w, cold, started))
                w.clusters.permanent_delete(cold)
                time.sleep(2)  # the cold cluster's JVMs stop
                started = time.time()
                warm = w.clusters.create(cluster_name=f"multi-pool-{i}", instance_pool_id=mpool, **multi).cluster_id
                times["multi_pool"].append(until_running(w, warm, started))
                healthy = w.api_client.do("POST", "/api/2.1/clusters/events", body={
                    "cluster_id": warm, "event_types": ["DRIVER_HEALTHY"]}).get("events") or []
                print(f"  (2-worker cluster from the pool: "
                      f"{healthy[0]['details']['message'] if healthy else 'NOT from the pool'})")
                w.clusters.permanent_delete(warm)
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            ws.close()
    cold = statistics.median(times["cold"])
    multi_cold = statistics.median(times["multi_cold"])
    print(f"cluster start on {socket.gethostname()} ({args.rounds} round(s), median):")
    labels = {"cold": "cold create -> RUNNING", "pool": "create from a pool -> RUNNING",
              "context": "context create -> first spark.range(1000).count()",
              "multi_cold": "2-worker cold create -> RUNNING", "multi_pool": "2-worker create from a pool -> RUNNING"}
    met_all = True
    for key, label in labels.items():
        value = statistics.median(times[key])
        base, name = (multi_cold, "2-worker cold") if key.startswith("multi") else (cold, "cold")
        line = f"  {label:<52} {value:6.2f} s  ratio to {name} {value / base:5.2f}"
        if TARGETS[key] is None:
            print(f"{line}  (no target)")
            continue
        met = value <= TARGETS[key]
        met_all &= met
        print(f"{line}  target <= {TARGETS[key]} s: {'met' if met else 'NOT met'}")
    value = statistics.median(times["no_spare"])
    print(f"  {'(reference) context on a new kernel -> first result':<52} {value:6.2f} s  ratio to cold "
          f"{value / cold:5.2f}")
    print("all targets met" if met_all else "some targets not met")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
