"""Workspace-managed secrets: AES-256-GCM ciphertext in the metadata store."""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from brickyard.errors import not_found
from brickyard.secrets.base import KeyInfo, ScopeRef, SecretBackend
from brickyard.secrets.crypto import Keyring, secret_aad
from brickyard.services.common import now_ms
from brickyard.store.models import Secret


class ManagedBackend(SecretBackend):
    """Values encrypted under the workspace's secret data key, scope and key bound as AAD."""

    backend_type = "DATABRICKS"
    display_name = "the workspace"

    def __init__(self, keyring: Keyring):
        self.keyring = keyring

    def _row(self, sess: Session, scope: ScopeRef, key: str) -> Secret | None:
        return sess.scalar(select(Secret).where(Secret.scope_id == scope.id, Secret.key == key))

    def get(self, sess: Session, scope: ScopeRef, key: str) -> bytes:
        row = self._row(sess, scope, key)
        if row is None:
            raise not_found(f"Secret {key} does not exist in scope {scope.name}.")
        return self.keyring.decrypt(row.ciphertext, secret_aad(scope.name, key))

    def list_keys(self, sess: Session, scope: ScopeRef) -> list[KeyInfo]:
        rows = sess.execute(
            select(Secret.key, Secret.last_updated_timestamp)
            .where(Secret.scope_id == scope.id)
            .order_by(Secret.key)
        )
        return [KeyInfo(key, ts) for key, ts in rows]

    def put(self, sess: Session, scope: ScopeRef, key: str, value: bytes) -> None:
        blob = self.keyring.encrypt(value, secret_aad(scope.name, key))
        row = self._row(sess, scope, key)
        if row is None:
            sess.add(Secret(scope_id=scope.id, key=key, ciphertext=blob, last_updated_timestamp=now_ms()))
        else:
            row.ciphertext = blob
            row.last_updated_timestamp = now_ms()
        sess.flush()

    def delete(self, sess: Session, scope: ScopeRef, key: str) -> None:
        row = self._row(sess, scope, key)
        if row is None:
            raise not_found(f"Secret {key} does not exist in scope {scope.name}.")
        sess.delete(row)

    def drop_scope(self, sess: Session, scope: ScopeRef) -> None:
        sess.execute(delete(Secret).where(Secret.scope_id == scope.id))
