"""The secret-backend interface: where the values of one kind of scope live.

A backend stores or fetches values only; the secrets service owns scopes, ACLs and
validation and calls a backend after the caller's permission is checked. Backends raise
BrickyardError (never HTTP errors) and never put a value into a message.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass

from sqlalchemy.orm import Session

from brickyard.errors import invalid


@dataclass(frozen=True)
class ScopeRef:
    """What a backend needs to know about a scope (a snapshot of its row)."""

    id: int
    name: str
    backend_type: str
    dns_name: str | None = None
    resource_id: str | None = None


@dataclass(frozen=True)
class KeyInfo:
    key: str
    last_updated_timestamp: int


class SecretBackend(abc.ABC):
    """Part 1 (must implement): get and list_keys. Part 2: put/delete for writable backends.

    `sess` is the caller's open metadata-store transaction; backends that keep values in
    the store use it (so a check and a write are one transaction), others ignore it.
    """

    #: Read-only backends refuse put/delete through our API (values are managed elsewhere).
    read_only: bool = False
    #: The scope_backend_type this backend serves, and its name in messages.
    backend_type: str = ""
    display_name: str = ""

    @abc.abstractmethod
    def get(self, sess: Session, scope: ScopeRef, key: str) -> bytes:
        """Return the value's bytes; raise RESOURCE_DOES_NOT_EXIST when the key is missing."""

    @abc.abstractmethod
    def list_keys(self, sess: Session, scope: ScopeRef) -> list[KeyInfo]:
        """Return the keys of the scope with their last-update times (never values)."""

    def put(self, sess: Session, scope: ScopeRef, key: str, value: bytes) -> None:
        """Create or overwrite a value."""
        raise self.read_only_error(scope)

    def delete(self, sess: Session, scope: ScopeRef, key: str) -> None:
        """Delete a value; raise RESOURCE_DOES_NOT_EXIST when the key is missing."""
        raise self.read_only_error(scope)

    def drop_scope(self, sess: Session, scope: ScopeRef) -> None:
        """Forget everything this backend keeps for a scope that is being deleted."""

    def close(self) -> None:
        """Release clients and connections."""

    def read_only_error(self, scope: ScopeRef):  # noqa: ANN201
        return invalid(
            f"Scope {scope.name} is backed by {self.display_name} and is read-only through this "
            "API; change its secrets in the backing store itself."
        )
