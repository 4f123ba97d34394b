"""Browser login sessions of the web UI: password or token sign-in, opaque session ids, CSRF tokens.

The cookie carries a random 256-bit id; the store keeps only its keyed hash (as for personal
access tokens), so a copy of the database opens no session. CSRF tokens are an HMAC of the
session id under the workspace's URL-signing key: bound to the session, nothing stored.
"""
from __future__ import annotations

import hmac
import secrets
import threading
import time

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from brickyard.errors import BrickyardError, denied, unauthenticated
from brickyard.secrets.crypto import Keyring
from brickyard.services.common import now_ms
from brickyard.services.tokens import TokenService
from brickyard.services.users import Principal, UserService, check_password, hash_password, principal_of
from brickyard.store.models import Token, User
from brickyard.store.ui_models import WebSession

IDLE_MS = 12 * 3600 * 1000  # signed out after 12 hours without a request
ABSOLUTE_MS = 7 * 24 * 3600 * 1000  # and after 7 days whatever happens
TOUCH_MS = 60 * 1000  # last_seen_at is written at most once a minute
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
# Password guessing: after this many failures for one user name within the window, password
# sign-in for that name pauses until the window passes (token sign-in is not affected).
MAX_FAILURES = 10
FAILURE_WINDOW_S = 300.0


class WebSessionService:
    def __init__(self, keyring: Keyring, users: UserService, tokens: TokenService):
        self.keyring = keyring
        self.users = users
        self.tokens = tokens
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent_failures(self, user_name: str) -> list[float]:
        cutoff = time.monotonic() - FAILURE_WINDOW_S
        with self._lock:
            recent = [t for t in self._failures.get(user_name, []) if t > cutoff]
            if recent:
                self._failures[user_name] = recent
            else:
                self._failures.pop(user_name, None)
            return recent

    def _fail(self, user_name: str) -> None:
        with self._lock:
            if len(self._failures) > 10_000:
                self._failures.clear()
            self._failures.setdefault(user_name, []).append(time.monotonic())

    def _hash(self, sid: str) -> str:
        return self.keyring.hash_token("websession\x00" + sid)

    # -- sign-in ---------------------------------------------------------------------------

    def login_password(self, sess: Session, user_name: str, password: str) -> tuple[str, Principal]:
        key = (user_name or "").lower()
        if len(self._recent_failures(key)) >= MAX_FAILURES:
            raise BrickyardError("REQUEST_LIMIT_EXCEEDED",
                                 "Too many failed sign-ins for this user; try again in a few minutes.")
        user = self.users.by_name(sess, user_name or "")
        # The same work whether or not the user exists, so timing does not tell user names apart.
        ok = check_password(password or "", user.password_hash if user and user.password_hash else _DUMMY_HASH)
        if user is None or not user.password_hash or not ok:
            self._fail(key)
            raise unauthenticated("Incorrect user name or password.")
        if not user.active:
            raise unauthenticated(f"User {user.user_name} is not active.")
        return self._open(sess, user, "password"), principal_of(user)

    def login_token(self, sess: Session, token: str) -> tuple[str, Principal]:
        """A session opened with a personal access token lasts no longer than the token: revoking it
        (or its expiry) ends the session."""
        value = (token or "").strip()
        principal = self.tokens.authenticate(sess, value)
        tok = self.tokens.live(sess, value)
        user = self.users.get(sess, principal.id)
        return self._open(sess, user, "token", tok), principal

    def _open(self, sess: Session, user: User, method: str, token: Token | None = None) -> str:
        now = now_ms()
        sess.execute(delete(WebSession).where(WebSession.expires_at <= now))
        sid = secrets.token_urlsafe(32)
        expires = now + ABSOLUTE_MS
        if token is not None and token.expiry_time != -1:
            expires = min(expires, token.expiry_time)
        sess.add(WebSession(id_hash=self._hash(sid), user_id=user.id, created_at=now, last_seen_at=now,
                            expires_at=expires, method=method, token_id=token.token_id if token else None))
        sess.flush()
        return sid

    # -- per request -----------------------------------------------------------------------

    def lookup(self, sess: Session, sid: str | None) -> Principal | None:
        """The signed-in user of a session id, or None (unknown, expired, idle, inactive user)."""
        if not sid or len(sid) > 128:
            return None
        row = sess.get(WebSession, self._hash(sid))
        if row is None:
            return None
        now = now_ms()
        if row.expires_at <= now or row.last_seen_at + IDLE_MS <= now:
            sess.delete(row)
            return None
        if row.token_id is not None and sess.get(Token, row.token_id) is None:
            sess.delete(row)  # the token it was opened with was revoked
            return None
        user = sess.get(User, row.user_id)
        if user is None or not user.active:
            return None
        if now - row.last_seen_at >= TOUCH_MS:
            row.last_seen_at = now
        return principal_of(user)

    def logout(self, sess: Session, sid: str | None) -> None:
        if sid:
            sess.execute(delete(WebSession).where(WebSession.id_hash == self._hash(sid)))

    def logout_user(self, sess: Session, user_id: int) -> None:
        sess.execute(delete(WebSession).where(WebSession.user_id == user_id))

    def count_for(self, sess: Session, user_id: int) -> int:
        return len(list(sess.scalars(select(WebSession.id_hash).where(WebSession.user_id == user_id))))

    # -- CSRF ------------------------------------------------------------------------------

    def csrf_token(self, sid: str) -> str:
        return self.keyring.sign("csrf\x00" + sid)

    def check_csrf(self, sid: str | None, token: str | None) -> bool:
        if not sid or not token:
            return False
        return hmac.compare_digest(self.csrf_token(sid), token)

    # -- passwords -------------------------------------------------------------------------

    def set_password(self, sess: Session, caller: Principal, user_name_or_id: str, password: str) -> User:
        """An admin sets anyone's password, a user their own; the user's sessions end."""
        user = self.users.find(sess, str(user_name_or_id))
        if not caller.is_admin and caller.id != user.id:
            raise denied(f"User {caller.user_name} may only change their own password.")
        if not isinstance(password, str):
            raise BrickyardError("INVALID_PARAMETER_VALUE", "A password is required.")
        self.users.set_password(sess, user, password)
        self.logout_user(sess, user.id)
        return user
