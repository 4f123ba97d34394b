"""Clusters and their events.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("cluster_id", sa.String(64), primary_key=True),
        sa.Column("cluster_name", sa.String(256), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_message", sa.Text, nullable=False),
        sa.Column("termination_reason", sa.Text, nullable=True),
        sa.Column("creator_user_id", sa.BigInteger, nullable=False),
        sa.Column("creator_user_name", sa.String(256), nullable=False),
        sa.Column("cluster_source", sa.String(16), nullable=False),
        sa.Column("pinned", sa.Boolean, nullable=False),
        sa.Column("start_time", sa.BigInteger, nullable=False),
        sa.Column("terminated_time", sa.BigInteger, nullable=True),
        sa.Column("last_restarted_time", sa.BigInteger, nullable=True),
        sa.Column("last_activity_time", sa.BigInteger, nullable=True),
        sa.Column("spark_context_id", sa.BigInteger, nullable=True),
        sa.Column("current_workers", sa.Integer, nullable=False),
        sa.Column("runtime", sa.Text, nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False),
    )
    op.create_index("ix_clusters_cluster_name", "clusters", ["cluster_name"])
    op.create_table(
        "cluster_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("cluster_id", sa.String(64), sa.ForeignKey("clusters.cluster_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("type", sa.String(48), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_cluster_events_cluster_id", "cluster_events", ["cluster_id"])


def downgrade() -> None:
    op.drop_table("cluster_events")
    op.drop_table("clusters")
