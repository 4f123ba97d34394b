"""Models of instance pools and cluster libraries (migration 0005).

Kept out of models.py only so that they could be committed on their own; move them there when convenient.
"""
from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from brickyard.store.models import Base


class InstancePool(Base):
    __tablename__ = "instance_pools"
    instance_pool_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_pool_name: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    spec: Mapped[str] = mapped_column(Text, nullable=False)  # JSON: the normalised create/edit request
    state: Mapped[str] = mapped_column(String(16), nullable=False)  # ACTIVE | DELETED
    creator_user_name: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ClusterLibrary(Base):
    """One library of a cluster (Libraries API) and where its installation stands."""

    __tablename__ = "cluster_libraries"
    __table_args__ = (UniqueConstraint("cluster_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("clusters.cluster_id", ondelete="CASCADE"), nullable=False, index=True
    )
    key: Mapped[str] = mapped_column(String(512), nullable=False)  # canonical JSON of the library
    library: Mapped[str] = mapped_column(Text, nullable=False)  # JSON as the client sent it
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    messages: Mapped[str] = mapped_column(Text, nullable=False, default="[]")  # JSON list
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)

