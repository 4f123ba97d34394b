"""Model of the web UI's login sessions (migration 0008)."""
from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from brickyard.store.models import Base


class WebSession(Base):
    """A browser login: the cookie holds a random id, the store only its keyed hash."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_seen_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # How the user signed in: "password" or "token".
    method: Mapped[str] = mapped_column(String(16), nullable=False)
    # The token a "token" session was opened with (migration 0010): revoking or expiring it ends the session.
    token_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
