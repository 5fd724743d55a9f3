"""Engines for SQLite (the embedded default: WAL, so readers never block the daemon) and
PostgreSQL (many lines, one database), and which database errors are worth retrying."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from daemon.db.url import sqlite_file


def make_engine(url: str) -> Engine:
    """An engine; for SQLite, WAL journal and a busy timeout so a reader never stalls a write."""
    if (path := sqlite_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    sqlite = make_url(url).get_backend_name() == "sqlite"
    # A server connection can drop between two images (a restart, a firewall's idle timeout): test
    # it at checkout. A SQLite file cannot, and the ping would cost each of a verdict's two commits.
    engine = create_engine(url, pool_pre_ping=not sqlite)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def is_transient(exc: BaseException) -> bool:
    """Database errors worth retrying (locked, connection dropped) rather than failing a file."""
    return isinstance(exc, OperationalError)
