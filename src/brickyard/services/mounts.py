"""DBFS mounts: the workspace's mount table, its sealed credentials, and how clusters and DBFS see it.

A mount is recorded once for the workspace (every cluster sees it). Its extra_configs
(Hadoop settings, usually credentials) are sealed with the keyring like secrets and never
answered in clear: lists give their keys only. S3A settings are scoped to the mount's bucket
(fs.s3a.X -> fs.s3a.bucket.<bucket>.X) so two mounts with different keys do not collide.

Where the table goes on every change:
- DBFS (REST API, dbutils.fs): DbfsStorage.set_mounts; a file: target is also linked into
  the DBFS root, which gives /dbfs/mnt/... in notebooks and Spark's fallback for free;
- clusters starting: the launcher's `mounts` hook (viewfs links + Hadoop settings);
- running clusters: pushed into the driver's Hadoop configuration over its py4j gateway,
  with the dbfs file system cache off, so new FileSystem instances (the driver's, and the
  executors' through each job's configuration) read the new table. A cluster started with
  no s3a mount has no S3A jars on its class path: it needs a restart for a new s3a mount;
- the Hive metastore: restarted with the object-store mounts (file: mounts reach it
  through the links in the DBFS root), in the background.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from pathlib import Path

from sqlalchemy import select

from brickyard.compute.spark_conf import VIEWFS_TABLE, MountLink
from brickyard.errors import BrickyardError, already_exists, denied, invalid
from brickyard.services.common import now_ms
from brickyard.services.users import Principal
from brickyard.storage.dbfs import MountTarget, normalize
from brickyard.storage.objects import S3Store, store_for
from brickyard.store.models import DbfsMount

log = logging.getLogger(__name__)

MOUNT_ROOT = "/mnt"
OBJECT_SCHEMES = ("s3a", "s3", "abfss", "abfs", "wasbs", "wasb")
# Settings a mount may not override: they define DBFS itself for every cluster.
RESERVED_PREFIXES = ("fs.dbfs.", "fs.viewfs.", "fs.defaultFS", "fs.file.", "fs.AbstractFileSystem.dbfs.")
MAX_CONFIGS = 64
# Pushed to running drivers: every new FileSystem reads the refreshed table; inner file systems
# come from Hadoop's global cache (with the inner cache on, each new view made a new S3A client
# and leaked its threads: 118 -> 644 threads for 200 look-ups in a trial).
REFRESH_CONF = {"fs.dbfs.impl.disable.cache": "true", "fs.viewfs.enable.inner.cache": "false"}


def not_mounted(point: str) -> BrickyardError:
    return BrickyardError("RESOURCE_DOES_NOT_EXIST", f"Directory not mounted: {point}")


def mount_aad(point: str) -> bytes:
    return f"mount\x00{point}".encode()


def check_mount_point(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid("Missing required field: mount_point")
    point = normalize(value)
    if not point.startswith(MOUNT_ROOT + "/"):
        raise invalid(f"Mount points must be under {MOUNT_ROOT}/ (e.g. {MOUNT_ROOT}/data); got {value}.")
    return point


def check_source(value: object) -> str:
    """The canonical source URI: file:/abs/folder, s3a://bucket[/prefix], abfss://..., wasbs://..."""
    if not isinstance(value, str) or not value.strip():
        raise invalid("Missing required field: source")
    value = value.strip()
    scheme, sep, rest = value.partition(":")
    scheme = scheme.lower()
    if scheme == "file" and sep:
        path = "/" + rest.lstrip("/")
        if "\x00" in path or any(p == ".." for p in path.split("/")):
            raise invalid(f"Invalid source {value!r}.")
        return "file:" + os.path.normpath(path)
    if scheme in OBJECT_SCHEMES and rest.startswith("//") and rest[2:].split("/", 1)[0]:
        if scheme == "s3":
            scheme = "s3a"  # Hadoop's S3 connector
        return f"{scheme}:{rest.rstrip('/')}"
    raise invalid(f"Unsupported mount source {value!r}: use file:/<folder>, s3a://<bucket>, "
                  "abfss://<container>@<account>.dfs.core.windows.net or wasbs://<container>@<account>.blob.core.windows.net.")


def check_configs(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("extra_configs must be an object of Hadoop settings.")
    if len(value) > MAX_CONFIGS:
        raise invalid(f"extra_configs may hold at most {MAX_CONFIGS} settings.")
    out = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key.startswith("fs.") or len(key) > 512:
            raise invalid(f"extra_configs keys must be Hadoop file system settings (fs.*); got {str(key)[:100]!r}.")
        if key.startswith(RESERVED_PREFIXES):
            raise invalid(f"extra_configs may not set {key}: it defines DBFS for every cluster.")
        if not isinstance(val, (str, int, float, bool)):
            raise invalid(f"The value of {key} must be a string.")  # never echo values: they are credentials
        out[key] = str(val).lower() if isinstance(val, bool) else str(val)
    return out


AZURE_SCHEMES = ("abfss", "abfs", "wasbs", "wasb")
# ABFS reads its fs.azure.account.* settings for one account as <key>.<account host>.
_AZURE_SCOPED = re.compile(r"\.[a-z0-9-]+\.(?:dfs|blob)\.core\.[a-z.]+$")
# Other ABFS settings read per account (AbfsConfiguration.get/getString: <key>.<host>, then <key>),
# scoped too so two accounts' mounts (say, two emulators) do not collide. Settings ABFS reads
# only globally (fs.azure.always.use.https, fs.azure.networking.library, ...) are left as given.
AZURE_ACCOUNT_KEYS = ("fs.azure.abfs.endpoint", "fs.azure.fns.account.service.type")


def azure_host(source: str) -> str:
    """The account host of abfss://<container>@<host>/... (or wasbs://)."""
    authority = source.split("://", 1)[1].split("/", 1)[0]
    return authority.rsplit("@", 1)[-1].lower()


def is_wasb(source: str) -> bool:
    return source.startswith(("wasbs:", "wasb:"))


def abfs_host(source: str) -> str:
    """The account host ABFS is given for a mount: a wasb(s):// Blob host becomes the account's DFS
    host (<acct>.blob.core.windows.net -> <acct>.dfs.core.windows.net). ABFS takes the account name
    from a DFS host only (UriUtils.extractAccountNameFromHostName), which it needs with a custom
    endpoint (http://<ip:port>/<account>/<container>: an emulator, Azure Stack); ABFS still talks to
    the Blob endpoint, as fs.azure.fns.account.service.type=BLOB is set for the account."""
    host = azure_host(source)
    account, _, suffix = host.partition(".")
    if is_wasb(source) and suffix.startswith("blob."):
        return f"{account}.dfs.{suffix[len('blob.'):]}"
    return host


def hadoop_conf(source: str, configs: dict[str, str]) -> dict[str, str]:
    """The Hadoop settings a mount adds to a cluster.

    S3A settings are scoped to the mount's bucket; ABFS account settings (fs.azure.account.*:
    auth type, OAuth client id/secret/endpoint, account key; and fs.azure.abfs.endpoint) to the
    mount's account host, as Databricks' mount examples give them unscoped. Either way two mounts
    with different credentials do not collide. A wasb(s) mount's settings scoped to its Blob host
    (Databricks' fs.azure.account.key.<acct>.blob.core.windows.net) move to the DFS host ABFS is
    given, and the account is served over the Blob endpoint (fs.azure.fns.account.service.type).
    """
    if source.split(":", 1)[0] in AZURE_SCHEMES:
        given, host = azure_host(source), abfs_host(source)
        out = {}
        for key, val in configs.items():
            if given != host and key.endswith("." + given):
                key = key[:-len(given)] + host
            elif (key.startswith("fs.azure.account.") or key in AZURE_ACCOUNT_KEYS) \
                    and not key.endswith("." + host) and not _AZURE_SCOPED.search(key):
                key = f"{key}.{host}"
            out[key] = val
        service = f"fs.azure.fns.account.service.type.{host}"
        if given != host and service not in out:
            out[service] = "BLOB"  # what ABFS picks itself for a Blob host (abfss://c@a.blob...)
        return out
    if not source.startswith("s3a://"):
        return dict(configs)
    bucket = source[len("s3a://"):].split("/", 1)[0]
    out = {}
    for key, val in configs.items():
        if key.startswith("fs.s3a.") and not key.startswith("fs.s3a.bucket."):
            key = f"fs.s3a.bucket.{bucket}.{key[len('fs.s3a.'):]}"
        out[key] = val
    return out


def target_uri(source: str) -> str:
    """Where a cluster's mount link points. wasb(s):// goes to ABFS (Hadoop 3.5, Spark 4.2, removed the
    WASB driver: "WASB Driver using wasb(s) schema is no longer supported. Instead use ABFS Driver for
    FNS account by changing the scheme to abfs(s)"), given the account's DFS host (abfs_host)."""
    if source.startswith("file:"):
        return "file://" + source[len("file:"):]
    if is_wasb(source):
        scheme, rest = source.split("://", 1)
        authority, slash, path = rest.partition("/")
        container = authority.rsplit("@", 1)[0] + "@" if "@" in authority else ""
        return f"abfs{scheme[len('wasb'):]}://{container}{abfs_host(source)}{slash}{path}"
    return source


def azure_endpoint(source: str, configs: dict[str, str]) -> tuple[str, int]:
    """The (host, port) a cluster's ABFS client connects to for this mount."""
    custom = configs.get("fs.azure.abfs.endpoint")  # a custom endpoint (an emulator, Azure Stack)
    tls = source.startswith(("abfss:", "wasbs:")) or configs.get("fs.azure.always.use.https", "true") != "false"
    host, port = (custom or azure_host(source)), 443 if tls else 80
    if ":" in host:
        host, _, number = host.rpartition(":")
        port = int(number) if number.isdigit() else port
    return host, port


def check_reachable(source: str, configs: dict[str, str], timeout: float = 10.0) -> None:
    """Refuse a mount whose storage endpoint does not answer. Only reachability is checked at mount time:
    the credentials are checked when Spark or the DBFS API (storage.objects.AzureBlobStore) first use the mount."""
    host, port = azure_endpoint(source, configs)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise BrickyardError("IO_ERROR", f"Cannot mount {source}: the storage account endpoint {host}:{port} "
                             f"cannot be reached ({reason}). Check the account name and the network; Brickyard "
                             "checks reachability at mount time, credentials when Spark first uses the mount."
                             ) from None


class MountService:
    def __init__(self, ws, dbfs_storage, clusters=None):  # noqa: ANN001
        self.ws = ws
        self.storage = dbfs_storage
        self.clusters = clusters
        self._lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._table: list[tuple[DbfsMount, dict[str, str]]] = []
        self._known_keys: set[str] = set()  # every Hadoop key a table ever set, to unset the gone ones
        self._threads: list[threading.Thread] = []
        self.reload(initial=True)

    # -- the table ------------------------------------------------------------------------
    def _decrypt(self, row: DbfsMount) -> dict[str, str]:
        if not row.extra_configs:
            return {}
        return json.loads(self.ws.keyring.decrypt(row.extra_configs, mount_aad(row.mount_point)))

    def reload(self, initial: bool = False) -> None:
        """Read the table from the store and apply it to DBFS, running clusters and the metastore."""
        with self._lock:
            with self.ws.store.session() as sess:
                rows = list(sess.scalars(select(DbfsMount).order_by(DbfsMount.mount_point)))
                for r in rows:
                    sess.expunge(r)
            old_objects = self._object_links()
            self._table = [(r, self._decrypt(r)) for r in rows]
            self.storage.set_mounts([self._target(r, c) for r, c in self._table])
            links = self.links()
            for link in links:
                self._known_keys.add(f"{VIEWFS_TABLE}.link.{link.mount_point}")
                self._known_keys.update(link.hadoop_conf)
        objects = self._object_links()
        if initial:
            self._metastore_mounts(objects, restart=False)
        else:
            if objects != old_objects:
                self._metastore_mounts(objects, restart=True)
            self.push_all()

    def _target(self, row: DbfsMount, configs: dict[str, str]) -> MountTarget:
        if row.source.startswith("file:"):
            return MountTarget(row.mount_point, local=Path(row.source[len("file:"):]))
        return MountTarget(row.mount_point, store=store_for(row.source, hadoop_conf(row.source, configs)))

    def links(self) -> list[MountLink]:
        """The mount table as clusters see it (the launcher's `mounts` hook)."""
        return [MountLink(r.mount_point, target_uri(r.source), hadoop_conf(r.source, c)) for r, c in self._table]

    def _object_links(self) -> list[MountLink]:
        return [m for m in self.links() if not m.target.startswith("file:")]

    def rows(self) -> list[DbfsMount]:
        return [r for r, _ in self._table]

    def find(self, mount_point: object) -> DbfsMount:
        return self.get(check_mount_point(mount_point))

    def get(self, point: str) -> DbfsMount:
        for r, _ in self._table:
            if r.mount_point == point:
                return r
        raise not_mounted(point)

    # -- operations -----------------------------------------------------------------------
    def create(self, me: Principal, source: object, mount_point: object, extra_configs: object = None,
               encryption_type: object = None) -> DbfsMount:
        point, src, configs = check_mount_point(mount_point), check_source(source), check_configs(extra_configs)
        enc = self._encryption(encryption_type)
        with self._lock:
            for r, _ in self._table:
                if r.mount_point == point:
                    raise already_exists(f"Directory already mounted: {point}")
                if point.startswith(r.mount_point + "/") or r.mount_point.startswith(point + "/"):
                    raise already_exists(f"Cannot mount {point}: it would nest with the mount {r.mount_point}.")
        self._check_access(me, src, configs)
        self._check_free(point)
        now = now_ms()
        with self.ws.store.session() as sess:
            if sess.get(DbfsMount, point) is not None:
                raise already_exists(f"Directory already mounted: {point}")
            row = DbfsMount(mount_point=point, source=src, encryption_type=enc, config_keys=json.dumps(sorted(configs)),
                            extra_configs=self._seal(point, configs), creator_user_id=me.id,
                            creator_user_name=me.user_name, created_at=now, updated_at=now)
            sess.add(row)
        self.reload()
        return self.get(point)

    def update(self, me: Principal, source: object, mount_point: object, extra_configs: object = None,
               encryption_type: object = None) -> DbfsMount:
        point, src, configs = check_mount_point(mount_point), check_source(source), check_configs(extra_configs)
        enc = self._encryption(encryption_type)
        self._may_change(me, self.get(point))
        self._check_access(me, src, configs)
        with self.ws.store.session() as sess:
            row = sess.get(DbfsMount, point)
            if row is None:
                raise not_mounted(point)
            row.source, row.encryption_type = src, enc
            row.config_keys, row.extra_configs = json.dumps(sorted(configs)), self._seal(point, configs)
            row.updated_at = now_ms()
        self.reload()
        return self.get(point)

    def delete(self, me: Principal, mount_point: object) -> None:
        point = check_mount_point(mount_point)
        self._may_change(me, self.get(point))
        with self.ws.store.session() as sess:
            row = sess.get(DbfsMount, point)
            if row is None:
                raise not_mounted(point)
            sess.delete(row)
        self.reload()

    def refresh(self, me: Principal, cluster_id: object = None) -> dict:  # noqa: ARG002 - any user may refresh
        """Push the table to one running cluster (or all); says which need a restart for it."""
        self.reload_if_changed()
        if cluster_id is not None and not isinstance(cluster_id, str):
            raise invalid("cluster_id must be a string.")
        if cluster_id:
            procs = self._running().get(cluster_id)
            if procs is None:
                raise BrickyardError("INVALID_STATE", f"Cluster {cluster_id} is not running.")
            targets = {cluster_id: procs}
        else:
            targets = self._running()
        return self._push(targets)

    def reload_if_changed(self) -> None:
        """Pick up changes another workspace process made to the store (same home, e.g. an admin command)."""
        with self.ws.store.session() as sess:
            stamp = [(r.mount_point, r.updated_at) for r in sess.scalars(select(DbfsMount).order_by(DbfsMount.mount_point))]
        if stamp != [(r.mount_point, r.updated_at) for r, _ in self._table]:
            self.reload()

    # -- rules ------------------------------------------------------------------------------
    @staticmethod
    def _encryption(value: object) -> str:
        if value in (None, ""):
            return ""
        if not isinstance(value, str) or len(value) > 64:
            raise invalid("encryption_type must be a short string (e.g. sse-s3).")
        return value

    @staticmethod
    def _may_change(me: Principal, row: DbfsMount) -> None:
        if not me.is_admin and row.creator_user_id != me.id:
            raise denied(f"User {me.user_name} may not change the mount {row.mount_point}: only its creator "
                         f"({row.creator_user_name}) and workspace admins may.")

    def _check_access(self, me: Principal, src: str, configs: dict[str, str]) -> None:
        if src.startswith("file:"):
            # A local folder is read and written by the workspace's own processes: admins only.
            if not me.is_admin:
                raise denied(f"User {me.user_name} may not mount a local folder: only workspace admins may.")
            folder = Path(src[len("file:"):])
            if not folder.is_dir():
                raise invalid(f"Cannot mount {src}: no such directory.")
            real = Path(os.path.realpath(folder))
            home = Path(os.path.realpath(self.ws.settings.home))
            if real == home or home in real.parents or real in home.parents:
                raise invalid(f"Cannot mount {src}: it holds or is inside the workspace's own folder.")
            return
        if src.split(":", 1)[0] in AZURE_SCHEMES:
            check_reachable(src, configs)
            return
        store = store_for(src, hadoop_conf(src, configs))
        if isinstance(store, S3Store):
            store.check()  # as Databricks does: a mount that cannot reach its bucket is refused

    def _check_free(self, point: str) -> None:
        local = self.storage.root.joinpath(*point.split("/")[1:])
        if local.is_symlink():
            return  # a link left by a mount whose row is gone: replaced
        if local.is_file() or (local.is_dir() and any(os.scandir(local))):
            raise already_exists(f"Cannot mount on {point}: DBFS already holds files there; move them first.")

    def _seal(self, point: str, configs: dict[str, str]) -> bytes | None:
        if not configs:
            return None
        return self.ws.keyring.encrypt(json.dumps(configs, sort_keys=True).encode(), mount_aad(point))

    # -- clusters and the metastore ------------------------------------------------------------
    def _running(self) -> dict:
        if self.clusters is None:
            return {}
        return {cid: p for cid, p in list(self.clusters.procs.items()) if p.alive()}

    def push_all(self) -> dict:
        return self._push(self._running())

    def _push(self, targets: dict) -> dict:
        links = self.links()
        wanted = dict(REFRESH_CONF)
        for link in links:
            wanted[f"{VIEWFS_TABLE}.link.{link.mount_point}"] = link.target
            wanted.update(link.hadoop_conf)
        gone = sorted(self._known_keys - set(wanted))
        needed = {kind for link in links if (kind := connector_of(link.target))}
        refreshed, restart, failed, missing = [], [], [], {}
        for cid, procs in targets.items():
            try:
                lacking = push_conf(procs.info, wanted, gone, needed)
            except Exception as exc:  # noqa: BLE001 - py4j raises several kinds
                log.warning("could not refresh the mounts of cluster %s: %s", cid, type(exc).__name__)
                failed.append(cid)
                continue
            refreshed.append(cid)
            if lacking:
                restart.append(cid)
                missing[cid] = sorted(lacking)
        return {"refreshed": refreshed, "needs_restart": restart, "failed": failed, "connectors_missing": missing}

    def _metastore_mounts(self, objects: list[MountLink], restart: bool) -> None:
        launcher = getattr(self.clusters, "launcher", None)
        if launcher is None:
            return
        metastore = launcher.metastore
        if not restart or not metastore.alive():
            metastore.mounts = list(objects)  # read when it next starts
            return

        def run() -> None:
            with self._meta_lock:
                try:
                    metastore.update_mounts(objects)
                except Exception as exc:  # noqa: BLE001 - logged; the next start retries
                    log.warning("the Hive metastore did not take the new mount table: %s", exc)

        t = threading.Thread(target=run, name="mounts-metastore", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def close(self) -> None:
        for t in self._threads:
            t.join(timeout=130)


# The Hadoop file system class each kind of mount needs in a cluster's JVM (wasbs:// is served by ABFS).
CONNECTOR_CLASSES = {"s3a": "org.apache.hadoop.fs.s3a.S3AFileSystem",
                     "azure": "org.apache.hadoop.fs.azurebfs.AzureBlobFileSystem"}


def connector_of(target: str) -> str | None:
    """The connector ("s3a", "azure") a mount's Hadoop URI needs on the class path; None for file:."""
    scheme = target.split(":", 1)[0]
    if scheme in ("s3a", "s3"):
        return "s3a"
    if scheme in AZURE_SCHEMES:
        return "azure"
    return None


def push_conf(info: dict, wanted: dict[str, str], gone: list[str], needed: set[str] = frozenset()) -> set[str]:
    """Set Hadoop settings in a running driver; returns the `needed` connectors its JVM cannot load.

    A JVM's class path is fixed at its start: a cluster started without a connector needs a restart.
    """
    from py4j.java_gateway import GatewayParameters, JavaGateway

    gw = JavaGateway(gateway_parameters=GatewayParameters(
        port=int(info["gateway_port"]), auth_token=info["gateway_secret"], auto_close=True))
    try:
        root = gw.jvm.org.apache.spark.sql.classic.SparkSession.getDefaultSession().get()
        conf = root.sparkContext().hadoopConfiguration()
        for key in gone:
            conf.unset(key)
        for key, value in wanted.items():
            conf.set(key, value)
        lacking = set()
        for kind in needed:
            try:
                conf.getClassByName(CONNECTOR_CLASSES[kind])
            except Exception:  # noqa: BLE001 - ClassNotFoundException through py4j
                lacking.add(kind)
        return lacking
    finally:
        gw.close()  # our connections only: shutdown() would stop the driver's gateway


def reencrypt(sess, old_ring, new_ring) -> int:  # noqa: ANN001
    """Master-key rotation: re-seal every mount's extra_configs."""
    count = 0
    for row in sess.scalars(select(DbfsMount).where(DbfsMount.extra_configs.is_not(None))):
        aad = mount_aad(row.mount_point)
        row.extra_configs = new_ring.encrypt(old_ring.decrypt(row.extra_configs, aad), aad)
        count += 1
    return count


def build(ws, services) -> dict:  # noqa: ANN001
    """Build the mount service and hand its table to the clusters' launcher."""
    clusters = services.get("clusters")
    svc = MountService(ws, services["dbfs"].storage, clusters)
    if clusters is not None:
        clusters.launcher.mounts = svc.links
    return {"mounts": svc}
