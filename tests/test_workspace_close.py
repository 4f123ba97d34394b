"""A workspace process that closes while a cluster operation is under way (here: permanently deleting a
2-worker cluster, which stops its driver, worker JVMs and standalone master in the background) waits for
it, so no JVM of its home outlives it. (It used to return at once and exit: the operation's thread died
with the process and left the standalone master and workers running.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_demo import _processes_under

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent

SCRIPT = textwrap.dedent("""
    import shutil, sys
    from datetime import timedelta
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from conftest import ThreadedServer, make_settings
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    settings = make_settings(Path(sys.argv[1]))
    srv = ThreadedServer(settings)
    srv.start()
    w = WorkspaceClient(config=Config(host=f"http://127.0.0.1:{settings.port}", token=settings.bootstrap_token,
                                      auth_type="pat"))
    c = w.clusters.create_and_wait(cluster_name="closing", spark_version="17.3.x-scala2.13",
                                   node_type_id="local.small", num_workers=2, timeout=timedelta(minutes=6))
    print("RUNNING", c.cluster_id, flush=True)
    w.clusters.permanent_delete(c.cluster_id)  # answers at once; the processes stop in the background
    srv.stop()
    shutil.rmtree(settings.home / "clusters")  # as a temp home goes once its workspace is closed (bench/)
    print("CLOSED", flush=True)
""")


def test_closing_waits_for_a_cluster_being_removed(tmp_path):
    home = tmp_path / "home"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(home), str(TESTS)], capture_output=True, text=True,
                          timeout=600, cwd=TESTS.parent)
    assert proc.returncode == 0 and "CLOSED" in proc.stdout, proc.stdout + proc.stderr[-4000:]
    clusters = home / "clusters"  # the JVMs' folders
    deadline = time.monotonic() + 5  # the process has exited: whatever is left now stays
    while (left := _processes_under(clusters)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for line in left:  # a failure leaves nothing running behind it
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, "\n".join(left)
