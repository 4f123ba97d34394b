"""Users and groups (admins, users), with each user's home folder."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from brickyard.errors import BrickyardError, already_exists, denied, invalid, not_found
from brickyard.services.common import new_numeric_id, now_ms
from brickyard.store.db import Store
from brickyard.store.models import User

USER_NAME_RE = re.compile(r"^[A-Za-z0-9._%+@-]{1,256}$")
GROUPS = ("admins", "users")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as services see it."""

    id: int
    user_name: str
    is_admin: bool

    @property
    def groups(self) -> tuple[str, ...]:
        return ("admins", "users") if self.is_admin else ("users",)

    def require_admin(self) -> None:
        if not self.is_admin:
            raise denied(f"User {self.user_name} is not an admin of this workspace.")


def principal_of(user: User) -> Principal:
    return Principal(id=user.id, user_name=user.user_name, is_admin=user.is_admin)


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt_hex, digest_hex = stored.split("$")
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=2**14, r=8, p=1)
    return hmac.compare_digest(digest.hex(), digest_hex)


class UserService:
    def __init__(self, store: Store, workspace_tree=None):  # noqa: ANN001
        self.store = store
        self.tree = workspace_tree

    def get(self, sess: Session, user_id: int | str) -> User:
        user = None
        if isinstance(user_id, int) or (isinstance(user_id, str) and user_id.isdigit()):
            user = sess.get(User, int(user_id))
        if user is None:
            raise not_found(f"User {user_id} does not exist.")
        return user

    def find(self, sess: Session, id_or_name: str) -> User:
        """A user by numeric id or userName."""
        user = None
        if id_or_name.isdigit():
            user = sess.get(User, int(id_or_name))
        if user is None:
            user = sess.scalar(select(User).where(User.user_name == id_or_name))
        if user is None:
            raise not_found(f"User {id_or_name} does not exist.")
        return user

    def by_name(self, sess: Session, user_name: str) -> User | None:
        return sess.scalar(select(User).where(User.user_name == user_name))

    def create(
        self,
        sess: Session,
        user_name: str,
        display_name: str = "",
        emails: list[str] | None = None,
        is_admin: bool = False,
        active: bool = True,
        password: str | None = None,
    ) -> User:
        if not isinstance(user_name, str) or not USER_NAME_RE.match(user_name):
            raise invalid(f"userName {user_name!r} is not valid: use letters, digits and ._%+@-")
        if self.by_name(sess, user_name) is not None:
            raise BrickyardError(
                "RESOURCE_ALREADY_EXISTS", f"User with username {user_name} already exists."
            )
        user = User(
            id=new_numeric_id(),
            user_name=user_name,
            display_name=display_name or user_name,
            active=active,
            is_admin=is_admin,
            emails=json.dumps(emails if emails is not None else ([user_name] if "@" in user_name else [])),
            password_hash=hash_password(password) if password else None,
            created_at=now_ms(),
        )
        sess.add(user)
        sess.flush()
        if self.tree is not None:
            self.tree.ensure_home(sess, user)
        return user

    def list(self, sess: Session, start_index: int = 1, count: int | None = None) -> tuple[int, list[User]]:
        total = sess.scalar(select(func.count()).select_from(User)) or 0
        query = select(User).order_by(User.user_name).offset(max(start_index, 1) - 1)
        if count is not None:
            query = query.limit(max(count, 0))
        return total, list(sess.scalars(query))

    def delete(self, sess: Session, caller: Principal, user_id: str) -> None:
        user = self.find(sess, user_id)
        if user.id == caller.id:
            raise invalid("You cannot delete yourself.")
        if user.is_admin:
            admins = sess.scalar(select(func.count()).select_from(User).where(User.is_admin.is_(True)))
            if admins <= 1:
                raise invalid("The last admin cannot be deleted.")
        sess.delete(user)

    def set_password(self, sess: Session, user: User, password: str) -> None:
        if not password or len(password) < 8:
            raise invalid("A password needs at least 8 characters.")
        user.password_hash = hash_password(password)


def scim_user(user: User) -> dict:
    """The SCIM representation of a user, as Databricks answers it."""
    emails = json.loads(user.emails or "[]")
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": str(user.id),
        "userName": user.user_name,
        "displayName": user.display_name,
        "active": user.active,
        "emails": [{"type": "work", "value": e, "primary": i == 0} for i, e in enumerate(emails)],
        "groups": [{"display": g, "value": g, "type": "direct"} for g in principal_of(user).groups],
        "entitlements": [{"value": "workspace-access"}],
    }
