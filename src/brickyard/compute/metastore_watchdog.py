"""Ends a home's Hive metastore service and Derby server once no workspace process uses them.

The service and its Derby network server run in sessions of their own so that a restarted
workspace adopts them (see metastore.py). Each workspace process that starts or adopts them
registers itself in <home>/metastore/owners.json (pid + the kernel's start time of that pid, so a
recycled pid is not taken for its owner). This watchdog, started with them, stops both when every
registered owner has been gone for a grace period (60 s by default) and none registered meanwhile:
so a SIGKILLed workspace that is never restarted leaves no JVM behind, and one restarted within
the grace period adopts the running processes as before.

Run as ``python -m brickyard.compute.metastore_watchdog <home>/metastore --grace SECONDS``. It
stops the processes the way Metastore.stop does (the Derby database shut down cleanly first),
under the home's lock, after checking the owners once more. It exits after that, on SIGTERM (a
workspace's Metastore.stop sends it), or when watchdog.json no longer names it.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

OWNERS_FILE = "owners.json"
WATCHDOG_FILE = "watchdog.json"
MODULE = "brickyard.compute.metastore_watchdog"

log = logging.getLogger(__name__)


def process_start(pid: int) -> str:
    """The start time of pid (clock ticks since boot, /proc/<pid>/stat field 22); '' when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    rest = stat.rsplit(") ", 1)[-1].split()
    # rest[0] is field 3 (state): a zombie has exited.
    return "" if rest[0] in ("Z", "X") else rest[19]


def owner_alive(entry: dict) -> bool:
    pid = int(entry.get("pid") or 0)
    return pid > 0 and process_start(pid) == str(entry.get("start") or "")


def read_owners(metastore_dir: Path) -> list[dict]:
    try:
        owners = json.loads((Path(metastore_dir) / OWNERS_FILE).read_text()).get("owners", [])
        return [o for o in owners if isinstance(o, dict)]
    except (OSError, ValueError, AttributeError):
        return []


def register_owner(metastore_dir: Path, pid: int | None = None) -> None:
    """Record pid (default: this process) as a user of the home's service; drop owners that are gone.

    The caller holds the home's lock."""
    pid = pid or os.getpid()
    me = {"pid": pid, "start": process_start(pid)}
    owners = [o for o in read_owners(metastore_dir) if owner_alive(o) and int(o["pid"]) != pid] + [me]
    _write_json(Path(metastore_dir) / OWNERS_FILE, {"owners": owners})


def unregister_owner(metastore_dir: Path, pid: int | None = None) -> list[dict]:
    """Drop pid (default: this process) and the owners that are gone; return the live owners left.

    The caller holds the home's lock."""
    pid = pid or os.getpid()
    owners = [o for o in read_owners(metastore_dir) if owner_alive(o) and int(o["pid"]) != pid]
    if owners or (Path(metastore_dir) / OWNERS_FILE).exists():
        _write_json(Path(metastore_dir) / OWNERS_FILE, {"owners": owners})
    return owners


def watchdog_marker(metastore_dir: Path) -> str:
    """What the watchdog's command line holds (runtime.pid_alive's marker)."""
    return f"{MODULE} {metastore_dir} "


def watchdog_command(metastore_dir: Path, grace: float) -> list[str]:
    return [sys.executable, "-m", MODULE, str(metastore_dir), "--grace", f"{grace:g}"]


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


@contextmanager
def home_lock(metastore_dir: Path):
    """The lock Metastore takes around start and stop (one flock on <home>/metastore/.lock)."""
    with open(Path(metastore_dir) / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _still_mine(metastore_dir: Path) -> bool:
    try:
        return int(json.loads((metastore_dir / WATCHDOG_FILE).read_text()).get("pid") or 0) == os.getpid()
    except (OSError, ValueError, AttributeError):
        return False


def watch(metastore_dir: Path, grace: float, poll: float | None = None) -> str:
    """Wait until every owner has been gone for `grace` seconds, then stop the service and Derby.

    Returns why it ended: 'stopped' or 'superseded'."""
    poll = poll or max(0.2, min(2.0, grace / 5))
    with home_lock(metastore_dir):
        pass  # the process that started this one records it in watchdog.json before it lets the lock go
    gone_since: float | None = None
    while True:
        if not _still_mine(metastore_dir):
            return "superseded"
        if any(owner_alive(o) for o in read_owners(metastore_dir)):
            gone_since = None
        elif gone_since is None:
            gone_since = time.monotonic()
            log.info("no workspace process uses the metastore; stopping it in %g s unless one adopts it", grace)
        elif time.monotonic() - gone_since >= grace:
            from brickyard.compute.metastore import Metastore  # the JVM side only when needed

            with home_lock(metastore_dir):
                if not _still_mine(metastore_dir):
                    return "superseded"
                if any(owner_alive(o) for o in read_owners(metastore_dir)):
                    gone_since = None  # adopted just now
                    continue
                log.info("the workspace processes that used the metastore are gone: stopping it")
                Metastore(metastore_dir.parent, metastore_dir.parent / "dbfs").stop_unlocked()
                return "stopped"
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.splitlines()[0])
    parser.add_argument("metastore_dir", type=Path)
    parser.add_argument("--grace", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s watchdog[%(process)d]: %(message)s")
    outcome = watch(args.metastore_dir, args.grace)
    log.info("watchdog ends: %s", outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
