"""Instance pools: warm driver and worker processes kept idle so a cluster starts in about a second.

An idle instance is a driver process with its SparkSession, Delta and the shared catalog up
(local master, the pool's node type). A Single Node cluster with a pool adopts one; a used
instance is never given back (its JVM carries the cluster's state): the pool starts a new one
to stay at min_idle_instances. The pools live in the store; warm processes do not survive a
workspace restart, the pools refill instead.

Multi-node clusters: a Spark standalone worker takes its master's URL when its JVM starts, and a
driver its master when its SparkContext starts, so idle worker JVMs are kept as a set: a standalone
master, N worker JVMs of the pool's node type and a driver whose application already has its
executors on them (driver + N instances). Once a multi-node cluster of N workers has asked the
pool (that one starts cold), the pool keeps one such set ready for as long as its idle
instances live (idle_instance_autotermination_minutes after the last ask), within max_capacity;
the next multi-node cluster adopts it and is resized to its own worker count.
"""
from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from brickyard.compute import catalog
from brickyard.compute.launcher import ClusterProcesses, LaunchError
from brickyard.compute.standalone import stop_recorded
from brickyard.errors import BrickyardError, already_exists, denied, invalid
from brickyard.services.common import now_ms
from brickyard.services.users import Principal
from brickyard.store.compute_models import InstancePool
from brickyard.store.models import Cluster

log = logging.getLogger(__name__)
ACTIVE, DELETED = "ACTIVE", "DELETED"
CLUSTER_ACTIVE = ("PENDING", "RUNNING", "RESTARTING", "RESIZING")
POOL_FIELDS = ("instance_pool_name", "node_type_id", "min_idle_instances", "max_capacity",
               "idle_instance_autotermination_minutes", "preloaded_spark_versions", "custom_tags",
               "enable_elastic_disk", "azure_attributes", "aws_attributes", "gcp_attributes", "disk_spec",
               "preloaded_docker_images")
REFILL_DELAY = 1.5
MAX_WARM = 8  # warm drivers per pool on one host: each is a JVM of several hundred MB


def _count(body: dict, name: str, lo: int, hi: int, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise invalid(f"{name} must be an integer between {lo} and {hi}; got {value!r}.")
    return value


def normalize(body: dict) -> dict:
    """A clean pool spec from a create/edit body."""
    spec = {k: body[k] for k in POOL_FIELDS if body.get(k) is not None}
    name = spec.get("instance_pool_name")
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise invalid("instance_pool_name is required (at most 100 characters).")
    try:
        catalog.node_type(spec.get("node_type_id"))
    except ValueError as exc:
        raise invalid(str(exc)) from None
    spec["min_idle_instances"] = _count(body, "min_idle_instances", 0, MAX_WARM, 0)
    spec["max_capacity"] = _count(body, "max_capacity", 1, 10_000, None)
    spec["idle_instance_autotermination_minutes"] = _count(body, "idle_instance_autotermination_minutes",
                                                            0, 10_000, 60)
    if spec["max_capacity"] is not None and spec["min_idle_instances"] > spec["max_capacity"]:
        raise invalid("min_idle_instances must not exceed max_capacity.")
    versions = spec.get("preloaded_spark_versions") or []
    if not isinstance(versions, list) or len(versions) > 1:
        raise invalid("preloaded_spark_versions takes at most one runtime key.")
    for key in versions:
        try:
            catalog.resolve_runtime(key)
        except ValueError as exc:
            raise invalid(f"preloaded_spark_versions: {exc}") from None
    tags = spec.get("custom_tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise invalid("custom_tags must be an object of string keys and values.")
    if spec["max_capacity"] is None:
        spec.pop("max_capacity")
    return spec


class PoolService:
    def __init__(self, ws, launcher):  # noqa: ANN001
        self.ws = ws
        self.store = ws.store
        self.launcher = launcher
        self.root = ws.settings.home / "pool-instances"
        if self.root.exists():  # a previous workspace's instances are gone; stop their standalone daemons
            for leftover in self.root.iterdir():
                stop_recorded(leftover / "standalone")
        shutil.rmtree(self.root, ignore_errors=True)
        self.idle: dict[str, list[tuple[ClusterProcesses, float]]] = {}
        self.pending: dict[str, int] = {}
        # Multi-node: idle sets (driver + standalone workers), sets being started (their instances),
        # and the last multi-node ask of each pool (workers, when).
        self.sets: dict[str, list[tuple[ClusterProcesses, float]]] = {}
        self.sets_pending: dict[str, int] = {}
        self.set_demand: dict[str, tuple[int, float]] = {}
        self.errors: dict[str, str] = {}
        self.lock = threading.RLock()  # also held by clusters while they check and claim capacity
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pool-warm")
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="pool-supervisor", daemon=True)
        self._ticker.start()

    # ---- API -----------------------------------------------------------------------------
    def create(self, caller: Principal, body: dict) -> str:
        spec = normalize(body)
        pool_id = time.strftime("%m%d-%H%M%S-", time.gmtime()) + "pool-" + secrets.token_hex(4)
        with self.store.session() as sess:
            if self._name_taken(sess, spec["instance_pool_name"]):
                raise already_exists(f"Instance pool named '{spec['instance_pool_name']}' already exists.")
            sess.add(InstancePool(instance_pool_id=pool_id, instance_pool_name=spec["instance_pool_name"],
                                  spec=json.dumps(spec), state=ACTIVE, creator_user_name=caller.user_name,
                                  created_at=now_ms()))
        self._refill(pool_id)
        return pool_id

    def edit(self, caller: Principal, body: dict) -> None:
        with self.store.session() as sess:
            pool = self._get(sess, body.get("instance_pool_id"), active=True)
            self._may_manage(caller, pool)
            old = json.loads(pool.spec)
            if body.get("node_type_id") not in (None, old["node_type_id"]):
                raise invalid("node_type_id of an instance pool cannot be changed.")
            spec = normalize({**old, **{k: v for k, v in body.items() if k in POOL_FIELDS},
                              "node_type_id": old["node_type_id"]})
            if self._name_taken(sess, spec["instance_pool_name"], pool.instance_pool_id):
                raise already_exists(f"Instance pool named '{spec['instance_pool_name']}' already exists.")
            pool.spec, pool.instance_pool_name = json.dumps(spec), spec["instance_pool_name"]
        self._refill(pool.instance_pool_id)

    def delete(self, caller: Principal, pool_id: object) -> None:
        with self.store.session() as sess:
            pool = self._get(sess, pool_id)
            self._may_manage(caller, pool)
            if pool.state == DELETED:
                return
            pool.state = DELETED
        with self.lock:
            idle = self.idle.pop(pool.instance_pool_id, []) + self.sets.pop(pool.instance_pool_id, [])
            self.set_demand.pop(pool.instance_pool_id, None)
        for procs, _ in idle:
            self._discard(procs)

    def get(self, pool_id: object) -> dict:
        with self.store.session() as sess:
            return self.describe(sess, self._get(sess, pool_id))

    def list(self) -> list[dict]:
        with self.store.session() as sess:
            rows = sess.scalars(select(InstancePool).where(InstancePool.state == ACTIVE)
                                .order_by(InstancePool.created_at))
            return [self.describe(sess, p) for p in rows]

    def describe(self, sess, pool: InstancePool) -> dict:  # noqa: ANN001
        spec = json.loads(pool.spec)
        used, pending_used = self._usage(sess).get(pool.instance_pool_id, (0, 0))
        with self.lock:
            idle = len(self.idle.get(pool.instance_pool_id, [])) + self._set_instances(pool.instance_pool_id)
            pending = self.pending.get(pool.instance_pool_id, 0) + self.sets_pending.get(pool.instance_pool_id, 0)
        out = {**spec, "instance_pool_id": pool.instance_pool_id, "state": pool.state,
               "default_tags": {"Vendor": "Brickyard", "DatabricksInstancePoolCreatorId": pool.creator_user_name,
                                "DatabricksInstancePoolId": pool.instance_pool_id},
               "stats": {"used_count": used, "idle_count": idle, "pending_used_count": pending_used,
                         "pending_idle_count": pending},
               "status": {}}
        error = self.errors.get(pool.instance_pool_id)
        if error:
            out["status"] = {"pending_instance_errors": [{"instance_id": "warm-driver", "message": error}]}
        return out

    # ---- clusters use pools --------------------------------------------------------------
    def pool_spec(self, sess, pool_id: str) -> dict:  # noqa: ANN001
        """The spec of an ACTIVE pool (INVALID_PARAMETER_VALUE naming the pool otherwise)."""
        pool = sess.get(InstancePool, pool_id) if isinstance(pool_id, str) else None
        if pool is None or pool.state != ACTIVE:
            raise invalid(f"Instance pool {pool_id!r} does not exist (or was deleted).")
        return json.loads(pool.spec)

    def check_capacity(self, sess, spec: dict, exclude_cluster: str | None = None) -> None:  # noqa: ANN001
        """Refuse a cluster start that would take a pool past its max_capacity."""
        need = instances_needed(spec)
        usage = self._usage(sess, exclude_cluster)
        for pool_id, count in need.items():
            cap = self.pool_spec(sess, pool_id).get("max_capacity")
            used = usage.get(pool_id, (0, 0))[0]
            if cap is not None and used + count > cap:
                raise BrickyardError(
                    "INVALID_STATE",
                    f"Instance pool {pool_id} is at its max_capacity ({cap}): {used} instance(s) in use, this "
                    f"cluster needs {count}. Terminate a cluster of the pool or raise max_capacity.")

    def take_driver(self, pool_id: str) -> ClusterProcesses | None:
        """An idle warm driver of the pool, or None (the caller then starts one cold)."""
        with self.lock:
            idle = self.idle.get(pool_id, [])
            while idle:
                procs, _ = idle.pop(0)
                if procs.alive():
                    # Refill a little later: a JVM starting now would slow down the adoption itself.
                    timer = threading.Timer(REFILL_DELAY, self._refill, args=(pool_id,))
                    timer.daemon = True
                    timer.start()
                    return procs
                self._discard(procs)
        return None

    def take_set(self, pool_id: str, workers: int) -> ClusterProcesses | None:
        """An idle multi-node set of the pool (driver + standalone worker JVMs), or None (the caller starts
        its processes cold). Either way the pool now keeps a set of `workers` workers ready."""
        with self.lock:
            self.set_demand[pool_id] = (max(1, min(workers, MAX_WARM)), time.time())
            found = None
            sets = self.sets.get(pool_id, [])
            while sets and found is None:
                procs, _ = sets.pop(0)
                if procs.alive():
                    found = procs
                else:
                    self._discard(procs)
        timer = threading.Timer(REFILL_DELAY, self._refill, args=(pool_id,))
        timer.daemon = True
        timer.start()
        return found

    def _set_instances(self, pool_id: str) -> int:
        """Instances held by the pool's idle sets: each set's driver and its workers."""
        return sum(1 + p.extra.get("pool_workers", 0) for p, _ in self.sets.get(pool_id, []))

    # ---- internals -----------------------------------------------------------------------
    def _get(self, sess, pool_id: object, active: bool = False) -> InstancePool:  # noqa: ANN001
        if not isinstance(pool_id, str) or not pool_id:
            raise invalid("instance_pool_id is required.")
        pool = sess.get(InstancePool, pool_id)
        if pool is None or (active and pool.state != ACTIVE):
            raise BrickyardError("RESOURCE_DOES_NOT_EXIST", f"Instance pool {pool_id} does not exist.")
        return pool

    @staticmethod
    def _may_manage(caller: Principal, pool: InstancePool) -> None:
        if not caller.is_admin and caller.user_name != pool.creator_user_name:
            raise denied(f"Only the creator of instance pool {pool.instance_pool_id} or an admin may change it.")

    def _name_taken(self, sess, name: str, except_id: str | None = None) -> bool:  # noqa: ANN001
        query = select(InstancePool.instance_pool_id).where(InstancePool.instance_pool_name == name,
                                                            InstancePool.state == ACTIVE)
        return any(pid != except_id for pid in sess.scalars(query))

    def _usage(self, sess, exclude_cluster: str | None = None) -> dict[str, tuple[int, int]]:  # noqa: ANN001
        """Per pool: (instances used by active clusters, of which those of clusters still PENDING)."""
        out: dict[str, list[int]] = {}
        for c in sess.scalars(select(Cluster).where(Cluster.state.in_(CLUSTER_ACTIVE), Cluster.deleted.is_(False))):
            if c.cluster_id == exclude_cluster:
                continue
            spec = json.loads(c.spec)
            workers = c.current_workers if c.state != "PENDING" else None
            for pool_id, count in instances_needed(spec, workers).items():
                entry = out.setdefault(pool_id, [0, 0])
                entry[0] += count
                if c.state == "PENDING":
                    entry[1] += count
        return {k: (v[0], v[1]) for k, v in out.items()}

    def _refill(self, pool_id: str) -> None:
        """Start warm drivers up to min_idle_instances, within max_capacity; stop surplus idle ones."""
        if self._stop.is_set():
            return  # the workspace is closing (a refill timer fired late)
        with self.store.session() as sess:
            pool = sess.get(InstancePool, pool_id)
            if pool is None or pool.state != ACTIVE:
                return
            spec = json.loads(pool.spec)
            used = self._usage(sess).get(pool_id, (0, 0))[0]
        surplus: list[ClusterProcesses] = []
        start_set = 0
        with self.lock:
            idle = [(p, t) for p, t in self.idle.get(pool_id, []) if p.alive()]
            surplus = [p for p, _ in self.idle.get(pool_id, []) if not p.alive()]  # died while idle
            pending = self.pending.get(pool_id, 0)
            cap = spec.get("max_capacity")
            ttl = spec["idle_instance_autotermination_minutes"] * 60
            # Multi-node sets: kept while the last multi-node ask is younger than the idle time.
            workers, asked = self.set_demand.get(pool_id, (0, 0.0))
            wanted = workers > 0 and ttl > 0 and time.time() - asked < ttl
            sets = [(p, t) for p, t in self.sets.get(pool_id, []) if p.alive() and wanted]
            surplus += [p for p, _ in self.sets.get(pool_id, []) if not (p.alive() and wanted)]
            self.sets[pool_id] = sets
            set_instances = self._set_instances(pool_id)
            set_pending = self.sets_pending.get(pool_id, 0)
            room = cap - used - len(idle) - pending - set_instances - set_pending if cap is not None else MAX_WARM
            # Above the minimum, idle instances go after their idle time; above the capacity, at once.
            while len(idle) > spec["min_idle_instances"] and (
                    room < 0 or (ttl and time.time() - idle[-1][1] > ttl) or ttl == 0):
                surplus.append(idle.pop()[0])
                room += 1
            self.idle[pool_id] = idle
            start = max(0, min(spec["min_idle_instances"] - len(idle) - pending, room))
            self.pending[pool_id] = pending + start
            room -= start
            if wanted and not sets and not set_pending and (cap is None or room >= workers + 1):
                start_set = workers
                self.sets_pending[pool_id] = workers + 1
        for procs in surplus:
            self._discard(procs)
        for _ in range(start):
            self._starter.submit(self._start_one, pool_id, spec["node_type_id"])
        if start_set:
            self._starter.submit(self._start_set, pool_id, spec["node_type_id"], start_set)

    def _start_set(self, pool_id: str, node_type_id: str, workers: int) -> None:
        instance_dir = self.root / f"{pool_id}-set-{secrets.token_hex(3)}"
        procs = None
        try:
            if not self._stop.is_set():
                procs = self.launcher.start_warm_set(instance_dir, node_type_id, workers)
                self.errors.pop(pool_id, None)
        except (LaunchError, OSError) as exc:
            if not self._stop.is_set():
                log.warning("pool %s: warm multi-node set failed: %s", pool_id, exc)
            self.errors[pool_id] = str(getattr(exc, "message", exc))[:1000]
            shutil.rmtree(instance_dir, ignore_errors=True)
        with self.lock:
            self.sets_pending[pool_id] = 0
            keep = procs is not None and not self._stop.is_set() and self._active(pool_id)
            if keep:
                self.sets.setdefault(pool_id, []).append((procs, time.time()))
        if procs is not None and not keep:
            self._discard(procs)

    def _start_one(self, pool_id: str, node_type_id: str) -> None:
        instance_dir = self.root / f"{pool_id}-{secrets.token_hex(3)}"
        procs = None
        try:
            if not self._stop.is_set():
                procs = self.launcher.start_warm(instance_dir, node_type_id)
                self.errors.pop(pool_id, None)
        except (LaunchError, OSError) as exc:
            if not self._stop.is_set():
                log.warning("pool %s: warm driver failed: %s", pool_id, exc)
            self.errors[pool_id] = str(getattr(exc, "message", exc))[:1000]
            shutil.rmtree(instance_dir, ignore_errors=True)
        with self.lock:
            self.pending[pool_id] = max(self.pending.get(pool_id, 1) - 1, 0)
            keep = procs is not None and not self._stop.is_set() and self._active(pool_id)
            if keep:
                self.idle.setdefault(pool_id, []).append((procs, time.time()))
        if procs is not None and not keep:
            self._discard(procs)

    def _active(self, pool_id: str) -> bool:
        with self.store.session() as sess:
            pool = sess.get(InstancePool, pool_id)
            return pool is not None and pool.state == ACTIVE

    def _discard(self, procs: ClusterProcesses) -> None:
        try:
            self.launcher.stop(procs)
        except Exception:  # noqa: BLE001
            log.exception("stopping a pool instance")

    def _tick_loop(self) -> None:
        while not self._stop.wait(2.0):
            try:
                with self.store.session() as sess:
                    ids = list(sess.scalars(select(InstancePool.instance_pool_id)
                                            .where(InstancePool.state == ACTIVE)))
                for pool_id in ids:
                    self._refill(pool_id)
            except Exception:  # noqa: BLE001
                log.exception("pool supervisor tick failed")

    def close(self) -> None:
        self._stop.set()
        self._starter.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            idle = [p for items in list(self.idle.values()) + list(self.sets.values()) for p, _ in items]
            self.idle.clear()
            self.sets.clear()
        for procs in idle:
            self._discard(procs)
        # A set still starting: its standalone daemons lead their own sessions and would outlive us.
        if self.root.exists():
            for instance_dir in self.root.iterdir():
                stop_recorded(instance_dir / "standalone")


def driver_pool(spec: dict) -> str | None:
    return spec.get("driver_instance_pool_id") or spec.get("instance_pool_id")


def instances_needed(spec: dict, workers: int | None = None) -> dict[str, int]:
    """Instances a cluster takes from its pools: the driver from the driver pool, workers from the pool."""
    need: dict[str, int] = {}
    if driver_pool(spec):
        need[driver_pool(spec)] = 1
    if spec.get("instance_pool_id"):
        if workers is None:
            workers = spec["autoscale"]["min_workers"] if spec.get("autoscale") else spec.get("num_workers") or 0
        need[spec["instance_pool_id"]] = need.get(spec["instance_pool_id"], 0) + workers
    return need
