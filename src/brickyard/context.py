"""The running workspace: settings, store, keys and services, built once per app."""
from __future__ import annotations

import base64
import fcntl
import logging
import os
import secrets as pysecrets
from dataclasses import dataclass, field

from sqlalchemy import select

from brickyard.errors import BrickyardError
from brickyard.secrets.crypto import DATA_KEY_NAMES, Keyring, decode_key, load_or_create_master_key
from brickyard.settings import Settings
from brickyard.store.db import FIRST_START_LOCK, Store, migrate
from brickyard.store.models import Meta

log = logging.getLogger(__name__)


@dataclass
class Workspace:
    settings: Settings
    store: Store
    keyring: Keyring
    workspace_id: str
    services: dict = field(default_factory=dict)
    home_lock: int | None = None  # the home's lock (HomeLock), held while the workspace is open

    def close(self) -> None:
        try:
            for svc in self.services.values():
                closer = getattr(svc, "close", None)
                if closer:
                    closer()
            self.store.dispose()
        finally:
            release_home(self.home_lock)
            self.home_lock = None


HOME_LOCK_FILE = "workspace.lock"


def lock_home(settings: Settings, doing: str = "run the workspace") -> int:
    """Take the home's lock for this process, or raise RESOURCE_CONFLICT naming the process that holds it.

    One process at a time opens a home: opening it marks its clusters' processes as gone (they died with
    the previous process), and a master-key rotation under a running workspace would leave new secrets
    sealed with a key nobody keeps. The lock is an flock, so a killed process releases it by dying."""
    path = settings.home / HOME_LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise BrickyardError(
            "RESOURCE_CONFLICT",
            f"The workspace home {settings.home} is in use by {holder}; cannot {doing} while it runs. Stop it "
            "first, or do this through the running workspace's API (e.g. SCIM Users for a new user).") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"Brickyard process {os.getpid()} ({' '.join(_argv())})\n".encode(), 0)
    return fd


def release_home(fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass
    os.close(fd)  # closing the only descriptor of the open file releases the flock


def _argv() -> list[str]:
    """The program and its sub-command words (never option values: `create-user --password P` has one)."""
    import re
    import sys

    words = [os.path.basename(sys.argv[0])] if sys.argv else []
    return words + [a for a in sys.argv[1:3] if re.fullmatch(r"[a-z][a-z-]*", a)]


def prepare_home(settings: Settings) -> None:
    """Create the home folder (0700) and its sub-folders."""
    settings.home.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.home, 0o700)
    for sub in (settings.dbfs_root, settings.tmp_dir):
        sub.mkdir(parents=True, exist_ok=True)


def open_workspace(settings: Settings) -> Workspace:
    """Open (and on first start create) the workspace: home, database, keys."""
    prepare_home(settings)
    lock = lock_home(settings)
    try:
        ws = _open(settings)
    except BaseException:
        release_home(lock)
        raise
    ws.home_lock = lock
    from brickyard.services import build_services

    try:
        ws.services = build_services(ws)
    except BaseException:
        ws.close()
        raise
    return ws


def _open(settings: Settings) -> Workspace:
    master = load_or_create_master_key(settings.master_key_file, settings.master_key)
    store = Store(settings.db_url)
    migrate(store.engine)
    with store.session(lock=FIRST_START_LOCK) as sess:  # workspaces starting together on one PostgreSQL
        meta = {m.key: m.value for m in sess.scalars(select(Meta))}
        if "workspace_id" not in meta:
            wid = str(pysecrets.randbelow(9 * 10**15) + 10**15)
            sess.add(Meta(key="workspace_id", value=wid))
            meta["workspace_id"] = wid
        master = _recover_rotation(settings, master, meta)
        data_keys = {}
        for name in DATA_KEY_NAMES:
            if name in meta:
                data_keys[name] = Keyring.unwrap(master, name, meta[name])
            else:
                data_keys[name] = os.urandom(32)
                sess.add(Meta(key=name, value=Keyring.wrap(master, name, data_keys[name])))
    return Workspace(settings, store, Keyring(master, data_keys), meta["workspace_id"])


def _recover_rotation(settings: Settings, master: bytes, meta: dict) -> bytes:
    """Finish a master-key rotation that stopped between the commit and the rename."""
    pending = settings.master_key_file.with_name("master.key.new")
    probe = next((n for n in DATA_KEY_NAMES if n in meta), None)
    if probe is None:
        pending.unlink(missing_ok=True)
        return master
    try:
        Keyring.unwrap(master, probe, meta[probe])
        pending.unlink(missing_ok=True)
        return master
    except BrickyardError:
        if not pending.exists():
            raise BrickyardError(
                "INTERNAL_ERROR",
                "The master key does not match this workspace's database "
                "(check BRICKYARD_MASTER_KEY or the home's master.key).",
            ) from None
    new_master = decode_key(pending.read_text())
    Keyring.unwrap(new_master, probe, meta[probe])
    if not settings.master_key:
        os.replace(pending, settings.master_key_file)
    log.warning("completed an interrupted master-key rotation")
    return new_master


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
