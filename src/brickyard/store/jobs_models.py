"""Model of job task values (dbutils.jobs.taskValues; migration 0009)."""
from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from brickyard.store.models import Base


class JobTaskValue(Base):
    """A value a task of a job run set with dbutils.jobs.taskValues.set; the latest set wins."""

    __tablename__ = "job_task_values"
    run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_runs.run_id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    task_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)  # the value's JSON
    task_run_id: Mapped[int] = mapped_column(BigInteger, nullable=False)  # the attempt that set it
    set_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
