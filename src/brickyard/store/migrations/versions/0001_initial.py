"""Users, tokens, secrets, workspace tree.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("user_name", sa.String(256), nullable=False, unique=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("emails", sa.Text, nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("token_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("creation_time", sa.BigInteger, nullable=False),
        sa.Column("expiry_time", sa.BigInteger, nullable=False),
        sa.Column("created_by_id", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_table(
        "secret_scopes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("backend_type", sa.String(32), nullable=False),
        sa.Column("keyvault_dns_name", sa.String(512), nullable=True),
        sa.Column("keyvault_resource_id", sa.String(1024), nullable=True),
        sa.Column("created_by", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "secrets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.Integer, sa.ForeignKey("secret_scopes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("last_updated_timestamp", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("scope_id", "key", name="uq_secret_scope_key"),
    )
    op.create_table(
        "secret_acls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("scope_id", sa.Integer, sa.ForeignKey("secret_scopes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column("permission", sa.String(16), nullable=False),
        sa.UniqueConstraint("scope_id", "principal", name="uq_secret_acl"),
    )
    op.create_table(
        "workspace_objects",
        sa.Column("object_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("path", sa.String(4096), nullable=False, unique=True),
        sa.Column("parent_path", sa.String(4096), nullable=False),
        sa.Column("object_type", sa.String(16), nullable=False),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("content", sa.LargeBinary, nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("modified_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_workspace_objects_parent_path", "workspace_objects", ["parent_path"])


def downgrade() -> None:
    for table in ("workspace_objects", "secret_acls", "secrets", "secret_scopes", "tokens", "users", "meta"):
        op.drop_table(table)
