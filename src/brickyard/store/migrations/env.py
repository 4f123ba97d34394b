"""Alembic environment: runs on the connection handed over by brickyard.store.db.migrate."""
from alembic import context

from brickyard.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only for the alembic command line
    raise RuntimeError("run migrations through brickyard.store.db.migrate()")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
