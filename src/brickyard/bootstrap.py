"""First start: the admin user and the first personal access token."""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import func, select

from brickyard.context import Workspace
from brickyard.services.users import principal_of
from brickyard.store.db import FIRST_START_LOCK
from brickyard.store.models import User


@dataclass
class FirstStart:
    user_name: str
    token: str
    password: str


def bootstrap(ws: Workspace) -> FirstStart | None:
    """Create the admin and its first token if the workspace has no user yet."""
    users = ws.services["users"]
    tokens = ws.services["tokens"]
    with ws.store.session(lock=FIRST_START_LOCK) as sess:  # one first start at a time on PostgreSQL
        ws.services["tree"].ensure_roots(sess)
        if sess.scalar(select(func.count()).select_from(User)):
            return None
        password = secrets.token_urlsafe(12)
        admin = users.create(sess, ws.settings.admin_user, "Workspace admin", is_admin=True, password=password)
        value, _ = tokens.create(
            sess, admin, principal_of(admin), comment="first token (created on first start)",
            value=ws.settings.bootstrap_token or None,
        )
        return FirstStart(admin.user_name, value, password)
