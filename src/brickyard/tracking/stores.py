"""MLflow's SQL stores with the workspace's rules: callers own their runs, artifacts stay in
the DBFS artifact store, and every registry stage or alias change is recorded."""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.prompt.constants import _PROMPT_SOURCE_PLACEHOLDERS
from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlRegisteredModelAlias
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as SqlRegistryStore
from mlflow.store.tracking.dbmodels.models import SqlLoggedModel
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as SqlTrackingStore
from mlflow.utils.mlflow_tags import MLFLOW_USER
from mlflow.utils.uri import append_to_uri_path
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from brickyard.errors import BrickyardError
from brickyard.settings import MLFLOW_SCHEMA, Settings
from brickyard.store.urls import is_postgres, with_search_path
from brickyard.tracking import embed
from brickyard.tracking.artifacts import canonical_uri, check_artifact_path, store_dbfs_path
from brickyard.tracking.history import RegistryHistory, Snapshot, changes

STAGE_DELETED = "Deleted_Internal"
LOGGED_MODELS_FOLDER = "logged_models"  # what Databricks clients expect (Files API "LoggedModels")


def mlflow_db_url(settings: Settings) -> str:
    """MLflow's own database: a SQLite file next to the workspace's, or schema `mlflow` of its PostgreSQL.

    MLflow runs its own Alembic migrations (with their own alembic_version table), so it
    cannot share the workspace's schema.
    """
    url = settings.db_url
    if url.startswith("sqlite"):
        return f"sqlite:///{settings.home / 'mlflow.db'}"
    if is_postgres(url):
        return with_search_path(url, MLFLOW_SCHEMA)
    raise BrickyardError("INTERNAL_ERROR", f"MLflow needs SQLite or PostgreSQL; got {url.split(':', 1)[0]}.")


MLFLOW_LOCK_KEY = 0x42726B4C  # pg_advisory_lock key held while MLflow migrates its schema


@contextlib.contextmanager
def prepared_database(settings: Settings, url: str) -> Iterator[None]:
    """SQLite in WAL mode (notebooks log concurrently); PostgreSQL gets the `mlflow` schema, and
    an advisory lock is held meanwhile, so that workspaces opening MLflow's stores at the same
    moment run its migrations one after the other."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        yield
        return
    engine = create_engine(settings.db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text(f"SELECT pg_advisory_lock({MLFLOW_LOCK_KEY})"))
            conn.commit()
            try:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{MLFLOW_SCHEMA}"'))
                conn.commit()
                yield
            finally:
                conn.execute(text(f"SELECT pg_advisory_unlock({MLFLOW_LOCK_KEY})"))
                conn.commit()
    finally:
        engine.dispose()


def _invalid(exc: BrickyardError) -> MlflowException:
    return MlflowException.invalid_parameter_value(exc.message)


def check_source(source: str) -> None:
    """A model version source may only name a logged model, a run, or a folder of the store."""
    if source in _PROMPT_SOURCE_PLACEHOLDERS:
        return
    try:
        scheme, sep, rest = source.partition(":")
        if sep and scheme.lower() in ("models", "runs"):
            check_artifact_path(rest, "model version source", relative=False)
            return
        store_dbfs_path(source)
    except BrickyardError as exc:
        raise _invalid(exc) from None


class TrackingStore(SqlTrackingStore):
    """Runs belong to the authenticated caller; experiments and logged models live in the store."""

    def create_experiment(self, name, artifact_location=None, tags=None):
        if artifact_location:
            try:
                artifact_location = canonical_uri(artifact_location)
            except BrickyardError as exc:
                raise _invalid(exc) from None
        return super().create_experiment(name, artifact_location, tags)

    def create_run(self, experiment_id, user_id, start_time, tags, run_name):
        caller = embed.CALLER.get()
        if caller is not None:
            user_id = caller.user_name
            tags = [t for t in (tags or []) if t.key != MLFLOW_USER] + [RunTag(MLFLOW_USER, caller.user_name)]
        return super().create_run(experiment_id, user_id, start_time, tags, run_name)

    def create_logged_model(self, experiment_id, *args, **kwargs):
        model = super().create_logged_model(experiment_id, *args, **kwargs)
        experiment = self.get_experiment(experiment_id)
        location = append_to_uri_path(experiment.artifact_location, LOGGED_MODELS_FOLDER, model.model_id,
                                      SqlTrackingStore.ARTIFACTS_FOLDER_NAME)
        with self.ManagedSessionMaker(read_only=False) as session:
            session.query(SqlLoggedModel).filter(SqlLoggedModel.model_id == model.model_id).update(
                {SqlLoggedModel.artifact_location: location})
        return self.get_logged_model(model.model_id)


class RegistryStore(SqlRegistryStore):
    """The registry, recording every stage and alias change in the workspace's history."""

    def __init__(self, db_uri: str, history: RegistryHistory):
        super().__init__(db_uri)
        self.history = history

    def _snapshot(self, name: str) -> Snapshot:
        with self.ManagedSessionMaker() as session:
            stages = {
                str(v): s for v, s in session.query(SqlModelVersion.version, SqlModelVersion.current_stage)
                .filter(SqlModelVersion.name == name, SqlModelVersion.current_stage != STAGE_DELETED)
            }
            aliases = {
                a: str(v) for a, v in session.query(SqlRegisteredModelAlias.alias, SqlRegisteredModelAlias.version)
                .filter(SqlRegisteredModelAlias.name == name)
            }
        return Snapshot(stages, aliases)

    @contextlib.contextmanager
    def _recorded(self, name: str) -> Iterator[None]:
        # One change at a time per model (across workspace processes on PostgreSQL), so that each
        # diff belongs to exactly one request.
        with self.history.changing(name) as change:
            before = self._snapshot(name)
            yield
            events = changes(before, self._snapshot(name))
            caller = embed.CALLER.get()
            change.record(events, caller.id if caller else None, caller.user_name if caller else "unknown")

    def create_model_version(self, name, source, run_id=None, tags=None, run_link=None, description=None,
                             local_model_path=None, model_id=None):
        check_source(source)
        if source.lower().startswith(("mlflow-artifacts:", "dbfs:")):
            source = canonical_uri(source)
        return super().create_model_version(name, source, run_id, tags, run_link, description,
                                            local_model_path, model_id)

    def transition_model_version_stage(self, name, version, stage, archive_existing_versions):
        with self._recorded(name):
            return super().transition_model_version_stage(name, version, stage, archive_existing_versions)

    def set_registered_model_alias(self, name, alias, version):
        with self._recorded(name):
            return super().set_registered_model_alias(name, alias, version)

    def delete_registered_model_alias(self, name, alias):
        with self._recorded(name):
            return super().delete_registered_model_alias(name, alias)

    def delete_model_version(self, name, version):
        with self._recorded(name):
            return super().delete_model_version(name, version)

    def rename_registered_model(self, name, new_name):
        with self.history.changing(name) as change:
            result = super().rename_registered_model(name, new_name)
            change.rename(new_name)
        return result

