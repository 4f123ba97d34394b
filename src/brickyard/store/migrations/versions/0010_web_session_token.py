"""Web UI sessions opened with a token remember it, so revoking the token ends them.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No foreign key: SQLite cannot add one to an existing table; the session lookup checks the token.
    op.add_column("web_sessions", sa.Column("token_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("web_sessions") as batch:
        batch.drop_column("token_id")
