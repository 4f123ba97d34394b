"""Model serving endpoints.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "serving_endpoints",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("endpoint_id", sa.String(32), nullable=False, unique=True),
        sa.Column("creator_user_id", sa.BigInteger, nullable=False),
        sa.Column("creator_user_name", sa.String(256), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("config", sa.Text, nullable=True),
        sa.Column("pending_config", sa.Text, nullable=True),
        sa.Column("config_update", sa.String(32), nullable=False),
        sa.Column("update_message", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("serving_endpoints")
