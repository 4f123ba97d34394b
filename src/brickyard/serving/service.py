"""Serving endpoints: the config state machine in the store, advanced by a supervisor that owns
the worker processes and switches the router when a new config answers."""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select

from brickyard.errors import BrickyardError, already_exists, denied, invalid, not_found
from brickyard.serving import config as cfg
from brickyard.serving.metrics import Metrics
from brickyard.serving.pool import FAILED, STOPPED, ServedVersion, StartError, tail
from brickyard.serving.proxy import Router
from brickyard.services.common import now_ms
from brickyard.services.users import Principal
from brickyard.store.models import ServingEndpointRow

log = logging.getLogger(__name__)

NOT_UPDATING, IN_PROGRESS, UPDATE_FAILED = "NOT_UPDATING", "IN_PROGRESS", "UPDATE_FAILED"
READ_CHUNK = 4 << 20
# What makes a running served version reusable by a new config unchanged.
IDENTITY = ("entity_name", "entity_version", "workload_size", "scale_to_zero_enabled", "environment_vars")


class ServingService:
    def __init__(self, ws, settings: cfg.ServingSettings | None = None):  # noqa: ANN001
        self.ws = ws
        self.settings = settings or cfg.ServingSettings()
        self.root = ws.settings.home / "serving"
        self.metrics = Metrics()
        s = self.settings
        self.router = Router(self.metrics, s.request_timeout, min(s.start_timeout, s.request_timeout),
                             s.retry_after_seconds)
        self.live: dict[str, dict[str, ServedVersion]] = {}  # endpoint -> served name -> running version
        self.starting: dict[tuple[str, str], ServedVersion] = {}  # versions of a config being rolled out
        self._busy: set[str] = set()  # endpoints with a deploy running
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="serving-deploy")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._recover()
        self._thread = threading.Thread(target=self._supervise, name="serving-supervisor", daemon=True)
        self._thread.start()

    # ---- store -----------------------------------------------------------------------------
    def _row(self, sess, name: object) -> ServingEndpointRow:  # noqa: ANN001
        if not isinstance(name, str) or not name:
            raise invalid("The endpoint name is required.")
        row = sess.get(ServingEndpointRow, name)
        if row is None:
            raise not_found(f"Serving endpoint {name!r} does not exist.")
        return row

    @staticmethod
    def _may_manage(caller: Principal, row: ServingEndpointRow) -> None:
        if not caller.is_admin and caller.id != row.creator_user_id:
            raise denied(f"User {caller.user_name} cannot manage serving endpoint {row.name!r} "
                         f"(only its creator {row.creator_user_name} and admins can).")

    def _check_models(self, config: dict) -> None:
        """Every served entity names an existing registered model version."""
        from mlflow.exceptions import MlflowException

        registry = self.ws.services["mlflow"].registry_store()
        for e in config["served_entities"]:
            try:
                registry.get_model_version(e["entity_name"], e["entity_version"])
            except MlflowException:
                raise not_found(f"Model {e['entity_name']!r} has no version {e['entity_version']}.") from None

    # ---- API operations ----------------------------------------------------------------------
    def create(self, caller: Principal, body: dict) -> dict:
        name = body.get("name")
        if not isinstance(name, str) or not cfg.NAME_RE.match(name):
            raise invalid("name is required: letters, digits, '-' and '_' only, 63 characters at most.")
        raw = body.get("config")
        if raw is None:
            raise invalid("config is required: the served entities of the endpoint.")
        config = cfg.normalize(raw)
        self._check_models(config)
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, dict) and isinstance(t.get("key"), str) for t in tags):
            raise invalid("tags must be a list of {key, value} objects.")
        now = now_ms()
        for e in config["served_entities"]:
            e.update(creator=caller.user_name, creation_timestamp=now)
        config.update(config_version=1, start_time=now)
        with self.ws.store.session() as sess:
            if sess.get(ServingEndpointRow, name) is not None:
                raise already_exists(f"Serving endpoint with name {name!r} already exists.")
            sess.add(ServingEndpointRow(
                name=name, endpoint_id=secrets.token_hex(16), creator_user_id=caller.id,
                creator_user_name=caller.user_name, created_at=now, updated_at=now,
                description=str(body.get("description") or ""), tags=json.dumps(tags), config=None,
                pending_config=json.dumps(config), config_update=IN_PROGRESS, update_message=""))
        self._wake.set()
        return self.get(caller, name)

    def update_config(self, caller: Principal, name: str, body: dict) -> dict:
        config = cfg.normalize(body)
        self._check_models(config)
        with self.ws.store.session() as sess:
            row = self._row(sess, name)
            self._may_manage(caller, row)
            if row.config_update == IN_PROGRESS:
                raise BrickyardError("RESOURCE_CONFLICT", f"Serving endpoint {name!r} is already being updated; "
                                     "wait until the current update finishes or fails.")
            current = json.loads(row.config) if row.config else {}
            before = {e["name"]: e for e in current.get("served_entities", [])}
            now = now_ms()
            for e in config["served_entities"]:
                old = before.get(e["name"])
                same = old is not None and all(old.get(k) == e.get(k) for k in IDENTITY)
                e.update(creator=old["creator"] if same else caller.user_name,
                         creation_timestamp=old["creation_timestamp"] if same else now)
            last = max(current.get("config_version", 0),
                       json.loads(row.pending_config).get("config_version", 0) if row.pending_config else 0)
            config.update(config_version=last + 1, start_time=now)
            row.pending_config = json.dumps(config)
            row.config_update, row.update_message, row.updated_at = IN_PROGRESS, "", now
        self._wake.set()
        return self.get(caller, name)

    def delete(self, caller: Principal, name: str) -> None:
        with self.ws.store.session() as sess:
            row = self._row(sess, name)
            self._may_manage(caller, row)
            sess.delete(row)
        with self._lock:
            self.router.remove(name)
            versions = list(self.live.pop(name, {}).values())
        self.metrics.drop(name)
        for sv in versions:
            self._pool.submit(self._retire, sv)

    def get(self, caller: Principal, name: str) -> dict:
        with self.ws.store.session() as sess:
            row = self._row(sess, name)
            return self._view(caller, row)

    def list(self, caller: Principal) -> list[dict]:
        with self.ws.store.session() as sess:
            rows = list(sess.scalars(select(ServingEndpointRow).order_by(ServingEndpointRow.name)))
            out = []
            for row in rows:
                full = self._view(caller, row)
                summary = {k: full[k] for k in ("name", "id", "creator", "creation_timestamp",
                                                "last_updated_timestamp", "state", "tags", "task") if k in full}
                served = (full.get("config") or full.get("pending_config") or {}).get("served_entities", [])
                summary["config"] = {
                    "served_entities": [{k: e[k] for k in ("name", "entity_name", "entity_version")} for e in served],
                    "served_models": [{"name": e["name"], "model_name": e["entity_name"],
                                       "model_version": e["entity_version"]} for e in served]}
                out.append(summary)
            return out

    def logs(self, caller: Principal, name: str, served: str, build: bool = False) -> str:
        """A served model's worker (or build) log: its creator's and admins' to read, like changes."""
        with self.ws.store.session() as sess:
            row = self._row(sess, name)
            self._may_manage(caller, row)
            known = set()
            for blob in (row.config, row.pending_config):
                if blob:
                    known.update(e["name"] for e in json.loads(blob)["served_entities"])
        if served not in known:
            raise not_found(f"Serving endpoint {name!r} has no served model {served!r}.")
        folder = self.root / "run" / name / served
        runs = sorted(folder.glob("*/worker.log"), key=lambda p: p.stat().st_mtime) if folder.exists() else []
        if build:
            return tail(folder / "build.log")
        return tail(runs[-1]) if runs else ""

    def export_metrics(self, caller: Principal, name: str) -> str:
        """The endpoint's metrics (Prometheus text) for the API: its creator and admins only."""
        with self.ws.store.session() as sess:
            self._may_manage(caller, self._row(sess, name))
        return self.metrics.render(name)

    async def invoke(self, name: str, body: bytes) -> tuple[int, dict, bytes]:
        answer = await self.router.invoke(name, body)
        if answer is not None:
            return answer
        # No routes: the endpoint does not exist, is still being created, or never came up.
        with self.ws.store.session() as sess:
            row = sess.get(ServingEndpointRow, name)
            state = None if row is None else (row.config_update, row.update_message, row.config is not None)
        if state is None:
            raise not_found(f"Serving endpoint {name!r} does not exist.")
        update, message, has_config = state
        if update == UPDATE_FAILED and not has_config:
            raise BrickyardError("INVALID_STATE", f"Serving endpoint {name!r} failed to deploy: {message}")
        return self.router.unavailable(f"Serving endpoint {name!r} is not ready yet; retry shortly.")

    def worker_pids(self, name: str, served: str) -> list[int]:
        sv = self.live.get(name, {}).get(served)
        return sv.pids() if sv else []

    # ---- the view (ServingEndpointDetailed) --------------------------------------------------
    def _entity_view(self, endpoint: str, e: dict, live: ServedVersion | None) -> dict:
        out = {k: e[k] for k in ("name", "entity_name", "entity_version", "workload_size", "scale_to_zero_enabled",
                                 "creator", "creation_timestamp") if k in e}
        out["workload_type"] = "CPU"
        if e.get("environment_vars"):
            out["environment_vars"] = e["environment_vars"]
        if "state" in e:
            out["state"] = e["state"]
        elif live is not None:
            deployment, message = live.deployment_state()
            out["state"] = {"deployment": deployment, "deployment_state_message": message}
        else:
            out["state"] = {"deployment": "DEPLOYMENT_CREATING", "deployment_state_message": "Waiting to start."}
        return out

    def _config_view(self, endpoint: str, config: dict, pending: bool) -> dict:
        entities = []
        for e in config["served_entities"]:
            live = (self.starting.get((endpoint, e["name"])) if pending
                    else self.live.get(endpoint, {}).get(e["name"]))
            entities.append(self._entity_view(endpoint, e, live))
        routes = [{"served_model_name": r["served_model_name"], "served_entity_name": r["served_model_name"],
                   "traffic_percentage": r["traffic_percentage"]} for r in config["traffic_config"]["routes"]]
        out = {"config_version": config["config_version"], "served_entities": entities,
               "served_models": [{"name": e["name"], "model_name": e["entity_name"],
                                  "model_version": e["entity_version"], "workload_size": e["workload_size"],
                                  "scale_to_zero_enabled": e["scale_to_zero_enabled"], "state": e["state"]}
                                 for e in entities],
               "traffic_config": {"routes": routes}}
        if pending:
            out["start_time"] = config.get("start_time")
        return out

    def _view(self, caller: Principal, row: ServingEndpointRow) -> dict:
        out = {"name": row.name, "id": row.endpoint_id, "creator": row.creator_user_name,
               "creation_timestamp": row.created_at, "last_updated_timestamp": row.updated_at,
               "tags": json.loads(row.tags),
               "endpoint_url": f"{self.ws.settings.base_url}/serving-endpoints/{row.name}/invocations",
               "permission_level": "CAN_MANAGE" if caller.is_admin or caller.id == row.creator_user_id
               else "CAN_QUERY"}
        if row.description:
            out["description"] = row.description
        ready = False
        if row.config:
            out["config"] = self._config_view(row.name, json.loads(row.config), pending=False)
            ready = all(e["state"]["deployment"] == "DEPLOYMENT_READY" for e in out["config"]["served_entities"])
        if row.pending_config:
            out["pending_config"] = self._config_view(row.name, json.loads(row.pending_config), pending=True)
        out["state"] = {"ready": "READY" if ready else "NOT_READY", "config_update": row.config_update}
        if row.update_message:
            out["state"]["config_update_message"] = row.update_message  # not in the SDK's model; for humans
        return {k: v for k, v in out.items() if v is not None}

    # ---- supervisor --------------------------------------------------------------------------
    def _recover(self) -> None:
        """After a restart: serve every active config again, and resume updates in progress."""
        with self.ws.store.session() as sess:
            rows = [(r.name, r.config) for r in sess.scalars(select(ServingEndpointRow)) if r.config]
        for name, blob in rows:
            self._busy.add(name)
            self._pool.submit(self._deploy, name, json.loads(blob), True)

    def _supervise(self) -> None:
        last_scan = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            for versions in list(self.live.values()):
                for sv in list(versions.values()):
                    try:
                        sv.tick(now)
                    except Exception:  # noqa: BLE001 - one bad version must not stop the supervisor
                        log.exception("serving supervisor: %s/%s", sv.endpoint, sv.name)
            if self._wake.is_set() or now - last_scan > 2.0:
                self._wake.clear()
                last_scan = now
                try:
                    self._start_pending()
                except BrickyardError as exc:
                    log.warning("serving supervisor: %s", exc.message)
            self._stop.wait(0.1)

    def _start_pending(self) -> None:
        with self.ws.store.session() as sess:
            rows = [(r.name, r.pending_config) for r in sess.scalars(
                select(ServingEndpointRow).where(ServingEndpointRow.config_update == IN_PROGRESS))]
        for name, blob in rows:
            with self._lock:
                if name in self._busy:
                    continue
                self._busy.add(name)
            self._pool.submit(self._deploy, name, json.loads(blob), False)

    def _prepare_model(self, entity: dict, build_log) -> Path:  # noqa: ANN001
        """A local copy of a model version's files (copied once from DBFS, then reused)."""
        key = hashlib.sha256(entity["entity_name"].encode()).hexdigest()[:16]
        target = self.root / "models" / key / entity["entity_version"]
        if (target / "MLmodel").exists():
            return target
        mlflow_svc = self.ws.services["mlflow"]
        root = mlflow_svc.version_root(entity["entity_name"], entity["entity_version"])
        storage = self.ws.services["dbfs"].storage
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        build_log(f"copying model files from dbfs:{root}")
        count = 0
        stack = [root]
        while stack:
            folder = stack.pop()
            for entry in storage.list(folder):
                rel = entry.path[len(root):].lstrip("/")
                if entry.is_dir:
                    stack.append(entry.path)
                    continue
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with open(dest, "wb") as fh:
                    offset = 0
                    while True:
                        chunk = storage.read(entry.path, offset, READ_CHUNK)
                        if not chunk:
                            break
                        fh.write(chunk)
                        offset += len(chunk)
                count += 1
        if not (tmp / "MLmodel").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise invalid(f"Model {entity['entity_name']} version {entity['entity_version']} has no MLmodel file.")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(target)
        except OSError:  # another deploy copied it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        build_log(f"copied {count} files")
        return target

    def _deploy(self, name: str, config: dict, recovering: bool) -> None:
        """Start the config's new served versions; switch to them once all answer, else fail the update."""
        try:
            self._deploy_inner(name, config, recovering)
        except Exception as exc:  # noqa: BLE001 - recorded as the update's failure
            log.exception("serving: deploying %s failed", name)
            if not recovering:
                self._finish(name, config, None, f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._busy.discard(name)
            self._wake.set()

    def _deploy_inner(self, name: str, config: dict, recovering: bool) -> None:
        current = dict(self.live.get(name, {}))
        chosen: dict[str, ServedVersion] = {}
        started: list[ServedVersion] = []
        failure = None
        for e in config["served_entities"]:
            old = current.get(e["name"])
            if old is not None and old.state not in (FAILED, STOPPED) and \
                    all(old.entity.get(k) == e.get(k) for k in IDENTITY):
                chosen[e["name"]] = old
                continue
            run_dir = self.root / "run" / name / e["name"] / f"v{config['config_version']}-{secrets.token_hex(3)}"
            run_dir.mkdir(parents=True, exist_ok=True)
            build_path = run_dir.parent / "build.log"

            def build_log(line: str, _path: Path = build_path) -> None:
                with open(_path, "a") as fh:
                    fh.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")

            procs, threads = cfg.sizing(e["workload_size"], self.settings.max_processes)
            try:
                model_dir = self._prepare_model(e, build_log)
            except BrickyardError as exc:
                failure = (e["name"], exc.message)
                build_log(f"failed: {exc.message}")
                break
            sv = ServedVersion(name, e, model_dir, run_dir, procs, threads, self.settings.idle_seconds)
            self.starting[(name, e["name"])] = sv
            started.append(sv)
            build_log(f"starting {procs} worker process(es) x {threads} threads")
            try:
                sv.start(self.settings.start_timeout)
                build_log("ready")
            except StartError as exc:
                failure = (e["name"], str(exc))
                build_log(f"failed: {exc}")
                break
            chosen[e["name"]] = sv
        if failure is None and not self._exists(name):
            failure = ("", "the endpoint was deleted")
        if failure is not None:
            for sv in started:
                sv.stop()
            for sv in started:
                self.starting.pop((name, sv.name), None)
            if not recovering:
                self._finish(name, config, failure[0], failure[1])
            return
        with self._lock:
            self.live[name] = chosen
            self.router.install(name, [(chosen[r["served_model_name"]], r["traffic_percentage"])
                                       for r in config["traffic_config"]["routes"]])
            for sv in started:
                self.starting.pop((name, sv.name), None)
        if not recovering:
            self._finish(name, config, None, None)
        for old in current.values():
            if old not in chosen.values():
                self._retire(old)

    def _exists(self, name: str) -> bool:
        with self.ws.store.session() as sess:
            return sess.get(ServingEndpointRow, name) is not None

    def _finish(self, name: str, config: dict, failed_entity: str | None, reason: str | None) -> None:
        """Record the outcome of an update in the store."""
        with self.ws.store.session() as sess:
            row = sess.get(ServingEndpointRow, name)
            if row is None:
                return
            pending = json.loads(row.pending_config) if row.pending_config else None
            if pending is None or pending.get("config_version") != config.get("config_version"):
                return  # a newer update replaced this one
            row.updated_at = now_ms()
            if reason is None:
                config = {k: v for k, v in config.items() if k != "start_time"}
                row.config, row.pending_config = json.dumps(config), None
                row.config_update, row.update_message = NOT_UPDATING, ""
                return
            for e in pending["served_entities"]:
                e["state"] = ({"deployment": "DEPLOYMENT_FAILED", "deployment_state_message": reason}
                              if e["name"] == failed_entity or not failed_entity else
                              {"deployment": "DEPLOYMENT_ABORTED",
                               "deployment_state_message": f"The update failed on {failed_entity}."})
            row.pending_config = json.dumps(pending)
            row.config_update = UPDATE_FAILED
            row.update_message = f"{failed_entity}: {reason}" if failed_entity else reason

    def _retire(self, sv: ServedVersion) -> None:
        """Stop a version no longer routed to, once the requests it already has are answered."""
        deadline = time.monotonic() + self.settings.request_timeout
        while sv.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        ports = list(sv.ready_ports)
        sv.stop()
        self.router.forget_ports(ports)

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            versions = [sv for vs in self.live.values() for sv in vs.values()] + list(self.starting.values())
            self.live.clear()
        for sv in versions:
            sv.stop()
