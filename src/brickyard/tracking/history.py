"""The history of registry stage and alias changes: who, when, from, to (in the workspace DB)."""
from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import BigInteger, Integer, String, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from brickyard.store.db import Store
from brickyard.store.models import Base

STAGE = "STAGE"
ALIAS = "ALIAS"
MAX_EVENTS = 10_000


class MlflowRegistryEvent(Base):
    """One stage or alias change of a registered model (table from migration 0004)."""

    __tablename__ = "mlflow_registry_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # STAGE | ALIAS
    # STAGE: the version whose stage changed. ALIAS: the alias; from/to are versions (None = unset).
    version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    alias: Mapped[str | None] = mapped_column(String(256), nullable=True)
    from_value: Mapped[str | None] = mapped_column(String(64), nullable=True)
    to_value: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    user_name: Mapped[str] = mapped_column(String(256), nullable=False)
    timestamp: Mapped[int] = mapped_column(BigInteger, nullable=False)


@dataclass(frozen=True)
class Snapshot:
    """The stage of every live version and the version of every alias of one registered model."""

    stages: dict[str, str]
    aliases: dict[str, str]


def changes(before: Snapshot, after: Snapshot) -> list[tuple[str, str | None, str | None, str | None, str | None]]:
    """(kind, version, alias, from, to) for every difference between two snapshots."""
    out = []
    for version, stage in sorted(after.stages.items(), key=lambda kv: int(kv[0])):
        old = before.stages.get(version)
        if old is not None and old != stage:
            out.append((STAGE, version, None, old, stage))
    for alias in sorted(set(before.aliases) | set(after.aliases)):
        old, new = before.aliases.get(alias), after.aliases.get(alias)
        if old != new:
            out.append((ALIAS, None, alias, old, new))
    return out


def model_lock_key(name: str) -> int:
    """The pg_advisory_xact_lock key of one registered model (a signed 64-bit hash of its name)."""
    digest = hashlib.blake2b(b"brickyard-registry\0" + name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Change:
    """The history side of one change of a registered model: its events, or its new name."""

    def __init__(self, store: Store, name: str, sess: Session | None):
        self.store, self.name, self.sess = store, name, sess

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        if self.sess is not None:  # the transaction holding the model's lock
            yield self.sess
        else:
            with self.store.session() as sess:
                yield sess

    def record(self, events: list, user_id: int | None, user_name: str) -> None:
        if not events:
            return
        now = int(time.time() * 1000)
        with self._session() as sess:
            for kind, version, alias, old, new in events:
                sess.add(MlflowRegistryEvent(
                    model_name=self.name, kind=kind, version=version, alias=alias, from_value=old, to_value=new,
                    user_id=user_id, user_name=user_name, timestamp=now))

    def rename(self, new_name: str) -> None:
        with self._session() as sess:
            sess.execute(update(MlflowRegistryEvent).where(MlflowRegistryEvent.model_name == self.name)
                         .values(model_name=new_name))


class RegistryHistory:
    """Appends and reads registry events."""

    def __init__(self, store: Store):
        self.store = store
        self._postgres = store.engine.dialect.name == "postgresql"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @contextlib.contextmanager
    def changing(self, name: str) -> Iterator[Change]:
        """One change of model `name` at a time, so that each diff of the registry belongs to one request.

        On PostgreSQL several workspace processes may share the registry, so the lock is the database's:
        pg_advisory_xact_lock on the model's name, held by the transaction that then writes the events
        (and released by its commit). SQLite has one workspace process (the home's lock), so a lock per
        model in this process is enough there.
        """
        if self._postgres:
            with self.store.session(lock=model_lock_key(name)) as sess:
                yield Change(self.store, name, sess)
            return
        with self._locks_guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield Change(self.store, name, None)

    def list(self, name: str, version: str | None = None) -> list[dict]:
        """Events of a model (oldest first); with a version, its stage changes and alias moves."""
        query = select(MlflowRegistryEvent).where(MlflowRegistryEvent.model_name == name)
        if version is not None:
            query = query.where(or_(
                (MlflowRegistryEvent.kind == STAGE) & (MlflowRegistryEvent.version == version),
                (MlflowRegistryEvent.kind == ALIAS)
                & or_(MlflowRegistryEvent.from_value == version, MlflowRegistryEvent.to_value == version),
            ))
        query = query.order_by(MlflowRegistryEvent.id).limit(MAX_EVENTS)
        with self.store.session() as sess:
            return [_public(row) for row in sess.scalars(query)]


def _public(row: MlflowRegistryEvent) -> dict:
    out = {"id": str(row.id), "name": row.model_name, "kind": row.kind, "user_name": row.user_name,
           "timestamp": row.timestamp}
    if row.kind == STAGE:
        out.update(version=row.version, from_stage=row.from_value, to_stage=row.to_value)
    else:
        out["alias"] = row.alias
        if row.from_value is not None:
            out["from_version"] = row.from_value
        if row.to_value is not None:
            out["to_version"] = row.to_value
    if row.user_id is not None:
        out["user_id"] = str(row.user_id)
    return out
