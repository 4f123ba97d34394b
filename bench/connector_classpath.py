"""What the cloud connectors on every cluster's class path cost at cluster start, on this machine.

A connector on every cluster's class path lets a mount made while the cluster runs work without a
restart. This starts Single Node clusters cold (no mounts), alternating three class paths: connectors
only for mounts that exist at start (none here), hadoop-azure always (what clusters get now), and
hadoop-azure + hadoop-aws with its 650 MB AWS SDK bundle always; it prints the medians, their ratio to
the first, and the driver's resident memory (launcher and JVM) after start.

    python bench/connector_classpath.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_start import SINGLE_NODE, TOKEN, serve, until_running  # noqa: E402


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (the driver's JVM is a child of its launcher)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args, _ = parser.parse_known_args(argv)
    logging.getLogger("databricks.sdk").setLevel(logging.ERROR)
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    from brickyard.compute import launcher as launcher_mod
    from brickyard.compute import spark_conf

    current = spark_conf.cluster_jvm_classpath
    print("connectors on a cluster's class path without mounts:",
          ", ".join(p.name for p in current([])) or "none (not cached)")
    variants = {"mount-only": lambda mounts: current(mounts, always=()),
                "Azure always (current)": current,
                "Azure + S3A always": lambda mounts: current(mounts, always=("azure", "s3a"))}
    times: dict[str, list[float]] = {k: [] for k in variants}
    memory: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory(prefix="brickyard-bench-") as tmp:
        settings, ws, server, thread = serve(Path(tmp) / "home")
        w = WorkspaceClient(config=Config(host=f"http://127.0.0.1:{settings.port}", token=TOKEN, auth_type="pat",
                                          retry_timeout_seconds=30))
        clusters = ws.services["clusters"]
        try:
            clusters.launcher.metastore.start()  # shared, started by a workspace's first cluster: not timed
            names = list(variants)
            for i in range(args.rounds):
                # A different variant goes first each round: the first start after a deletion may differ.
                for name in names[i % len(names):] + names[:i % len(names)]:
                    classpath = variants[name]
                    launcher_mod.cluster_jvm_classpath = classpath
                    started = time.time()
                    cid = w.clusters.create(cluster_name=f"cp-{i}", spark_version="17.3.x-scala2.13",
                                            node_type_id="local.medium", num_workers=0,
                                            spark_conf=SINGLE_NODE).cluster_id
                    times[name].append(until_running(w, cid, started))
                    time.sleep(3)  # the driver's warm-up job
                    memory[name].append(tree_rss_mb(clusters.procs[cid].driver.pid))
                    w.clusters.permanent_delete(cid)
                    time.sleep(2)
        finally:
            launcher_mod.cluster_jvm_classpath = current
            server.should_exit = True
            thread.join(timeout=15)
            ws.close()
    base = statistics.median(times["mount-only"])
    print(f"cold Single Node start -> RUNNING ({args.rounds} round(s), median):")
    for name in variants:
        value = statistics.median(times[name])
        print(f"  {name:<24} {value:6.2f} s  ratio to mount-only {value / base:5.2f}  "
              f"driver RSS {statistics.median(memory[name]):7.0f} MB  (all: "
              f"{', '.join(f'{t:.2f}' for t in times[name])})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
