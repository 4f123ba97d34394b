"""Offline, as the project promises: once set up, a workspace starts, a cluster runs Spark with Delta and the
ML runtime's packages, and tables are written and read, with no network at all. The whole workspace (server,
cluster JVMs, metastore, kernels) runs in a network namespace of its own with only loopback up; the JVM
artifacts come from the cache the install step filled."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent

SCRIPT = textwrap.dedent("""
    import fcntl, json, socket, struct, sys
    from datetime import timedelta
    from pathlib import Path

    # Only loopback, brought up by hand (ioctl SIOCGIFFLAGS / SIOCSIFFLAGS; no iproute2 needed).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))
    out = {"interfaces": sorted(name for _, name in socket.if_nameindex())}
    try:
        socket.create_connection(("repo.maven.apache.org", 443), timeout=5).close()
        out["network"] = True
    except OSError as exc:
        out["network"] = False

    sys.path.insert(0, sys.argv[2])
    from conftest import ThreadedServer, make_settings
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config
    from databricks.sdk.service import compute

    settings = make_settings(Path(sys.argv[1]))
    srv = ThreadedServer(settings)
    srv.start()
    try:
        w = WorkspaceClient(config=Config(host=f"http://127.0.0.1:{settings.port}", token=settings.bootstrap_token,
                                          auth_type="pat"))
        cluster = w.clusters.create_and_wait(
            cluster_name="offline", spark_version="17.3.x-cpu-ml-scala2.13", node_type_id="local.small",
            num_workers=0, spark_conf={"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"},
            timeout=timedelta(minutes=6))
        out["state"] = cluster.state.value
        ctx = w.command_execution.create_and_wait(cluster_id=cluster.cluster_id, language=compute.Language.PYTHON,
                                                  timeout=timedelta(minutes=4)).id
        code = ("import mlflow, xgboost, sklearn, hyperopt\\n"
                "spark.range(5).write.format('delta').saveAsTable('offline_t')\\n"
                "print(spark.table('offline_t').count(), spark.sql('DESCRIBE DETAIL offline_t').first()['format'])")
        res = w.command_execution.execute_and_wait(cluster_id=cluster.cluster_id, context_id=ctx,
                                                   language=compute.Language.PYTHON, command=code,
                                                   timeout=timedelta(minutes=4)).results
        out["result"] = [res.result_type.value, res.data, res.cause]
        w.clusters.permanent_delete(cluster.cluster_id)
    finally:
        srv.stop()
    print(json.dumps(out))
""")


def test_a_set_up_workspace_runs_spark_and_delta_with_no_network(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a network namespace needs root and unshare (util-linux)")
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", SCRIPT, str(tmp_path / "home"), str(TESTS)],
                          capture_output=True, text=True, timeout=900, cwd=TESTS.parent)
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["interfaces"] == ["lo"] and out["network"] is False
    assert out["state"] == "RUNNING"
    assert out["result"] == ["text", "5 delta", None], proc.stderr[-3000:]
