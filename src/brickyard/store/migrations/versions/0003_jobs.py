"""Jobs, job runs and task runs.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("creator_user_id", sa.BigInteger, nullable=False),
        sa.Column("creator_user_name", sa.String(256), nullable=False),
        sa.Column("run_as_user_id", sa.BigInteger, nullable=False),
        sa.Column("run_as_user_name", sa.String(256), nullable=False),
        sa.Column("created_time", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(4096), nullable=False),
        sa.Column("settings", sa.Text, nullable=False),
    )
    op.create_index("ix_jobs_name", "jobs", ["name"])
    op.create_table(
        "job_runs",
        sa.Column("run_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("job_id", sa.BigInteger, nullable=True),
        sa.Column("run_type", sa.String(16), nullable=False),
        sa.Column("run_name", sa.String(4096), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("creator_user_id", sa.BigInteger, nullable=False),
        sa.Column("creator_user_name", sa.String(256), nullable=False),
        sa.Column("run_as_user_id", sa.BigInteger, nullable=False),
        sa.Column("run_as_user_name", sa.String(256), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("life_cycle_state", sa.String(32), nullable=False),
        sa.Column("result_state", sa.String(48), nullable=True),
        sa.Column("state_message", sa.Text, nullable=False),
        sa.Column("termination", sa.Text, nullable=True),
        sa.Column("user_cancelled_or_timedout", sa.Boolean, nullable=False),
        sa.Column("idempotency_token", sa.String(64), nullable=True),
        sa.Column("start_time", sa.BigInteger, nullable=False),
        sa.Column("queue_duration", sa.BigInteger, nullable=True),
        sa.Column("end_time", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_job_runs_job_id", "job_runs", ["job_id"])
    op.create_index("ix_job_runs_life_cycle_state", "job_runs", ["life_cycle_state"])
    op.create_index("ix_job_runs_idempotency_token", "job_runs", ["idempotency_token"])
    op.create_table(
        "job_task_runs",
        sa.Column("run_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("parent_run_id", sa.BigInteger, sa.ForeignKey("job_runs.run_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("task_key", sa.String(128), nullable=False),
        sa.Column("attempt_number", sa.Integer, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("life_cycle_state", sa.String(32), nullable=False),
        sa.Column("result_state", sa.String(48), nullable=True),
        sa.Column("state_message", sa.Text, nullable=False),
        sa.Column("cluster_id", sa.String(64), nullable=True),
        sa.Column("start_time", sa.BigInteger, nullable=False),
        sa.Column("setup_duration", sa.BigInteger, nullable=False),
        sa.Column("execution_duration", sa.BigInteger, nullable=False),
        sa.Column("cleanup_duration", sa.BigInteger, nullable=False),
        sa.Column("end_time", sa.BigInteger, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("result_truncated", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("error_trace", sa.Text, nullable=True),
        sa.Column("logs", sa.Text, nullable=True),
        sa.Column("logs_truncated", sa.Boolean, nullable=False),
        sa.Column("notebook", sa.LargeBinary, nullable=True),
    )
    op.create_index("ix_job_task_runs_parent_run_id", "job_task_runs", ["parent_run_id"])


def downgrade() -> None:
    op.drop_table("job_task_runs")
    op.drop_table("job_runs")
    op.drop_table("jobs")
