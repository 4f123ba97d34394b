"""SQLAlchemy models of the workspace's metadata store.

Schema changes go through an Alembic migration in ``store/migrations/versions``.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Workspace-wide values: workspace id, wrapped data keys."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_name: Mapped[str] = mapped_column(String(256), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    emails: Mapped[str] = mapped_column(Text, nullable=False, default="[]")  # JSON list
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Token(Base):
    __tablename__ = "tokens"
    token_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_hash: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    comment: Mapped[str] = mapped_column(Text, nullable=False, default="")
    creation_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expiry_time: Mapped[int] = mapped_column(BigInteger, nullable=False, default=-1)
    created_by_id: Mapped[int] = mapped_column(BigInteger, nullable=False)


class SecretScope(Base):
    __tablename__ = "secret_scopes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    backend_type: Mapped[str] = mapped_column(String(32), nullable=False)
    keyvault_dns_name: Mapped[str | None] = mapped_column(String(512), nullable=True)
    keyvault_resource_id: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_by: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Secret(Base):
    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("scope_id", "key", name="uq_secret_scope_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("secret_scopes.id", ondelete="CASCADE"), nullable=False
    )
    key: Mapped[str] = mapped_column(String(128), nullable=False)
    # AES-256-GCM: nonce || ciphertext+tag, scope and key bound as associated data.
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    last_updated_timestamp: Mapped[int] = mapped_column(BigInteger, nullable=False)


class SecretAcl(Base):
    __tablename__ = "secret_acls"
    __table_args__ = (UniqueConstraint("scope_id", "principal", name="uq_secret_acl"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("secret_scopes.id", ondelete="CASCADE"), nullable=False
    )
    principal: Mapped[str] = mapped_column(String(256), nullable=False)
    permission: Mapped[str] = mapped_column(String(16), nullable=False)


class WorkspaceObject(Base):
    __tablename__ = "workspace_objects"
    object_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    path: Mapped[str] = mapped_column(String(4096), unique=True, nullable=False)
    parent_path: Mapped[str] = mapped_column(String(4096), nullable=False, index=True)
    object_type: Mapped[str] = mapped_column(String(16), nullable=False)
    language: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Notebooks: canonical JSON (see runtime/formats); files: raw bytes; folders: NULL.
    content: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    owner_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    modified_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Cluster(Base):
    __tablename__ = "clusters"
    cluster_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cluster_name: Mapped[str] = mapped_column(String(256), nullable=False, index=True)
    spec: Mapped[str] = mapped_column(Text, nullable=False)  # JSON: the normalised create/edit request
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    state_message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    termination_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    creator_user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    creator_user_name: Mapped[str] = mapped_column(String(256), nullable=False)
    cluster_source: Mapped[str] = mapped_column(String(16), nullable=False, default="API")
    pinned: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    start_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    terminated_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_restarted_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_activity_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    spark_context_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    current_workers: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    runtime: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: driver pid, ports, ui url
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class ClusterEvent(Base):
    __tablename__ = "cluster_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("clusters.cluster_id", ondelete="CASCADE"), nullable=False, index=True
    )
    timestamp: Mapped[int] = mapped_column(BigInteger, nullable=False)
    type: Mapped[str] = mapped_column(String(48), nullable=False)
    details: Mapped[str] = mapped_column(Text, nullable=False, default="{}")  # JSON


class Job(Base):
    __tablename__ = "jobs"
    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    creator_user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    creator_user_name: Mapped[str] = mapped_column(String(256), nullable=False)
    run_as_user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    run_as_user_name: Mapped[str] = mapped_column(String(256), nullable=False)
    created_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    name: Mapped[str] = mapped_column(String(4096), nullable=False, index=True)
    settings: Mapped[str] = mapped_column(Text, nullable=False)  # JSON: JobSettings as stored


class JobRun(Base):
    """A job run (or a one-time submitted run); its tasks are JobTaskRun rows."""

    __tablename__ = "job_runs"
    run_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    job_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    run_type: Mapped[str] = mapped_column(String(16), nullable=False)
    run_name: Mapped[str] = mapped_column(String(4096), nullable=False, default="")
    trigger: Mapped[str] = mapped_column(String(32), nullable=False)
    creator_user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    creator_user_name: Mapped[str] = mapped_column(String(256), nullable=False)
    run_as_user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    run_as_user_name: Mapped[str] = mapped_column(String(256), nullable=False)
    spec: Mapped[str] = mapped_column(Text, nullable=False)  # JSON: the settings the run executes
    params: Mapped[str] = mapped_column(Text, nullable=False, default="{}")  # JSON: parameters of the run
    life_cycle_state: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    result_state: Mapped[str | None] = mapped_column(String(48), nullable=True)
    state_message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    termination: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: code, type, message
    user_cancelled_or_timedout: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    idempotency_token: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    start_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    queue_duration: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    end_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class JobTaskRun(Base):
    """One attempt of one task of a run; a retry is a new row with the next attempt_number."""

    __tablename__ = "job_task_runs"
    run_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    parent_run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("job_runs.run_id", ondelete="CASCADE"), nullable=False, index=True
    )
    task_key: Mapped[str] = mapped_column(String(128), nullable=False)
    attempt_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    spec: Mapped[str] = mapped_column(Text, nullable=False)  # JSON: the task with parameters resolved
    life_cycle_state: Mapped[str] = mapped_column(String(32), nullable=False)
    result_state: Mapped[str | None] = mapped_column(String(48), nullable=True)
    state_message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    cluster_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    start_time: Mapped[int] = mapped_column(BigInteger, nullable=False)
    setup_duration: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    execution_duration: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cleanup_duration: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    end_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # dbutils.notebook.exit value
    result_truncated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_trace: Mapped[str | None] = mapped_column(Text, nullable=True)
    logs: Mapped[str | None] = mapped_column(Text, nullable=True)
    logs_truncated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # The executed notebook with its outputs (canonical JSON, see runtime/formats).
    notebook: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class DbfsMount(Base):
    """A DBFS mount (dbutils.fs.mount): its extra_configs (credentials) are sealed with the workspace keyring."""

    __tablename__ = "dbfs_mounts"
    mount_point: Mapped[str] = mapped_column(String(1024), primary_key=True)
    source: Mapped[str] = mapped_column(String(4096), nullable=False)
    encryption_type: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    config_keys: Mapped[str] = mapped_column(Text, nullable=False, default="[]")  # JSON list: names only
    extra_configs: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # AES-GCM sealed JSON
    creator_user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    creator_user_name: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ServingEndpointRow(Base):
    """A model serving endpoint: its active config and the pending one being rolled out (JSON)."""

    __tablename__ = "serving_endpoints"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    creator_user_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    creator_user_name: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    tags: Mapped[str] = mapped_column(Text, nullable=False, default="[]")  # JSON list of {key, value}
    config: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: the config being served
    pending_config: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: rolling out or failed
    config_update: Mapped[str] = mapped_column(String(32), nullable=False)  # NOT_UPDATING | IN_PROGRESS | ...
    update_message: Mapped[str] = mapped_column(Text, nullable=False, default="")  # why the last update failed
