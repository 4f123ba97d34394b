"""The tracking service of a workspace: MLflow's stores, artifacts, registry files and history."""
from __future__ import annotations

import logging
import threading
import time

from brickyard.errors import BrickyardError, invalid, not_found
from brickyard.tracking.artifacts import StoreArtifacts, check_artifact_path, store_dbfs_path
from brickyard.tracking.history import RegistryHistory

log = logging.getLogger(__name__)
MAX_SOURCE_HOPS = 4  # models:/name/version may point at another registered version
# Runs log in bursts of small requests: a token checked in the last few seconds is not looked
# up again (a deleted token or deactivated user loses MLflow access within this many seconds).
AUTH_CACHE_SECONDS = 5.0
AUTH_CACHE_MAX = 1024


class AuthCache:
    """Principals of recently checked tokens, keyed by a hash of the token."""

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def get(self, key: bytes):  # noqa: ANN201
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: bytes, principal) -> None:  # noqa: ANN001
        with self._lock:
            if len(self._entries) >= AUTH_CACHE_MAX:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + AUTH_CACHE_SECONDS, principal)


def from_mlflow(exc: Exception) -> BrickyardError:
    """MLflow's error as ours (same Databricks error codes)."""
    code = getattr(exc, "error_code", "INTERNAL_ERROR") or "INTERNAL_ERROR"
    message = getattr(exc, "message", None) or str(exc)
    return BrickyardError(code, message)


class TrackingService:
    """MLflow for one workspace; the SQL stores open on first use (MLflow migrates its schema then)."""

    def __init__(self, ws):  # noqa: ANN001
        self.ws = ws
        self.history = RegistryHistory(ws.store)
        self._lock = threading.Lock()
        self._tracking = None
        self._registry = None
        self._artifacts: StoreArtifacts | None = None
        self.auth_cache = AuthCache()

    @property
    def artifacts(self) -> StoreArtifacts:
        if self._artifacts is None:
            self._artifacts = StoreArtifacts(self.ws.services["dbfs"].storage)
        return self._artifacts

    def _open(self) -> None:
        with self._lock:
            if self._tracking is not None:
                return
            from brickyard.tracking.stores import RegistryStore, TrackingStore, mlflow_db_url, prepared_database

            url = mlflow_db_url(self.ws.settings)
            with prepared_database(self.ws.settings, url):  # MLflow migrates its schema as the stores open
                tracking = TrackingStore(url, "dbfs:/databricks/mlflow-tracking")
                self._registry = RegistryStore(url, self.history)
            self._tracking = tracking
            log.info("MLflow stores opened (%s)", url.split("?")[0])

    def tracking_store(self):
        if self._tracking is None:
            self._open()
        return self._tracking

    def registry_store(self):
        if self._registry is None:
            self._open()
        return self._registry

    def close(self) -> None:
        for store in (self._tracking, self._registry):
            engine = getattr(store, "engine", None)
            if engine is not None:
                engine.dispose()

    # -- registered model files, for Databricks clients (DatabricksModelsArtifactRepository) ---
    def _call(self, fn, *args):  # noqa: ANN001, ANN202
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args)
        except MlflowException as exc:
            raise from_mlflow(exc) from None

    def version_root(self, name: str, version: str) -> str:
        """The DBFS folder holding a model version's files."""
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository
        from mlflow.store.artifact.utils.models import _parse_model_uri

        source = self._call(self.registry_store().get_model_version, name, version).source
        for _ in range(MAX_SOURCE_HOPS):
            scheme = source.split(":", 1)[0].lower()
            if scheme == "models":
                parsed = self._call(_parse_model_uri, source)
                if parsed.model_id:
                    logged = self._call(self.tracking_store().get_logged_model, parsed.model_id)
                    return store_dbfs_path(logged.artifact_location)
                registry = self.registry_store()
                if parsed.alias:
                    target = self._call(registry.get_model_version_by_alias, parsed.name, parsed.alias)
                elif parsed.version:
                    target = self._call(registry.get_model_version, parsed.name, parsed.version)
                else:
                    raise invalid(f"Model version source {source!r} names no version.")
                source = target.source
            elif scheme == "runs":
                run_id, path = self._call(RunsArtifactRepository.parse_runs_uri, source)
                run = self._call(self.tracking_store().get_run, run_id)
                root = store_dbfs_path(run.info.artifact_uri)
                return root + ("/" + path.strip("/") if path and path.strip("/") else "")
            else:
                return store_dbfs_path(source)
        raise invalid(f"Model version {name}/{version}: its source refers to too many other versions.")

    def _version_path(self, name: str, version: str, path: str | None) -> tuple[str, str]:
        if path:
            check_artifact_path(path)
        rel = (path or "").rstrip("/")
        root = self.version_root(name, version)
        return root, root + ("/" + rel if rel else "")

    def list_version_files(self, name: str, version: str, path: str | None) -> list[dict]:
        """The entries of a folder of a version's files, with paths relative to the version."""
        root, target = self._version_path(name, version, path)
        storage = self.ws.services["dbfs"].storage
        try:
            entries = storage.list(target)
        except BrickyardError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise not_found(f"Model version {name}/{version} has no file or folder {path or ''!r}.") from None
            raise
        out = []
        for e in entries:
            rel = e.path[len(root):].lstrip("/")
            if rel.rsplit("/", 1)[-1].startswith("._mlflow_tmp"):
                continue  # an upload in progress
            item = {"path": rel, "is_dir": e.is_dir}
            if not e.is_dir:
                item["file_size"] = e.size
            out.append(item)
        return out

    def version_download_url(self, base_url: str, name: str, version: str, path: str | None) -> dict:
        """A signed, short-lived URL for one file of a model version."""
        _, target = self._version_path(name, version, path)
        dbfs = self.ws.services["dbfs"]
        info = dbfs.get_status(target)
        if info.is_dir:
            raise invalid(f"{path!r} is a folder of model version {name}/{version}, not a file.")
        signed = dbfs.signed_url(base_url, "GET", info.path)
        return {"signed_uri": signed["url"], "headers": signed.get("headers", [])}

    # -- history -------------------------------------------------------------------------------
    def history_of(self, name: str, version: str | None) -> list[dict]:
        events = self.history.list(name, version)
        if not events:
            # A model that never existed is an error; one without changes has an empty history.
            if version is None:
                self._call(self.registry_store().get_registered_model, name)
            else:
                self._call(self.registry_store().get_model_version, name, version)
        return events
