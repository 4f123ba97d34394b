"""Secret scopes, secrets and their ACLs: validation and permissions; values live in backends."""
from __future__ import annotations

import base64
import binascii
import re

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from brickyard.errors import BrickyardError, already_exists, denied, invalid, not_found
from brickyard.secrets.azure_keyvault import AzureKeyVaultBackend, vault_url
from brickyard.secrets.base import KeyInfo, ScopeRef, SecretBackend
from brickyard.secrets.managed import ManagedBackend
from brickyard.services.common import now_ms
from brickyard.services.users import GROUPS, Principal, UserService
from brickyard.store.db import Store
from brickyard.store.models import SecretAcl, SecretScope

SCOPE_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,128}$")
KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_VALUE_BYTES = 128 * 1024
MAX_SECRETS_PER_SCOPE = 1000
LEVELS = {"READ": 1, "WRITE": 2, "MANAGE": 3}


def _ref(row: SecretScope) -> ScopeRef:
    return ScopeRef(row.id, row.name, row.backend_type, row.keyvault_dns_name, row.keyvault_resource_id)


def scope_info(row: SecretScope) -> dict:
    """A scope as scopes/list answers it."""
    info = {"name": row.name, "backend_type": row.backend_type}
    if row.backend_type == "AZURE_KEYVAULT":
        info["keyvault_metadata"] = {"resource_id": row.keyvault_resource_id, "dns_name": row.keyvault_dns_name}
    return info


def decode_value(string_value: object, bytes_value: object) -> bytes:
    """The bytes to store from exactly one of string_value / bytes_value (base64)."""
    if (string_value is None) == (bytes_value is None):
        raise invalid("Exactly one of string_value or bytes_value must be specified.")
    if string_value is not None:
        if not isinstance(string_value, str):
            raise invalid("string_value must be a string.")
        value = string_value.encode("utf-8")
    else:
        if not isinstance(bytes_value, str):
            raise invalid("bytes_value must be a base64-encoded string.")
        try:
            value = base64.b64decode(bytes_value, validate=True)
        except (binascii.Error, ValueError):
            # Never echo the value back.
            raise invalid("bytes_value is not valid base64.") from None
    if len(value) > MAX_VALUE_BYTES:
        raise invalid(f"The secret value is {len(value)} bytes; the limit is {MAX_VALUE_BYTES} bytes (128 KiB).")
    return value


def check_scope_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise invalid("Missing required field: scope")
    if not SCOPE_RE.match(name):
        raise invalid(
            f"Scope name {name[:200]!r} is not valid: use 1-128 letters, digits, '_', '.', '@' or '-'."
        )
    return name


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise invalid("Missing required field: key")
    if not KEY_RE.match(key):
        raise invalid(f"Key {key[:200]!r} is not valid: use 1-128 letters, digits, '_', '.' or '-'.")
    return key


class SecretService:
    def __init__(self, store: Store, users: UserService, backends: dict[str, SecretBackend]):
        self.store = store
        self.users = users
        self.backends = backends

    # -- permissions ---------------------------------------------------------------------

    def _scope(self, sess: Session, name: object) -> SecretScope:
        name = check_scope_name(name)
        row = sess.scalar(select(SecretScope).where(SecretScope.name == name))
        if row is None:
            raise not_found(f"Scope {name} does not exist!")
        return row

    def level(self, sess: Session, caller: Principal, scope: SecretScope) -> int:
        """The caller's effective permission: max over their own ACL and their groups'."""
        if caller.is_admin:
            return LEVELS["MANAGE"]
        principals = (caller.user_name, *caller.groups)
        perms = sess.scalars(
            select(SecretAcl.permission).where(SecretAcl.scope_id == scope.id, SecretAcl.principal.in_(principals))
        )
        return max((LEVELS.get(p, 0) for p in perms), default=0)

    def _require(self, sess: Session, caller: Principal, scope: SecretScope, needed: str) -> None:
        if self.level(sess, caller, scope) < LEVELS[needed]:
            raise denied(f"User {caller.user_name} does not have {needed} permission on scope {scope.name}.")

    def _backend(self, scope: SecretScope) -> SecretBackend:
        backend = self.backends.get(scope.backend_type)
        if backend is None:
            raise BrickyardError("INVALID_STATE", f"Scope {scope.name} has an unknown backend {scope.backend_type}.")
        return backend

    # -- scopes --------------------------------------------------------------------------

    def create_scope(
        self,
        sess: Session,
        caller: Principal,
        name: object,
        backend_type: object = None,
        keyvault: object = None,
        initial_manage_principal: object = None,
    ) -> SecretScope:
        name = check_scope_name(name)
        kind = "DATABRICKS" if backend_type in (None, "") else backend_type
        if not isinstance(kind, str) or kind.upper() not in self.backends:
            raise invalid(f"scope_backend_type must be one of {', '.join(sorted(self.backends))}.")
        kind = kind.upper()
        if initial_manage_principal not in (None, "", "users"):
            raise invalid("initial_manage_principal can only be 'users' (all users of the workspace).")
        dns_name = resource_id = None
        if kind == "AZURE_KEYVAULT":
            if not isinstance(keyvault, dict):
                raise invalid("backend_azure_keyvault (resource_id, dns_name) is required for AZURE_KEYVAULT scopes.")
            resource_id, dns_name = keyvault.get("resource_id"), keyvault.get("dns_name")
            if not isinstance(resource_id, str) or not resource_id.strip():
                raise invalid("backend_azure_keyvault.resource_id is required.")
            if not isinstance(dns_name, str) or not dns_name.strip():
                raise invalid("backend_azure_keyvault.dns_name is required.")
            vault_url(dns_name)  # validates
        elif keyvault is not None:
            raise invalid("backend_azure_keyvault is only allowed with scope_backend_type AZURE_KEYVAULT.")
        if sess.scalar(select(SecretScope.id).where(SecretScope.name == name)) is not None:
            raise already_exists(f"Scope {name} already exists!")
        row = SecretScope(
            name=name,
            backend_type=kind,
            keyvault_dns_name=dns_name,
            keyvault_resource_id=resource_id,
            created_by=caller.id,
            created_at=now_ms(),
        )
        sess.add(row)
        sess.flush()
        principal = "users" if initial_manage_principal == "users" else caller.user_name
        sess.add(SecretAcl(scope_id=row.id, principal=principal, permission="MANAGE"))
        sess.flush()
        return row

    def list_scopes(self, sess: Session, caller: Principal) -> list[SecretScope]:
        # As on Databricks, every user sees every scope's name; values need READ.
        return list(sess.scalars(select(SecretScope).order_by(SecretScope.name)))

    def delete_scope(self, sess: Session, caller: Principal, name: object) -> None:
        scope = self._scope(sess, name)
        self._require(sess, caller, scope, "MANAGE")
        self._backend(scope).drop_scope(sess, _ref(scope))
        sess.execute(delete(SecretAcl).where(SecretAcl.scope_id == scope.id))
        sess.delete(scope)

    # -- secrets -------------------------------------------------------------------------

    def put_secret(self, sess: Session, caller: Principal, scope_name: object, key: object,
                   string_value: object = None, bytes_value: object = None) -> None:
        scope = self._scope(sess, scope_name)
        key = check_key(key)
        self._require(sess, caller, scope, "WRITE")
        backend = self._backend(scope)
        if backend.read_only:
            raise backend.read_only_error(_ref(scope))
        value = decode_value(string_value, bytes_value)
        ref = _ref(scope)
        existing = {k.key for k in backend.list_keys(sess, ref)}
        if key not in existing and len(existing) >= MAX_SECRETS_PER_SCOPE:
            raise BrickyardError(
                "RESOURCE_LIMIT_EXCEEDED", f"Scope {scope.name} already holds {MAX_SECRETS_PER_SCOPE} secrets."
            )
        backend.put(sess, ref, key, value)

    def delete_secret(self, sess: Session, caller: Principal, scope_name: object, key: object) -> None:
        scope = self._scope(sess, scope_name)
        key = check_key(key)
        self._require(sess, caller, scope, "WRITE")
        self._backend(scope).delete(sess, _ref(scope), key)

    def list_secrets(self, sess: Session, caller: Principal, scope_name: object) -> list[KeyInfo]:
        scope = self._scope(sess, scope_name)
        self._require(sess, caller, scope, "READ")
        return self._backend(scope).list_keys(sess, _ref(scope))

    def get_secret(self, sess: Session, caller: Principal, scope_name: object, key: object) -> bytes:
        scope = self._scope(sess, scope_name)
        key = check_key(key)
        self._require(sess, caller, scope, "READ")
        return self._backend(scope).get(sess, _ref(scope), key)

    # -- ACLs ----------------------------------------------------------------------------

    def _principal(self, sess: Session, principal: object) -> str:
        if not isinstance(principal, str) or not principal:
            raise invalid("Missing required field: principal")
        if principal not in GROUPS and self.users.by_name(sess, principal) is None:
            raise invalid(f"Principal {principal[:256]} does not exist: use a user name or the groups users/admins.")
        return principal

    def _acl(self, sess: Session, scope: SecretScope, principal: str) -> SecretAcl | None:
        return sess.scalar(select(SecretAcl).where(SecretAcl.scope_id == scope.id, SecretAcl.principal == principal))

    def put_acl(self, sess: Session, caller: Principal, scope_name: object, principal: object,
                permission: object) -> None:
        scope = self._scope(sess, scope_name)
        self._require(sess, caller, scope, "MANAGE")
        principal = self._principal(sess, principal)
        if not isinstance(permission, str) or permission.upper() not in LEVELS:
            raise invalid("permission must be one of MANAGE, WRITE, READ.")
        row = self._acl(sess, scope, principal)
        if row is None:
            sess.add(SecretAcl(scope_id=scope.id, principal=principal, permission=permission.upper()))
        else:
            row.permission = permission.upper()
        sess.flush()

    def delete_acl(self, sess: Session, caller: Principal, scope_name: object, principal: object) -> None:
        sess.delete(self.get_acl(sess, caller, scope_name, principal))

    def get_acl(self, sess: Session, caller: Principal, scope_name: object, principal: object) -> SecretAcl:
        scope = self._scope(sess, scope_name)
        self._require(sess, caller, scope, "MANAGE")
        if not isinstance(principal, str) or not principal:
            raise invalid("Missing required field: principal")
        row = self._acl(sess, scope, principal)
        if row is None:
            raise not_found(f"No ACL for principal {principal[:256]} on scope {scope.name}.")
        return row

    def list_acls(self, sess: Session, caller: Principal, scope_name: object) -> list[SecretAcl]:
        scope = self._scope(sess, scope_name)
        self._require(sess, caller, scope, "MANAGE")
        return list(sess.scalars(select(SecretAcl).where(SecretAcl.scope_id == scope.id).order_by(SecretAcl.principal)))

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()


def build(ws, services) -> dict:  # noqa: ANN001
    """Build the secrets service with one backend per scope type."""
    backends: dict[str, SecretBackend] = {
        "DATABRICKS": ManagedBackend(ws.keyring),
        "AZURE_KEYVAULT": AzureKeyVaultBackend(ws.settings),
    }
    return {"secrets": SecretService(ws.store, services["users"], backends)}
