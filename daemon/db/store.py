"""Results database: the ``inspections`` table, sessions, migrations and queries.

SQLAlchemy keeps SQLite (default, WAL mode so readers never block the daemon) and PostgreSQL (many
lines, one database) behind the same code. Alembic in ``migrations/`` owns the schema.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

STATUSES = ("accepted", "rejected", "quarantined")


class Base(DeclarativeBase):
    pass


class Inspection(Base):
    """One judged (or quarantined) image; the row is committed before the file moves."""

    __tablename__ = "inspections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    filename: Mapped[str] = mapped_column(String(1024))
    source_path: Mapped[str] = mapped_column(Text)
    final_path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    moved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    inference_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)

    __table_args__ = (
        Index("ix_inspections_decided_at", "decided_at"),
        Index("ix_inspections_status", "status"),
    )


def sqlite_file(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL, else None."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url.removeprefix("sqlite:///"))
    return None


def make_engine(url: str) -> Engine:
    """An engine; for SQLite, WAL journal and a busy timeout so a reader never stalls a write."""
    if (path := sqlite_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


@dataclass(frozen=True)
class Query:
    status: str | None = None
    since: dt.datetime | None = None
    limit: int | None = 50


class Store:
    """Thin adapter the pipeline talks to: one transaction per result."""

    def __init__(self, engine: Engine, on_record: Callable[[Inspection], None] | None = None) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.on_record = on_record  # told of every committed row (metrics count what the table holds)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def record(self, row: Inspection) -> Inspection:
        with self.session() as session:
            session.add(row)
        if self.on_record is not None:
            self.on_record(row)
        return row

    def mark_moved(self, row_id: int, when: dt.datetime) -> None:
        with self.session() as session:
            row = session.get(Inspection, row_id)
            if row is not None:
                row.moved_at = when

    def unmoved(self) -> list[Inspection]:
        """Rows committed whose file move may not have finished (a crash between the two)."""
        with self.session() as session:
            stmt = select(Inspection).where(Inspection.moved_at.is_(None)).order_by(Inspection.id)
            return list(session.scalars(stmt))

    def query(self, q: Query) -> Sequence[Inspection]:
        stmt = select(Inspection).order_by(Inspection.decided_at.desc(), Inspection.id.desc())
        if q.status:
            stmt = stmt.where(Inspection.status == q.status)
        if q.since:
            stmt = stmt.where(Inspection.decided_at >= q.since)
        if q.limit:
            stmt = stmt.limit(q.limit)
        with self.session() as session:
            return list(session.scalars(stmt))

    def delete_decided_before(self, cutoff: dt.datetime, limit: int = 500) -> int:
        """Delete up to ``limit`` finished rows older than ``cutoff``; small batches keep locks short.

        Rows whose move is not finished are kept: ``recover()`` needs them after a crash.
        """
        with self.session() as session:
            ids = list(
                session.scalars(
                    select(Inspection.id)
                    .where(Inspection.decided_at < cutoff, Inspection.moved_at.is_not(None))
                    .order_by(Inspection.id)
                    .limit(limit)
                )
            )
            if ids:
                session.execute(delete(Inspection).where(Inspection.id.in_(ids)))
        return len(ids)

    def count(self) -> int:
        with self.session() as session:
            return int(session.scalar(select(func.count(Inspection.id))) or 0)


def is_transient(exc: BaseException) -> bool:
    """Database errors worth retrying (locked, connection dropped) rather than failing a file."""
    return isinstance(exc, OperationalError)
