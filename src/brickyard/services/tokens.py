"""Personal access tokens: created from a CSPRNG, stored only as a keyed hash."""
from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased, object_session

from brickyard.errors import BrickyardError, invalid, not_found, unauthenticated
from brickyard.secrets.crypto import Keyring
from brickyard.services.common import now_ms
from brickyard.services.users import Principal, UserService, principal_of
from brickyard.store.models import Token, User

TOKEN_RE = re.compile(r"^dapi[0-9a-f]{32}(-\d+)?$")
MAX_LIFETIME_SECONDS = 100 * 365 * 24 * 3600


def new_token_value() -> str:
    return "dapi" + secrets.token_hex(16)


def token_info(tok: Token, owner: User | None = None) -> dict:
    """The SDK's TokenInfo; with the owner (token management) also who owns it and who created it.

    `owner_id` is the user the token authenticates as; `created_by_id` / `created_by_username` both name
    the user who created it (an admin, for an on-behalf-of token). The creator is read in the token's
    session; a creator since deleted leaves `created_by_username` out.
    """
    info = {
        "token_id": tok.token_id,
        "creation_time": tok.creation_time,
        "expiry_time": tok.expiry_time,
        "comment": tok.comment,
    }
    if owner is not None:
        info.update({"owner_id": owner.id, "created_by_id": tok.created_by_id})
        sess = object_session(tok)
        creator = owner if tok.created_by_id == owner.id else (
            sess.get(User, tok.created_by_id) if sess is not None else None)
        if creator is not None:
            info["created_by_username"] = creator.user_name
    return info


class TokenService:
    def __init__(self, keyring: Keyring, users: UserService):
        self.keyring = keyring
        self.users = users

    def create(
        self,
        sess: Session,
        owner: User,
        created_by: Principal,
        comment: str | None = None,
        lifetime_seconds: int | None = None,
        value: str | None = None,
    ) -> tuple[str, Token]:
        if comment is not None and not isinstance(comment, str):
            raise invalid("comment must be a string.")
        if lifetime_seconds is not None:
            if isinstance(lifetime_seconds, bool) or not isinstance(lifetime_seconds, int):
                raise invalid("lifetime_seconds must be an integer.")
            if lifetime_seconds > MAX_LIFETIME_SECONDS:
                raise invalid(f"lifetime_seconds must be at most {MAX_LIFETIME_SECONDS}.")
        if value is None:
            value = new_token_value()
        elif not TOKEN_RE.match(value):
            raise invalid("A token must look like 'dapi' followed by 32 lowercase hex digits.")
        now = now_ms()
        # lifetime <= 0 means no expiry, as on Databricks.
        expiry = now + lifetime_seconds * 1000 if lifetime_seconds and lifetime_seconds > 0 else -1
        tok = Token(
            token_id=secrets.token_hex(32),
            user_id=owner.id,
            token_hash=self.keyring.hash_token(value),
            comment=comment or "",
            creation_time=now,
            expiry_time=expiry,
            created_by_id=created_by.id,
        )
        sess.add(tok)
        sess.flush()
        return value, tok

    def authenticate(self, sess: Session, value: str) -> Principal:
        """The user a bearer token belongs to; expired, revoked or unknown tokens fail."""
        if not value:
            raise unauthenticated("Missing credentials: send 'Authorization: Bearer <token>'.")
        row = sess.execute(
            select(Token, User).join(User, Token.user_id == User.id).where(
                Token.token_hash == self.keyring.hash_token(value)
            )
        ).first()
        if row is None:
            raise unauthenticated("Invalid access token.")
        tok, user = row
        if tok.expiry_time != -1 and tok.expiry_time <= now_ms():
            raise unauthenticated("Invalid access token: the token has expired.")
        if not user.active:
            raise unauthenticated(f"User {user.user_name} is not active.")
        return principal_of(user)

    def live(self, sess: Session, value: str) -> Token:
        """The token row of a bearer token that authenticates now (raises like authenticate)."""
        self.authenticate(sess, value)
        return sess.scalar(select(Token).where(Token.token_hash == self.keyring.hash_token(value)))

    def list_own(self, sess: Session, caller: Principal) -> list[Token]:
        return list(
            sess.scalars(select(Token).where(Token.user_id == caller.id).order_by(Token.creation_time))
        )

    def delete_own(self, sess: Session, caller: Principal, token_id: str) -> None:
        tok = sess.get(Token, token_id) if isinstance(token_id, str) else None
        if tok is None or tok.user_id != caller.id:
            raise not_found(f"Token with id {token_id} does not exist.")
        sess.delete(tok)

    # Admin token management across users.
    def list_all(
        self, sess: Session, caller: Principal, created_by_id: int | None = None,
        created_by_username: str | None = None,
    ) -> list[tuple[Token, User]]:
        """Every user's tokens with their owners; the filters name the tokens' creator (as in the SDK)."""
        caller.require_admin()
        query = select(Token, User).join(User, Token.user_id == User.id).order_by(Token.creation_time)
        if created_by_id is not None:
            query = query.where(Token.created_by_id == created_by_id)
        if created_by_username:
            creator = aliased(User)
            query = query.join(creator, Token.created_by_id == creator.id).where(
                creator.user_name == created_by_username)
        return [(t, u) for t, u in sess.execute(query)]

    def get_any(self, sess: Session, caller: Principal, token_id: str) -> tuple[Token, User]:
        caller.require_admin()
        tok = sess.get(Token, token_id)
        if tok is None:
            raise not_found(f"Token with id {token_id} does not exist.")
        return tok, sess.get(User, tok.user_id)

    def delete_any(self, sess: Session, caller: Principal, token_id: str) -> None:
        tok, _ = self.get_any(sess, caller, token_id)
        sess.delete(tok)

    def create_on_behalf(
        self, sess: Session, caller: Principal, application_id: str,
        lifetime_seconds: int | None, comment: str | None,
    ) -> tuple[str, Token, User]:
        caller.require_admin()
        if not isinstance(application_id, str) or not application_id:
            raise invalid("application_id is required: a user's id or userName.")
        try:
            owner = self.users.find(sess, application_id)
        except BrickyardError:
            raise invalid(f"application_id {application_id} is not a user of this workspace.") from None
        value, tok = self.create(sess, owner, caller, comment, lifetime_seconds)
        return value, tok, owner
