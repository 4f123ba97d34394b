"""The workspace's Hive metastore keeps to its host and its workspace: the Thrift service and its Derby
network server listen on 127.0.0.1 only, and the watchdog ends both once the workspace processes that
used them are gone (a SIGKILLed workspace never restarted), while a workspace restarted within the
grace period adopts them."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_spark_substrate import listen_addresses, processes_of

from brickyard.compute import metastore_watchdog as watchdog
from brickyard.compute import runtime
from brickyard.compute.metastore import DERBY_CLASS, MAIN_CLASS, Metastore

pytestmark = pytest.mark.slow

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def other_host_addresses() -> list[str]:
    """This host's IPv4 addresses that are not loopback (from `ip -4 -o addr`, else the default route's)."""
    found = []
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
        found = re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", out)
    except (OSError, subprocess.SubprocessError):
        pass
    if not found:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect(("192.0.2.1", 9))  # no packet is sent: this picks the outgoing address
                found = [s.getsockname()[0]]
            except OSError:
                pass
    try:
        found.append(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    return sorted({a for a in found if not a.startswith("127.") and a != "0.0.0.0"})


def connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hmsiso")
    (path / "dbfs").mkdir()
    return path


@pytest.fixture(scope="module")
def metastore(home):
    ms = Metastore(home, home / "dbfs")
    ms.start(timeout=180)
    yield ms
    ms.stop()
    assert not processes_of(home / "metastore") and not ms.watchdog_pid()


def test_thrift_and_derby_listen_on_loopback_only(home, metastore):
    port = json.loads((home / "metastore" / "metastore.json").read_text())["port"]  # the recorded port
    assert port == metastore.port
    cmdline = Path(f"/proc/{metastore.pid}/cmdline").read_bytes().split(b"\0")
    assert MAIN_CLASS.encode() in cmdline  # the launcher, not HiveMetaStore.main (which binds every interface)
    for name, p in (("Thrift", port), ("Derby", metastore.derby_port)):
        assert listen_addresses(p) and listen_addresses(p) <= LOOPBACK, (name, listen_addresses(p))
        assert connects("127.0.0.1", p), name
        others = other_host_addresses()
        print(f"\n{name} port {p}: listening on {sorted(listen_addresses(p))}; other addresses tried: {others}")
        for addr in others:
            assert not connects(addr, p), f"the {name} port {p} answers on {addr}"


def test_owners_are_told_apart_from_recycled_pids(tmp_path):
    assert watchdog.owner_alive({"pid": os.getpid(), "start": watchdog.process_start(os.getpid())})
    assert not watchdog.owner_alive({"pid": os.getpid(), "start": "1"})  # same pid, another process
    assert not watchdog.owner_alive({"pid": 0, "start": ""})
    watchdog.register_owner(tmp_path)
    watchdog.register_owner(tmp_path)
    assert [o["pid"] for o in watchdog.read_owners(tmp_path)] == [os.getpid()]  # once per process
    (tmp_path / watchdog.OWNERS_FILE).write_text(json.dumps({"owners": [
        {"pid": os.getpid(), "start": watchdog.process_start(os.getpid())}, {"pid": 999999999, "start": "5"}]}))
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        watchdog.register_owner(tmp_path, child.pid)
        assert sorted(o["pid"] for o in watchdog.read_owners(tmp_path)) == sorted([os.getpid(), child.pid])
    finally:
        child.stdin.close()
        child.wait(10)
    assert not any(o["pid"] == child.pid and watchdog.owner_alive(o) for o in watchdog.read_owners(tmp_path))


# A workspace process as far as the metastore is concerned: it starts (or adopts) the home's service,
# prints the pids, and waits until its stdin closes or it is killed.
OWNER = textwrap.dedent("""
    import json, sys
    from brickyard.compute.metastore import Metastore
    home = sys.argv[1]
    ms = Metastore(home, home + "/dbfs", orphan_grace=float(sys.argv[2]))
    ms.start(timeout=180)
    print(json.dumps({"pid": ms.pid, "derby_pid": ms.derby_pid, "port": ms.port, "watchdog": ms.watchdog_pid()}),
          flush=True)
    sys.stdin.read()
    if sys.argv[3:] == ["release"]:  # a workspace closing: Launcher.close
        print(json.dumps({"stopped": ms.release()}), flush=True)
""")
# A workspace that opens the home and starts no cluster: its Launcher only claims the running service.
CLAIMER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from brickyard.compute.launcher import Launcher
    from brickyard.settings import Settings
    launcher = Launcher(Settings(home=Path(sys.argv[1])))
    print(json.dumps({"claimed": True}), flush=True)
    sys.stdin.read()
""")


def start_owner(home: Path, grace: float, script: str = OWNER, *extra: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", script, str(home), str(grace), *extra], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=open(home / f"owner-{time.time_ns()}.log", "wb"), text=True)
    line = proc.stdout.readline()
    assert line, f"the owner process failed: {sorted(home.glob('owner-*.log'))[-1].read_text()[-3000:]}"
    return proc, json.loads(line)


def wait_gone(pids: list[int], limit: float) -> list[int]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        alive = [p for p in pids if runtime.pid_alive(p)]
        if not alive:
            return []
        time.sleep(0.5)
    return [p for p in pids if runtime.pid_alive(p)]


def test_a_killed_workspace_leaves_no_metastore_but_a_restart_adopts_it(tmp_path):
    grace = 20.0  # the second owner must adopt within it: generous on a busy host
    (tmp_path / "dbfs").mkdir()
    mdir = tmp_path / "metastore"
    first = second = third = None
    try:
        first, got = start_owner(tmp_path, grace)
        pids = [got["pid"], got["derby_pid"], got["watchdog"]]
        assert runtime.pid_alive(got["pid"], MAIN_CLASS) and runtime.pid_alive(got["derby_pid"], DERBY_CLASS)
        assert runtime.pid_alive(got["watchdog"], watchdog.watchdog_marker(mdir))
        assert sorted(processes_of(mdir)) == sorted(pids[:2])

        # SIGKILL, and a new workspace process on the same home at once: it adopts all three.
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second, again = start_owner(tmp_path, grace)
        assert (again["pid"], again["derby_pid"], again["port"], again["watchdog"]) == \
            (got["pid"], got["derby_pid"], got["port"], got["watchdog"])
        # Past the grace period the adopted processes still run: their new owner lives.
        time.sleep(grace + 4)
        assert all(runtime.pid_alive(p) for p in pids), [p for p in pids if not runtime.pid_alive(p)]
        assert runtime.port_open(got["port"])

        # That owner killed too; a workspace that opens the home but starts no cluster keeps them as well.
        second.send_signal(signal.SIGKILL)
        second.wait(10)
        third, _ = start_owner(tmp_path, grace, CLAIMER)
        time.sleep(grace + 4)
        assert all(runtime.pid_alive(p) for p in pids), [p for p in pids if not runtime.pid_alive(p)]

        # It is killed too, and nobody comes back: the watchdog stops the service and Derby, then itself.
        third.send_signal(signal.SIGKILL)
        third.wait(10)
        left = wait_gone(pids, grace + 120)
        assert not left, f"still running: {left}; watchdog log: {(mdir / 'watchdog.log').read_text()[-2000:]}"
        assert processes_of(mdir) == []
        assert not any((mdir / f).exists() for f in ("metastore.json", "derby.json", "watchdog.json", "owners.json"))
        assert "Database 'metastore_db' shutdown" in (mdir / "derby.log").read_text()  # shut down cleanly
        log = (mdir / "watchdog.log").read_text()
        assert "stopping it" in log and "watchdog ends: stopped" in log
    finally:
        for proc in (first, second, third):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        Metastore(tmp_path, tmp_path / "dbfs").stop()  # whatever a failure left behind


def test_closing_a_workspace_leaves_a_service_other_processes_own(tmp_path):
    """A workspace process that closes while another live process still owns the home's service (here a bare
    metastore owner: a second workspace on the home is refused, see test_home_lock.py) leaves it running;
    the last owner's close stops it."""
    (tmp_path / "dbfs").mkdir()
    mdir = tmp_path / "metastore"
    owner = None
    try:
        owner, got = start_owner(tmp_path, 600.0, OWNER, "release")  # no watchdog stop within the test
        pids = [got["pid"], got["derby_pid"], got["watchdog"]]
        brickyard = str(Path(sys.executable).with_name("brickyard"))
        cli = subprocess.run([brickyard, "admin", "create-user", "--home", str(tmp_path), "someone@example.com"],
                             capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "Created user someone@example.com" in cli.stdout
        assert all(runtime.pid_alive(p) for p in pids), [p for p in pids if not runtime.pid_alive(p)]
        assert runtime.port_open(got["port"]) and connects("127.0.0.1", got["port"])
        assert [o["pid"] for o in watchdog.read_owners(mdir)] == [owner.pid]  # the CLI left the list

        # The workspace process itself closes: it was the last owner, so all three stop at once.
        owner.stdin.close()
        assert json.loads(owner.stdout.readline()) == {"stopped": True}
        assert owner.wait(60) == 0
        left = wait_gone(pids, 60)
        assert not left, f"still running: {left}"
        assert processes_of(mdir) == []
    finally:
        if owner is not None and owner.poll() is None:
            owner.kill()
            owner.wait(10)
        Metastore(tmp_path, tmp_path / "dbfs").stop()  # whatever a failure left behind
