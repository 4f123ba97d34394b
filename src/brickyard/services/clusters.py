"""Clusters: the state machine in the store, advanced by a supervisor that owns the processes."""
from __future__ import annotations

import functools
import json
import logging
import secrets
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from brickyard.compute import catalog
from brickyard.compute.launcher import ClusterProcesses, Launcher, LaunchError
from brickyard.errors import BrickyardError, already_exists, denied, invalid
from brickyard.services import cluster_spec, init_scripts
from brickyard.services.autoscale import Autoscaler
from brickyard.services.pools import PoolService, driver_pool
from brickyard.services.common import now_ms
from brickyard.services.users import Principal
from brickyard.store.models import Cluster, ClusterEvent

log = logging.getLogger(__name__)

PENDING, RUNNING, RESTARTING, RESIZING = "PENDING", "RUNNING", "RESTARTING", "RESIZING"
TERMINATING, TERMINATED, ERROR = "TERMINATING", "TERMINATED", "ERROR"
CLOSE_WAIT_SECONDS = 30.0  # how long closing the workspace waits for cluster operations under way
ACTIVE_STATES = (PENDING, RUNNING, RESTARTING, RESIZING)


def new_cluster_id() -> str:
    """Databricks-shaped id, e.g. 1127-073012-ab12cd34."""
    return time.strftime("%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(4)


def reason(code: str, kind: str, **params: str) -> dict:
    out = {"code": code, "type": kind}
    if params:
        out["parameters"] = {k: str(v) for k, v in params.items()}
    return out


class ClusterService:
    def __init__(self, ws, launcher: Launcher | None = None, script_reader=None):  # noqa: ANN001
        self.ws = ws
        self.store = ws.store
        self.launcher = launcher or Launcher(ws.settings)
        # callable(init_script_dict, creator_user_id) -> bytes: the workspace tree, DBFS or a host file
        self.script_reader = script_reader or (lambda item, uid: init_scripts.read(ws, item, uid))
        self.procs: dict[str, ClusterProcesses] = {}
        self.stop_listeners: list = []  # callables(cluster_id) run when a cluster's processes stop
        self.start_listeners: list = []  # callables(cluster_id) run when a cluster becomes RUNNING
        self.jar_provider = lambda cluster_id: []  # jars (local paths) the Libraries API gives a cluster
        self.pools = PoolService(ws, self.launcher)
        self.autoscaler = Autoscaler(self)
        self._busy: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cluster-op")
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="cluster-supervisor", daemon=True)
        self._recover()
        self._ticker.start()

    # ---- store helpers -------------------------------------------------------------------
    def _get(self, sess: Session, cluster_id: object) -> Cluster:
        if not isinstance(cluster_id, str) or not cluster_id:
            raise invalid("cluster_id is required.")
        cluster = sess.get(Cluster, cluster_id)
        if cluster is None or cluster.deleted:
            raise BrickyardError("INVALID_PARAMETER_VALUE", f"Cluster {cluster_id} does not exist")
        return cluster

    def event(self, sess: Session, cluster_id: str, kind: str, **details: object) -> None:
        sess.add(ClusterEvent(cluster_id=cluster_id, timestamp=now_ms(), type=kind,
                              details=json.dumps(details)))

    def _name_taken(self, sess: Session, name: str, except_id: str | None = None) -> bool:
        query = select(Cluster.cluster_id).where(Cluster.cluster_name == name, Cluster.deleted.is_(False))
        return any(cid != except_id for cid in sess.scalars(query))

    def _apply_pools(self, sess: Session, spec: dict) -> None:
        """Node types come from the pools a cluster names; a different explicit type is an error."""
        for pool_field, type_field in (("instance_pool_id", "node_type_id"),
                                       ("driver_instance_pool_id", "driver_node_type_id")):
            if not spec.get(pool_field):
                continue
            pool_type = self.pools.pool_spec(sess, spec[pool_field])["node_type_id"]
            given = spec.get(type_field)
            if given and given != pool_type and not (type_field == "driver_node_type_id"
                                                     and given == spec.get("node_type_id")):
                raise invalid(f"{type_field} {given!r} differs from the node type {pool_type!r} of instance pool "
                              f"{spec[pool_field]}; leave it out when using a pool.")
            spec[type_field] = pool_type
        if spec.get("instance_pool_id") and not spec.get("driver_instance_pool_id"):
            spec["driver_node_type_id"] = spec["node_type_id"]
        spec["driver_node_type_id"] = spec.get("driver_node_type_id") or spec.get("node_type_id")

    @staticmethod
    def may_manage(caller: Principal | None, cluster: Cluster) -> bool:
        """Databricks' Can Manage without a cluster ACL: the creator and admins (None: the workspace itself)."""
        return caller is None or caller.is_admin or caller.id == cluster.creator_user_id

    def _require_manage(self, caller: Principal | None, cluster: Cluster, action: str) -> None:
        if not self.may_manage(caller, cluster):
            raise denied(f"User {caller.user_name} does not have permission to {action} cluster "
                         f"{cluster.cluster_id}: only its creator ({cluster.creator_user_name}) or an admin may.")

    def check_attach(self, caller: Principal, cluster_id: object) -> None:
        """A single-user cluster runs code of its assigned user only (admins included, as on Databricks)."""
        with self.store.session() as sess:
            spec = json.loads(self._get(sess, cluster_id).spec)
        owner = spec.get("single_user_name")
        if spec.get("data_security_mode") in cluster_spec.SINGLE_USER_MODES and owner \
                and caller.user_name != owner:
            raise denied(f"Cluster {cluster_id} is a single-user cluster assigned to {owner}; "
                         f"{caller.user_name} cannot run commands on it.")

    # ---- API operations ------------------------------------------------------------------
    def create(self, caller: Principal, body: dict, source: str = "API") -> str:
        spec, notes = cluster_spec.normalize(body)
        cluster_id = new_cluster_id()
        with self.pools.lock, self.store.session() as sess:
            if self._name_taken(sess, spec["cluster_name"]):
                raise already_exists(f"Cluster named '{spec['cluster_name']}' already exists; names must be unique.")
            self._apply_pools(sess, spec)
            self.pools.check_capacity(sess, spec)
            now = now_ms()
            sess.add(Cluster(
                cluster_id=cluster_id, cluster_name=spec["cluster_name"], spec=json.dumps(spec), state=PENDING,
                state_message="Starting Spark", creator_user_id=caller.id, creator_user_name=caller.user_name,
                cluster_source=source if source in ("API", "UI", "JOB") else "API", pinned=False, start_time=now,
                current_workers=0, deleted=False, last_activity_time=now,
            ))
            sess.flush()
            self.event(sess, cluster_id, "CREATING", user=caller.user_name)
            for note in notes:
                self.event(sess, cluster_id, "STARTING", message=note)
        self._submit(cluster_id, self._do_start)
        return cluster_id

    def edit(self, caller: Principal, body: dict) -> None:
        with self.store.session() as sess:
            self._require_manage(caller, self._get(sess, body.get("cluster_id")), "edit")
        spec, notes = cluster_spec.normalize(body)
        with self.store.session() as sess:
            cluster = self._get(sess, body.get("cluster_id"))
            self._require_manage(caller, cluster, "edit")
            self._apply_pools(sess, spec)
            if cluster.state not in (RUNNING, TERMINATED, ERROR):
                raise BrickyardError("INVALID_STATE",
                                     f"Cluster {cluster.cluster_id} is in unexpected state {cluster.state}.")
            if self._name_taken(sess, spec["cluster_name"], cluster.cluster_id):
                raise already_exists(f"Cluster named '{spec['cluster_name']}' already exists.")
            previous = json.loads(cluster.spec)
            cluster.spec = json.dumps(spec)
            cluster.cluster_name = spec["cluster_name"]
            self.event(sess, cluster.cluster_id, "EDITED", user=caller.user_name,
                       previous_attributes={k: previous.get(k) for k in ("num_workers", "autoscale", "spark_conf")},
                       attributes={k: spec.get(k) for k in ("num_workers", "autoscale", "spark_conf")})
            for note in notes:
                self.event(sess, cluster.cluster_id, "EDITED", message=note)
            restart = cluster.state == RUNNING
            if restart:
                cluster.state, cluster.state_message = RESTARTING, "Restarting to apply the edit"
        if restart:
            self._submit(cluster.cluster_id, self._do_restart)

    def start(self, caller: Principal | None, cluster_id: object) -> None:
        """Start a terminated cluster; a job's run starts its existing cluster as the job's user (Databricks: the
        job owner needs Can Restart on it)."""
        with self.pools.lock, self.store.session() as sess:
            cluster = self._get(sess, cluster_id)
            self._require_manage(caller, cluster, "start")
            if cluster.state in ACTIVE_STATES:
                if cluster.state == RUNNING:
                    return
                raise BrickyardError("INVALID_STATE", f"Cluster {cluster_id} is in unexpected state {cluster.state}.")
            if cluster.state == TERMINATING:
                raise BrickyardError("INVALID_STATE", f"Cluster {cluster_id} is terminating; start it once TERMINATED.")
            self.pools.check_capacity(sess, json.loads(cluster.spec), exclude_cluster=cluster.cluster_id)
            cluster.state, cluster.state_message = PENDING, "Starting Spark"
            cluster.start_time, cluster.terminated_time, cluster.termination_reason = now_ms(), None, None
            cluster.last_activity_time = now_ms()
            self.event(sess, cluster.cluster_id, "STARTING", user=caller.user_name if caller else None)
        self._submit(cluster_id, self._do_start)

    def restart(self, caller: Principal, cluster_id: object) -> None:
        with self.store.session() as sess:
            cluster = self._get(sess, cluster_id)
            self._require_manage(caller, cluster, "restart")
            if cluster.state != RUNNING:
                raise BrickyardError("INVALID_STATE",
                                     f"Cluster {cluster_id} is in unexpected state {cluster.state}; only a RUNNING "
                                     "cluster can be restarted.")
            cluster.state, cluster.state_message = RESTARTING, "Restarting Spark"
            self.event(sess, cluster.cluster_id, "RESTARTING", user=caller.user_name)
        self._submit(cluster_id, self._do_restart)

    def terminate(self, caller: Principal | None, cluster_id: object, why: dict | None = None) -> None:
        """Terminate; caller None is the workspace itself (auto-termination, a job's own cluster)."""
        with self.store.session() as sess:
            cluster = self._get(sess, cluster_id)
            self._require_manage(caller, cluster, "terminate")
            if cluster.state in (TERMINATED, TERMINATING, ERROR):
                return
            cluster.state, cluster.state_message = TERMINATING, "Terminating"
            why = why or reason("USER_REQUEST", "SUCCESS", username=caller.user_name if caller else "system")
            cluster.termination_reason = json.dumps(why)
            self.event(sess, cluster.cluster_id, "TERMINATING", reason=why,
                       user=caller.user_name if caller else None)
        self._submit(cluster_id, self._do_stop)

    def permanent_delete(self, caller: Principal, cluster_id: object) -> None:
        with self.store.session() as sess:
            cluster = self._get(sess, cluster_id)
            self._require_manage(caller, cluster, "permanently delete")
            cluster.deleted = True
            cluster.cluster_name = f"{cluster.cluster_name}#deleted-{cluster.cluster_id}"
        self._submit(cluster_id, self._do_stop_and_remove)

    def resize(self, caller: Principal, body: dict) -> None:
        with self.store.session() as sess:
            cluster = self._get(sess, body.get("cluster_id"))
            self._require_manage(caller, cluster, "resize")
            if cluster.state != RUNNING:
                raise BrickyardError("INVALID_STATE", f"Cluster {cluster.cluster_id} is in unexpected state "
                                     f"{cluster.state}; only a RUNNING cluster can be resized.")
            spec = json.loads(cluster.spec)
            merged = {**spec, **{k: body[k] for k in ("num_workers", "autoscale") if k in body}}
            if "num_workers" in body:
                merged.pop("autoscale", None)
            new_spec, _ = cluster_spec.normalize(merged)
            if cluster_spec.mode_of(new_spec) == cluster_spec.SINGLE_NODE and cluster_spec.target_workers(new_spec):
                raise invalid("A Single Node cluster cannot be resized.")
            with self.pools.lock:
                self.pools.check_capacity(sess, new_spec, exclude_cluster=cluster.cluster_id)
            cluster.spec = json.dumps(new_spec)
            cluster.state, cluster.state_message = RESIZING, "Resizing"
            self.event(sess, cluster.cluster_id, "RESIZING", user=caller.user_name,
                       target_num_workers=cluster_spec.target_workers(new_spec),
                       current_num_workers=cluster.current_workers)
        self._submit(cluster.cluster_id, self._do_resize)

    def set_pinned(self, caller: Principal, cluster_id: object, pinned: bool) -> None:
        """Pin or unpin: workspace admins only, as on Databricks."""
        with self.store.session() as sess:
            cluster = self._get(sess, cluster_id)
            if not caller.is_admin:
                raise denied(f"User {caller.user_name} cannot {'pin' if pinned else 'unpin'} cluster "
                             f"{cluster.cluster_id}: only workspace admins pin or unpin clusters.")
            cluster.pinned = pinned
            self.event(sess, cluster.cluster_id, "PINNED" if pinned else "UNPINNED", user=caller.user_name)

    def touch(self, cluster_id: str) -> None:
        """Record activity (a command or job ran), which resets the auto-termination clock."""
        with self.store.session() as sess:
            cluster = sess.get(Cluster, cluster_id)
            if cluster is not None:
                cluster.last_activity_time = now_ms()

    def get(self, cluster_id: object) -> dict:
        with self.store.session() as sess:
            return self.describe(self._get(sess, cluster_id))

    def driver_log_tail(self, caller: Principal, cluster_id: str, max_bytes: int = 64 * 1024) -> tuple[str, int]:
        """The last max_bytes of the driver's log (its stdout and stderr) and the log's whole size.

        Only the cluster's creator or an admin may read it (Databricks: Can Manage).
        """
        with self.store.session() as sess:
            if not self.may_manage(caller, self._get(sess, cluster_id)):
                raise denied(f"Only the creator of cluster {cluster_id} or an admin may read its driver logs.")
        candidates = []
        procs = self.procs.get(cluster_id)
        if procs is not None and procs.extra.get("instance_dir"):  # a driver adopted from an instance pool
            candidates.append(Path(procs.extra["instance_dir"]) / "driver.log")
        candidates.append(self.launcher.cluster_dir(cluster_id) / "driver.log")
        for path in candidates:
            try:
                with open(path, "rb") as fh:
                    size = fh.seek(0, 2)
                    fh.seek(max(size - max_bytes, 0))
                    data = fh.read()
            except OSError:
                continue
            text = data.decode("utf-8", errors="replace")
            return (text.split("\n", 1)[-1] if size > max_bytes else text), size
        return "", 0

    def list(self, states: list[str] | None = None, sources: list[str] | None = None,
             pinned: bool | None = None) -> list[dict]:
        """Every cluster, newest first; optionally only those in `states`, from `sources`, (un)pinned
        (the SDK's ListClustersFilterBy)."""
        query = select(Cluster).where(Cluster.deleted.is_(False))
        if states:
            query = query.where(Cluster.state.in_(states))
        if sources:
            query = query.where(Cluster.cluster_source.in_(sources))
        if pinned is not None:
            query = query.where(Cluster.pinned.is_(pinned))
        with self.store.session() as sess:
            return [self.describe(c) for c in sess.scalars(query.order_by(Cluster.start_time.desc()))]

    def events(self, body: dict) -> dict:
        limit = body.get("limit", 50)
        offset = body.get("offset", 0)
        order = body.get("order", "DESC")
        if not isinstance(limit, int) or not 1 <= limit <= 500:
            raise invalid("limit must be between 1 and 500.")
        if not isinstance(offset, int) or offset < 0:
            raise invalid("offset must be a non-negative integer.")
        if order not in ("ASC", "DESC"):
            raise invalid("order must be ASC or DESC.")
        types = body.get("event_types") or []
        with self.store.session() as sess:
            cluster = self._get(sess, body.get("cluster_id"))
            query = select(ClusterEvent).where(ClusterEvent.cluster_id == cluster.cluster_id)
            if types:
                query = query.where(ClusterEvent.type.in_(types))
            if body.get("start_time"):
                query = query.where(ClusterEvent.timestamp >= int(body["start_time"]))
            if body.get("end_time"):
                query = query.where(ClusterEvent.timestamp <= int(body["end_time"]))
            key = ClusterEvent.id.asc() if order == "ASC" else ClusterEvent.id.desc()
            rows = list(sess.scalars(query.order_by(key).offset(offset).limit(limit + 1)))
            total = len(list(sess.scalars(query)))
        events = [{"cluster_id": e.cluster_id, "timestamp": e.timestamp, "type": e.type,
                   "details": json.loads(e.details)} for e in rows[:limit]]
        out = {"events": events, "total_count": total}
        if len(rows) > limit:
            out["next_page"] = {**{k: v for k, v in body.items() if k != "offset"}, "offset": offset + limit}
        return out

    def describe(self, c: Cluster) -> dict:
        spec = json.loads(c.spec)
        runtime = json.loads(c.runtime) if c.runtime else {}
        nt = catalog.NODE_TYPES_BY_ID.get(spec.get("node_type_id") or "", catalog.SMALLEST_LOCAL)
        workers = c.current_workers if c.state in (RUNNING, RESIZING) else 0
        out = {k: v for k, v in spec.items() if k not in ("runtime_key",)}
        out.update({
            "cluster_id": c.cluster_id,
            "cluster_name": c.cluster_name,
            "state": c.state,
            "state_message": c.state_message,
            "creator_user_name": c.creator_user_name,
            "cluster_source": c.cluster_source,
            "start_time": c.start_time,
            "default_tags": {"Vendor": "Brickyard", "Creator": c.creator_user_name,
                             "ClusterName": c.cluster_name, "ClusterId": c.cluster_id},
            "cluster_cores": float(nt.num_cores * (1 + workers)),
            "cluster_memory_mb": nt.memory_mb * (1 + workers),
            "spec": spec,
            "is_single_node": cluster_spec.mode_of(spec) == cluster_spec.SINGLE_NODE,
        })
        if c.pinned:
            out["pinned_by_user_name"] = self._pinned_by(c)
        if c.terminated_time:
            out["terminated_time"] = c.terminated_time
        if c.last_restarted_time:
            out["last_restarted_time"] = c.last_restarted_time
        if c.termination_reason and c.state in (TERMINATING, TERMINATED, ERROR):
            out["termination_reason"] = json.loads(c.termination_reason)
        if c.state in (RUNNING, RESIZING, RESTARTING) and runtime:
            out["spark_context_id"] = c.spark_context_id
            out["driver"] = {"node_id": f"{c.cluster_id}-driver", "instance_id": str(runtime.get("pid")),
                             "private_ip": "127.0.0.1", "host_private_ip": "127.0.0.1",
                             "start_timestamp": runtime.get("started")}
            out["executors"] = [{"node_id": f"{c.cluster_id}-worker-{i}", "private_ip": "127.0.0.1"}
                                for i in range(workers)]
            out["spark_ui_url"] = runtime.get("spark_ui_url")
            out["num_workers"] = spec.get("num_workers", workers) if not spec.get("autoscale") else workers
        return out

    def _pinned_by(self, c: Cluster) -> str:
        """Who pinned the cluster: the user of its latest PINNED event."""
        details = object_session(c).scalars(select(ClusterEvent.details).where(
            ClusterEvent.cluster_id == c.cluster_id, ClusterEvent.type == "PINNED",
        ).order_by(ClusterEvent.id.desc()).limit(1)).first()
        return (json.loads(details).get("user") if details else None) or c.creator_user_name

    # ---- the supervisor ------------------------------------------------------------------
    def _submit(self, cluster_id: str, fn) -> None:  # noqa: ANN001
        lock = self._locks.setdefault(cluster_id, threading.Lock())

        def run() -> None:
            with lock:
                try:
                    fn(cluster_id)
                except Exception:  # noqa: BLE001 - a failed operation must not kill the supervisor
                    log.exception("cluster %s: operation %s failed", cluster_id, getattr(fn, "__name__", fn))
                    self._set(cluster_id, ERROR, "Internal error in the cluster supervisor; see the workspace log.",
                              why=reason("UNEXPECTED_LAUNCH_FAILURE", "SERVICE_FAULT"))

        self._pool.submit(run)

    def _set(self, cluster_id: str, state: str, message: str, why: dict | None = None, **fields: object) -> None:
        with self.store.session() as sess:
            c = sess.get(Cluster, cluster_id)
            if c is None:
                return
            c.state, c.state_message = state, message
            if why is not None:
                c.termination_reason = json.dumps(why)
            if state in (TERMINATED, ERROR):
                c.terminated_time = now_ms()
                c.current_workers = 0
            for k, v in fields.items():
                setattr(c, k, v)
            event = {RUNNING: "RUNNING", TERMINATED: "TERMINATING", ERROR: "TERMINATING"}.get(state)
            if event:
                details: dict = {}
                if why:
                    details["reason"] = why
                if state == RUNNING:
                    details["current_num_workers"] = c.current_workers
                self.event(sess, cluster_id, event, **details)

    def _spec(self, cluster_id: str) -> dict:
        with self.store.session() as sess:
            c = sess.get(Cluster, cluster_id)
            return json.loads(c.spec) if c else {}

    def _do_start(self, cluster_id: str) -> None:
        spec = self._spec(cluster_id)
        with self.store.session() as sess:
            c = sess.get(Cluster, cluster_id)
            if c is None or c.state != PENDING:
                return
            creator = c.creator_user_id
            nt = catalog.NODE_TYPES_BY_ID.get(spec.get("node_type_id") or "")
            if nt is not None:
                _, _, cap_note = catalog.capped(nt)
                if cap_note:
                    self.event(sess, cluster_id, "STARTING", message=cap_note, level="WARNING")
        warm = None
        try:
            scripts = [(next(iter(s.values()))["destination"], self.script_reader(s, creator))
                       for s in spec.get("init_scripts", [])]
            jars = self.jar_provider(cluster_id)
            if scripts:
                with self.store.session() as sess:
                    self.event(sess, cluster_id, "INIT_SCRIPTS_STARTED", init_scripts=spec["init_scripts"])
            pool_id = driver_pool(spec)
            if pool_id and self._local_driver(spec) and jars:
                with self.store.session() as sess:
                    self.event(sess, cluster_id, "STARTING", message=(
                        "The cluster has jar libraries, which go on a driver's class path when its JVM starts: "
                        "starting a new driver instead of a warm one from the pool."))
            elif pool_id and self._local_driver(spec):
                warm = self.pools.take_driver(pool_id)
                if warm is None:
                    with self.store.session() as sess:
                        self.event(sess, cluster_id, "STARTING", message=f"Instance pool {pool_id} has no idle "
                                   "instance; starting a new driver (the pool refills to its minimum).")
            elif pool_id and not jars and spec.get("instance_pool_id") == pool_id and not self._external(spec):
                warm = self.pools.take_set(pool_id, cluster_spec.target_workers(spec))
                if warm is None:
                    with self.store.session() as sess:
                        self.event(sess, cluster_id, "STARTING", message=(
                            f"Instance pool {pool_id} has no idle multi-node set (a driver and worker JVMs) yet; "
                            "starting new processes. The pool now keeps one ready for the next cluster."))
            elif pool_id:
                with self.store.session() as sess:
                    self.event(sess, cluster_id, "STARTING", message=(
                        f"Instance pool {pool_id}: this cluster's driver and workers are started new (jar "
                        "libraries, an external master or a separate driver pool need new JVMs; they count "
                        "against the pool's capacity)."))
            if warm is not None:
                procs = self.launcher.adopt(cluster_id, spec, warm, scripts, jars)
            else:
                procs = self.launcher.start(cluster_id, spec, {}, scripts, jars)
        except LaunchError as exc:
            if warm is not None:
                self.launcher.stop(warm)
            state = ERROR if exc.code in ("INIT_SCRIPT_FAILURE",) else TERMINATED
            with self.store.session() as sess:
                self.event(sess, cluster_id, "INIT_SCRIPTS_FINISHED" if exc.code == "INIT_SCRIPT_FAILURE"
                           else "DRIVER_NOT_RESPONDING", message=exc.message[-4000:])
            self._set(cluster_id, state, exc.message[:2000], why=reason(exc.code, exc.kind))
            return
        except BrickyardError as exc:
            with self.store.session() as sess:
                self.event(sess, cluster_id, "INIT_SCRIPTS_FINISHED", message=exc.message)
            self._set(cluster_id, ERROR, exc.message, why=reason("INIT_SCRIPT_FAILURE", "CLIENT_ERROR"))
            return
        self.procs[cluster_id] = procs
        with self.store.session() as sess:
            c = sess.get(Cluster, cluster_id)
            stale = c is None or c.deleted or c.state not in (PENDING, RESTARTING)
            if not stale:
                self._start_events(sess, cluster_id, procs)
        if stale:  # terminated or deleted while starting
            self.launcher.stop(procs)
            self.procs.pop(cluster_id, None)
            return
        workers = len(procs.standalone.workers()) if procs.standalone is not None else 0
        self._set(cluster_id, RUNNING, "", spark_context_id=secrets.randbelow(2**62),
                  current_workers=workers,
                  runtime=json.dumps({"pid": procs.info.get("pid"), "spark_ui_url": procs.info.get("spark_ui_url"),
                                      "application_id": procs.info.get("application_id"),
                                      "started": now_ms()}),
                  last_activity_time=now_ms())
        for listener in self.start_listeners:
            try:
                listener(cluster_id)
            except Exception:  # noqa: BLE001
                log.exception("start listener for cluster %s", cluster_id)

    @staticmethod
    def _external(spec: dict) -> bool:
        master = (spec.get("spark_conf") or {}).get("spark.master", "")
        return master.startswith(("spark://", "k8s://", "yarn"))

    @staticmethod
    def _local_driver(spec: dict) -> bool:
        """Whether the cluster runs Spark in its driver alone (what a warm pool driver is)."""
        master = (spec.get("spark_conf") or {}).get("spark.master", "local")
        return cluster_spec.target_workers(spec) == 0 and not spec.get("autoscale") and master.startswith("local")

    def _start_events(self, sess: Session, cluster_id: str, procs: ClusterProcesses) -> None:
        if procs.extra.get("init_scripts"):
            self.event(sess, cluster_id, "INIT_SCRIPTS_FINISHED", init_scripts={
                "reported_for_node": "127.0.0.1", "cluster": procs.extra["init_scripts"]})
        if procs.extra.get("instance_dir"):
            message = "The driver came warm from the instance pool."
            if procs.extra.get("pool_workers"):
                message = (f"The driver and {procs.extra['pool_workers']} worker JVM(s) came warm from the instance "
                           f"pool (resized to {procs.extra.get('workers', 0)} worker(s)).")
            details: dict = {"message": message, "applied_spark_conf": procs.extra.get("applied", [])}
            if procs.extra.get("not_applied"):
                details["message"] += (" These spark_conf keys take effect only when a driver JVM starts and were "
                                       "not applied to it: " + ", ".join(procs.extra["not_applied"]) + ".")
                details["not_applied_spark_conf"] = procs.extra["not_applied"]
            self.event(sess, cluster_id, "DRIVER_HEALTHY", **details)

    def _do_stop(self, cluster_id: str, final_state: str = TERMINATED) -> None:
        self._stop_procs(cluster_id)
        with self.store.session() as sess:
            c = sess.get(Cluster, cluster_id)
            why = json.loads(c.termination_reason) if c and c.termination_reason else None
        self._set(cluster_id, final_state, "Terminated", why=why)

    def _do_stop_and_remove(self, cluster_id: str) -> None:
        self._stop_procs(cluster_id)
        self.launcher.remove(cluster_id)

    def _do_restart(self, cluster_id: str) -> None:
        self._stop_procs(cluster_id)
        with self.store.session() as sess:
            c = sess.get(Cluster, cluster_id)
            if c is None or c.state != RESTARTING:
                return
            c.state = PENDING
            c.last_restarted_time = now_ms()
        self._do_start(cluster_id)

    def _do_resize(self, cluster_id: str, target: int | None = None) -> None:
        spec = self._spec(cluster_id)
        procs = self.procs.get(cluster_id)
        target = cluster_spec.target_workers(spec) if target is None else target
        if procs is None:
            return
        if procs.standalone is None and target:
            self._set(cluster_id, RUNNING, "This cluster runs without workers (local mode); restart it to add some.")
            return
        try:
            count = self.launcher.resize(procs, spec, target)
        except Exception as exc:  # noqa: BLE001 - a failed resize leaves the cluster running as it was
            log.warning("cluster %s: resize failed: %s", cluster_id, exc)
            with self.store.session() as sess:
                self.event(sess, cluster_id, "ADD_NODES_FAILED", message=str(exc)[:2000])
            self._set(cluster_id, RUNNING, f"Resize failed: {exc}"[:2000])
            return
        previous = self._current_workers(cluster_id)
        self._set(cluster_id, RUNNING, "", current_workers=count)
        with self.store.session() as sess:
            if count >= previous:
                self.event(sess, cluster_id, "UPSIZE_COMPLETED", current_num_workers=count, target_num_workers=target)
            else:
                self.event(sess, cluster_id, "AUTOSCALING_STATS_REPORT", current_num_workers=count,
                           target_num_workers=target, message=f"Removed {previous - count} idle worker(s).")

    def _current_workers(self, cluster_id: str) -> int:
        with self.store.session() as sess:
            c = sess.get(Cluster, cluster_id)
            return c.current_workers if c else 0

    def autoscale_to(self, cluster_id: str, target: int, why: str, **stats: object) -> None:
        """Move a RUNNING autoscaling cluster to `target` workers (called by the autoscaler)."""
        with self.store.session() as sess:
            c = sess.get(Cluster, cluster_id)
            if c is None or c.state != RUNNING:
                return
            c.state, c.state_message = RESIZING, why
            self.event(sess, cluster_id, "AUTOSCALING_STATS_REPORT", message=why, **stats)
            self.event(sess, cluster_id, "RESIZING", target_num_workers=target,
                       current_num_workers=c.current_workers, cause="AUTOSCALE")
        self._submit(cluster_id, functools.partial(self._do_resize, target=target))

    def _recover(self) -> None:
        """After a workspace restart no driver of ours is alive: say so truthfully."""
        self.launcher.cleanup_leftovers()
        with self.store.session() as sess:
            for c in sess.scalars(select(Cluster).where(Cluster.state.in_(ACTIVE_STATES + (TERMINATING,)))):
                was = c.state
                c.state, c.state_message = TERMINATED, "The workspace restarted; its clusters' processes stopped."
                c.terminated_time = now_ms()
                c.current_workers = 0
                c.termination_reason = json.dumps(reason("COMMUNICATION_LOST", "SERVICE_FAULT",
                                                         previous_state=was))
                self.event(sess, c.cluster_id, "TERMINATING", reason=json.loads(c.termination_reason))

    def _tick_loop(self) -> None:
        while not self._stop.wait(2.0):
            try:
                self._tick()
            except Exception:  # noqa: BLE001
                log.exception("cluster supervisor tick failed")

    def _tick(self) -> None:
        for cluster_id, procs in list(self.procs.items()):
            if not procs.alive() and self.procs.get(cluster_id) is procs:
                self._stop_procs(cluster_id)
                code = procs.driver.returncode
                how = f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
                message = f"The Spark driver (pid {procs.driver.pid}) {how}; the cluster's notebooks lost Spark."
                self._set(cluster_id, TERMINATED, message,
                          why=reason("DRIVER_UNREACHABLE", "SERVICE_FAULT", exit_code=str(code), message=message))
        self.autoscaler.tick()
        now = now_ms()
        with self.store.session() as sess:
            idle = [
                c.cluster_id for c in sess.scalars(select(Cluster).where(Cluster.state == RUNNING))
                if (m := json.loads(c.spec).get("autotermination_minutes"))
                and c.last_activity_time and now - c.last_activity_time > m * 60_000
                and not self.busy(c.cluster_id)
            ]
        for cluster_id in idle:
            self.terminate(None, cluster_id, reason("INACTIVITY", "SUCCESS", inactivity_duration_min=str(
                self._spec(cluster_id).get("autotermination_minutes"))))

    def busy(self, cluster_id: str) -> bool:
        """Whether a command or job is running on the cluster (set by contexts and jobs)."""
        return self._busy.get(cluster_id, 0) > 0

    def mark_busy(self, cluster_id: str, delta: int) -> None:
        self._busy[cluster_id] = max(self._busy.get(cluster_id, 0) + delta, 0)
        self.touch(cluster_id)

    def spec_of(self, cluster_id: str) -> dict:
        return self._spec(cluster_id)

    def _stop_procs(self, cluster_id: str) -> None:
        procs = self.procs.pop(cluster_id, None)
        for listener in self.stop_listeners:
            try:
                listener(cluster_id)
            except Exception:  # noqa: BLE001
                log.exception("stop listener for cluster %s", cluster_id)
        if procs is not None:
            self.launcher.stop(procs)

    def _stop_all(self) -> None:
        for cluster_id in list(self.procs):
            try:
                self._stop_procs(cluster_id)
            except Exception:  # noqa: BLE001
                log.exception("stopping cluster %s", cluster_id)

    def close(self) -> None:
        self._stop.set()
        self._stop_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
        # Operations under way (a stop-and-remove, a start) finish first, within a bound: one left running
        # would outlive the workspace's clean-up, or write into a home that is being removed.
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        for thread in list(getattr(self._pool, "_threads", ())):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop_all()  # what a start under way launched meanwhile
        self.pools.close()
        self.launcher.close()
