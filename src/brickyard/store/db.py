"""Engine, sessions and migrations of the metadata store."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from brickyard.errors import BrickyardError

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """Create the engine; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # PostgreSQL (psycopg 3): connections checked before use (a restarted server is survived),
    # recycled hourly; READ COMMITTED, each Store.session one transaction.
    return create_engine(url, pool_pre_ping=True, pool_recycle=3600, pool_size=10, max_overflow=20)


MIGRATION_LOCK_KEY = 0x42726B4D  # pg_advisory_xact_lock key of the workspace's migrations
FIRST_START_LOCK = 0x42726B46  # Store.session(lock=...) of the first-start rows (workspace id, keys, admin)


def migrate(engine: Engine) -> None:
    """Apply every Alembic migration up to head, in one transaction.

    On PostgreSQL (transactional DDL) an advisory lock makes workspace processes starting
    together on one database take turns: the first migrates, the others then find it done.
    Not thread-safe (Alembic's `op` and `context` are module globals): one call at a time per process.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = None
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """Owns the engine and hands out managed sessions."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self, lock: int | None = None) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error.

        Driver errors become BrickyardError here, at one boundary. With `lock` (a key such as
        FIRST_START_LOCK), PostgreSQL transactions with the same key run one at a time
        (pg_advisory_xact_lock), for check-then-insert work that several processes may do at once.
        """
        sess = self._factory()
        try:
            if lock is not None and self.engine.dialect.name == "postgresql":
                sess.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock})
            yield sess
            sess.commit()
        except BrickyardError:
            sess.rollback()
            raise
        except IntegrityError as exc:
            sess.rollback()
            log.info("integrity error: %s", exc.orig)
            raise BrickyardError("RESOURCE_ALREADY_EXISTS", "The resource already exists.") from exc
        except DataError as exc:
            # SQLite ignores declared lengths; PostgreSQL refuses a value longer than its column.
            sess.rollback()
            log.info("data error: %s", exc.orig)
            raise BrickyardError("INVALID_PARAMETER_VALUE", "A value is too long or malformed.") from exc
        except OperationalError as exc:
            sess.rollback()
            log.warning("database unavailable: %s", exc.orig)
            raise BrickyardError(
                "TEMPORARILY_UNAVAILABLE", "The workspace database is busy; retry the request."
            ) from exc
        except BaseException:
            sess.rollback()
            raise
        finally:
            sess.close()

    def dispose(self) -> None:
        self.engine.dispose()
