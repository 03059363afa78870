"""Database engine, sessions and the unit-of-work context manager.

One :class:`Database` per app. SQLite (the embedded default) is opened in WAL
mode with a busy timeout so that readers never block the writer and parallel
workers never see "database is locked"; PostgreSQL gets a pre-pinging pool so
that a database restart is survived without a server restart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from service.core.config import Settings
from service.core.errors import DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_S = 30.0


def utcnow() -> datetime:
    """Timezone-aware current time in UTC (the only clock the domain uses)."""
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def engine_kwargs(url: str, pool_size: int = 10, max_overflow: int = 20) -> dict[str, Any]:
    """Engine options for ``url``; also handed to Optuna's RDBStorage."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": pool_size, "max_overflow": max_overflow}


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 20) -> Engine:
    """Create an engine with the pragmas / pool settings this service relies on."""
    engine = create_engine(url, **engine_kwargs(url, pool_size, max_overflow))
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Database:
    """Engine + session factory of one app."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.database_url
        self.engine = make_engine(self.url, settings.db_pool_size, settings.db_max_overflow)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: commits on success, rolls back on any error.

        A lost database connection surfaces as :class:`DatabaseUnavailable`
        (HTTP 503), never as a 500.
        """
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except (OperationalError, DBAPIError) as exc:
            session.rollback()
            if is_connection_error(exc):
                raise DatabaseUnavailable(f"database unavailable: {exc.orig}") from exc
            raise
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> bool:
        """True when a trivial query succeeds (used by /readyz)."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def is_connection_error(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    text = str(exc.orig).lower()
    return any(s in text for s in ("connection", "server closed", "terminating", "shut down"))
