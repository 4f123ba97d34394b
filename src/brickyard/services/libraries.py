"""Cluster libraries (Libraries API 2.0): a state machine per library, advanced by an installer thread.

PENDING -> (RESOLVING for Maven) -> INSTALLING -> INSTALLED | FAILED; uninstall marks
UNINSTALL_ON_RESTART. A cluster's library folder is emptied at every start and every library
installed again (so an uninstall takes effect on restart). Libraries of a terminated cluster
wait as PENDING until it starts. Jars (jar, maven) are on the driver's spark.jars from the next
start; installed on a running cluster they reach the executors at once (sc.addJar).
"""
from __future__ import annotations

import json
import time
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from brickyard.compute import driver_control, libraries
from brickyard.errors import BrickyardError, denied, invalid
from brickyard.services.common import now_ms
from brickyard.services.users import Principal
from brickyard.store.compute_models import ClusterLibrary
from brickyard.store.models import Cluster

log = logging.getLogger(__name__)
KINDS = ("pypi", "maven", "whl", "jar", "requirements", "egg", "cran")
PENDING, RESOLVING, INSTALLING = "PENDING", "RESOLVING", "INSTALLING"
INSTALLED, FAILED, UNINSTALL = "INSTALLED", "FAILED", "UNINSTALL_ON_RESTART"


def normalize(lib: object, where: str) -> dict:
    """A validated library object (exactly one kind)."""
    if not isinstance(lib, dict):
        raise invalid(f"{where} must be an object naming one of {', '.join(KINDS)}.")
    kinds = [k for k in lib if k in KINDS and lib[k] is not None]
    if len(kinds) != 1:
        raise invalid(f"{where} must name exactly one of {', '.join(KINDS)}.")
    kind = kinds[0]
    value = lib[kind]
    if kind == "pypi":
        if not isinstance(value, dict) or not isinstance(value.get("package"), str) \
                or not value["package"].strip() or value["package"].lstrip().startswith("-"):
            raise invalid(f"{where}.pypi.package is required (a pip requirement such as 'simplejson==3.19.2').")
        out = {"package": value["package"].strip()}
        if value.get("repo"):
            if not isinstance(value["repo"], str) or not value["repo"].startswith(("http://", "https://")):
                raise invalid(f"{where}.pypi.repo must be an http(s) index URL.")
            out["repo"] = value["repo"]
        return {"pypi": out}
    if kind == "maven":
        if not isinstance(value, dict) or not isinstance(value.get("coordinates"), str) \
                or not libraries.COORDINATES_RE.match(value["coordinates"]):
            raise invalid(f"{where}.maven.coordinates must be groupId:artifactId:version.")
        out = {"coordinates": value["coordinates"]}
        if value.get("repo"):
            if not isinstance(value["repo"], str) or not value["repo"].startswith(("http://", "https://")):
                raise invalid(f"{where}.maven.repo must be an http(s) Maven repository URL.")
            out["repo"] = value["repo"]
        excl = value.get("exclusions") or []
        if not isinstance(excl, list) or not all(isinstance(e, str) and e.count(":") == 1 for e in excl):
            raise invalid(f"{where}.maven.exclusions must be a list of groupId:artifactId.")
        if excl:
            out["exclusions"] = excl
        return {"maven": out}
    if kind == "cran":
        raise invalid(f"{where}: R (cran) libraries are not supported on Brickyard clusters.")
    if kind == "egg":
        raise invalid(f"{where}: egg libraries are not supported (Databricks dropped them too); build a wheel.")
    if not isinstance(value, str) or not value.lower().startswith("dbfs:/"):
        raise invalid(f"{where}.{kind} must be a dbfs:/ path.")
    if kind == "whl" and not value.endswith(".whl"):
        raise invalid(f"{where}.whl must name a .whl file.")
    if kind == "jar" and not value.endswith(".jar"):
        raise invalid(f"{where}.jar must name a .jar file.")
    return {kind: value}


def key_of(lib: dict) -> str:
    return json.dumps(lib, sort_keys=True)[:512]


class LibraryService:
    def __init__(self, ws, clusters):  # noqa: ANN001
        self.ws = ws
        self.store = ws.store
        self.clusters = clusters
        self.launcher = clusters.launcher
        self.cache = ws.settings.home / "libraries"
        self._jars: dict[str, list[str]] = {}  # library key -> resolved local jars
        self._on_driver: dict[str, set[str]] = {}  # cluster -> keys whose jars its driver started with
        self._exec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="library-install")
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        clusters.start_listeners.append(self.cluster_started)
        clusters.jar_provider = self.jars_for

    # ---- API -----------------------------------------------------------------------------
    def install(self, caller: Principal, body: dict) -> None:
        cluster_id, libs = self._request(caller, body)
        running = False
        with self.store.session() as sess:
            cluster = self._cluster(sess, cluster_id)
            existing = {r.key: r for r in self._rows(sess, cluster_id)}
            for lib in libs:
                row = existing.get(key_of(lib))
                if row is None:
                    row = ClusterLibrary(cluster_id=cluster_id, key=key_of(lib), library=json.dumps(lib),
                                         status=PENDING, messages="[]", created_at=now_ms())
                    sess.add(row)
                    existing[row.key] = row
                elif row.status == UNINSTALL:  # still installed: the uninstall is simply withdrawn
                    row.status, row.messages = INSTALLED, "[]"
                elif row.status == FAILED:
                    row.status, row.messages = PENDING, "[]"
            running = cluster.state == "RUNNING"
        if running:
            self._queue(cluster_id)

    def install_for_job(self, caller: Principal, cluster_id: str, libs: list[dict],
                        timeout: float = 900.0) -> str:
        """Install a job task's libraries on its cluster and wait for them; a failed one fails the task."""
        if not libs:
            return ""
        # A job's compute runs with the job's permissions: the cluster may belong to someone else.
        normalized = [normalize(lib, f"libraries[{i}]") for i, lib in enumerate(libs)]
        self.install(Principal(caller.id, caller.user_name, True), {"cluster_id": cluster_id,
                                                                      "libraries": normalized})
        keys = {key_of(lib) for lib in normalized}
        deadline = time.monotonic() + timeout
        while True:
            with self.store.session() as sess:
                rows = [r for r in self._rows(sess, cluster_id) if r.key in keys]
                pending = [r for r in rows if r.status in (PENDING, RESOLVING, INSTALLING)]
                failed = [(r.key, json.loads(r.messages)) for r in rows if r.status == FAILED]
            if failed:
                key, messages = failed[0]
                raise BrickyardError("INVALID_STATE", f"Library installation failed for {key}: "
                                     + ("; ".join(messages) or "no reason given")[:2000])
            if not pending:
                return f"In run. Libraries installed: {', '.join(sorted(keys))}."
            if time.monotonic() > deadline:
                raise BrickyardError("INVALID_STATE", f"Libraries still installing after {timeout:.0f} s.")
            time.sleep(0.5)

    def uninstall(self, caller: Principal, body: dict) -> None:
        cluster_id, libs = self._request(caller, body)
        keys = {key_of(lib) for lib in libs}
        with self.store.session() as sess:
            self._cluster(sess, cluster_id)
            for row in self._rows(sess, cluster_id):
                if row.key not in keys:
                    continue
                if row.status in (PENDING, FAILED):
                    sess.delete(row)  # nothing was installed
                else:
                    row.status = UNINSTALL
                    row.messages = json.dumps(["Restart the cluster to uninstall this library."])

    def cluster_status(self, cluster_id: object) -> dict:
        with self.store.session() as sess:
            cluster = self._cluster(sess, cluster_id)
            return {"cluster_id": cluster.cluster_id, "library_statuses": [self._status(r) for r in
                                                                           self._rows(sess, cluster.cluster_id)]}

    def all_cluster_statuses(self) -> dict:
        with self.store.session() as sess:
            rows = sess.scalars(select(ClusterLibrary).join(Cluster, Cluster.cluster_id == ClusterLibrary.cluster_id)
                                .where(Cluster.deleted.is_(False)).order_by(ClusterLibrary.id))
            grouped: dict[str, list[dict]] = {}
            for r in rows:
                grouped.setdefault(r.cluster_id, []).append(self._status(r))
        return {"statuses": [{"cluster_id": cid, "library_statuses": sts} for cid, sts in grouped.items()]}

    # ---- cluster hooks -------------------------------------------------------------------
    def jars_for(self, cluster_id: str) -> list[str]:
        """Jars a starting cluster's driver gets on spark.jars (its jar and Maven libraries)."""
        with self.store.session() as sess:
            rows = [(r.key, json.loads(r.library)) for r in self._rows(sess, cluster_id) if r.status != UNINSTALL]
        jars, keys = [], set()
        for key, lib in rows:
            if "jar" in lib or "maven" in lib:
                try:
                    jars += self._resolve_jars(key, lib)
                    keys.add(key)
                except (libraries.InstallError, BrickyardError) as exc:
                    log.info("cluster %s: jar library %s not on the driver: %s", cluster_id, key, exc)
        self._on_driver[cluster_id] = keys
        return jars

    def cluster_started(self, cluster_id: str) -> None:
        """Every library is installed again on a fresh start; uninstalled ones are dropped now."""
        with self.store.session() as sess:
            for row in self._rows(sess, cluster_id):
                if row.status == UNINSTALL:
                    sess.delete(row)
                else:
                    row.status, row.messages = PENDING, "[]"
        self._queue(cluster_id)

    # ---- the installer -------------------------------------------------------------------
    def _queue(self, cluster_id: str) -> None:
        with self._lock:
            if cluster_id in self._queued:
                return
            self._queued.add(cluster_id)
        self._exec.submit(self._process, cluster_id)

    def _process(self, cluster_id: str) -> None:
        with self._lock:
            self._queued.discard(cluster_id)
        while True:
            procs = self.clusters.procs.get(cluster_id)
            with self.store.session() as sess:
                cluster = sess.get(Cluster, cluster_id)
                if procs is None or cluster is None or cluster.state not in ("RUNNING", "RESIZING"):
                    return  # installs resume when the cluster starts
                row = next((r for r in self._rows(sess, cluster_id) if r.status == PENDING), None)
                if row is None:
                    return
                lib = json.loads(row.library)
                row.status = RESOLVING if "maven" in lib else INSTALLING
                row_id, key = row.id, row.key
            try:
                status, messages = INSTALLED, self._install(cluster_id, procs, key, lib)
            except (libraries.InstallError, BrickyardError, driver_control.ControlError) as exc:
                status, messages = FAILED, [getattr(exc, "message", None) or str(exc)]
            except Exception as exc:  # noqa: BLE001 - a broken library must not stop the installer
                log.exception("installing %s on %s", key, cluster_id)
                status, messages = FAILED, [f"Internal error: {exc}"]
            with self.store.session() as sess:
                row = sess.get(ClusterLibrary, row_id)
                if row is not None and row.status in (RESOLVING, INSTALLING):
                    row.status, row.messages = status, json.dumps([m[:4000] for m in messages])

    def _install(self, cluster_id: str, procs, key: str, lib: dict) -> list[str]:  # noqa: ANN001
        prefix = self.launcher.library_prefix(cluster_id)
        constraints = libraries.constraints_file(self.cache)
        if "pypi" in lib:
            libraries.pip_install(prefix, [lib["pypi"]["package"]], constraints, lib["pypi"].get("repo"))
            return []
        if "whl" in lib:
            libraries.pip_install(prefix, [str(self._dbfs_file(lib["whl"]))], constraints)
            return []
        if "requirements" in lib:
            libraries.pip_install(prefix, ["-r", str(self._dbfs_file(lib["requirements"]))], constraints)
            return []
        jars = self._resolve_jars(key, lib)
        if key in self._on_driver.get(cluster_id, set()):
            return []
        driver_control.add_jars(procs.info, jars)
        return [f"Added to the running cluster's executors ({len(jars)} jar(s), sc.addJar); the driver's own class "
                "path includes it from the next restart."]

    def _resolve_jars(self, key: str, lib: dict) -> list[str]:
        if key not in self._jars:
            if "jar" in lib:
                self._jars[key] = [str(self._dbfs_file(lib["jar"]))]
            else:
                m = lib["maven"]
                self._jars[key] = [str(p) for p in libraries.maven_resolve(
                    m["coordinates"], self.cache / "ivy", m.get("repo"), m.get("exclusions"))]
        return self._jars[key]

    def _dbfs_file(self, path: str):  # noqa: ANN202
        try:
            return self.ws.services["dbfs"].local_file(path)
        except BrickyardError as exc:
            raise BrickyardError(exc.error_code, f"{path}: {exc.message}") from None

    # ---- helpers -------------------------------------------------------------------------
    def _request(self, caller: Principal, body: dict) -> tuple[str, list[dict]]:
        cluster_id = body.get("cluster_id")
        libs = body.get("libraries")
        if not isinstance(libs, list) or not libs:
            raise invalid("libraries must be a non-empty list.")
        normalized = [normalize(lib, f"libraries[{i}]") for i, lib in enumerate(libs)]
        with self.store.session() as sess:
            cluster = self._cluster(sess, cluster_id)
            if not caller.is_admin and cluster.creator_user_id != caller.id:
                raise denied(f"Only the creator of cluster {cluster_id} or an admin may change its libraries.")
        return cluster_id, normalized

    @staticmethod
    def _cluster(sess, cluster_id: object) -> Cluster:  # noqa: ANN001
        if not isinstance(cluster_id, str) or not cluster_id:
            raise invalid("cluster_id is required.")
        cluster = sess.get(Cluster, cluster_id)
        if cluster is None or cluster.deleted:
            raise BrickyardError("INVALID_PARAMETER_VALUE", f"Cluster {cluster_id} does not exist")
        return cluster

    @staticmethod
    def _rows(sess, cluster_id: str) -> list[ClusterLibrary]:  # noqa: ANN001
        return list(sess.scalars(select(ClusterLibrary).where(ClusterLibrary.cluster_id == cluster_id)
                                 .order_by(ClusterLibrary.id)))

    @staticmethod
    def _status(row: ClusterLibrary) -> dict:
        out = {"library": json.loads(row.library), "status": row.status, "is_library_for_all_clusters": False}
        messages = json.loads(row.messages)
        if messages:
            out["messages"] = messages
        return out

    def close(self) -> None:
        self._exec.shutdown(wait=False, cancel_futures=True)
