"""Instance pools and cluster libraries.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_pools",
        sa.Column("instance_pool_id", sa.String(64), primary_key=True),
        sa.Column("instance_pool_name", sa.String(256), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("creator_user_name", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_instance_pools_instance_pool_name", "instance_pools", ["instance_pool_name"])
    op.create_table(
        "cluster_libraries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cluster_id", sa.String(64), sa.ForeignKey("clusters.cluster_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("key", sa.String(512), nullable=False),
        sa.Column("library", sa.Text, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("messages", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("cluster_id", "key"),
    )
    op.create_index("ix_cluster_libraries_cluster_id", "cluster_libraries", ["cluster_id"])


def downgrade() -> None:
    op.drop_table("cluster_libraries")
    op.drop_table("instance_pools")
