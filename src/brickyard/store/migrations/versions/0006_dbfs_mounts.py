"""DBFS mounts.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dbfs_mounts",
        sa.Column("mount_point", sa.String(1024), primary_key=True),
        sa.Column("source", sa.String(4096), nullable=False),
        sa.Column("encryption_type", sa.String(64), nullable=False),
        sa.Column("config_keys", sa.Text, nullable=False),
        sa.Column("extra_configs", sa.LargeBinary, nullable=True),
        sa.Column("creator_user_id", sa.BigInteger, nullable=False),
        sa.Column("creator_user_name", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dbfs_mounts")
