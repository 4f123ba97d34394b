"""Job task values (dbutils.jobs.taskValues).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_task_values",
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey("job_runs.run_id", ondelete="CASCADE"), primary_key=True,
                  autoincrement=False),
        sa.Column("task_key", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("task_run_id", sa.BigInteger, nullable=False),
        sa.Column("set_time", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_task_values")
