"""Reaching the database: which problems a user must fix, and which ones only need waiting for.

A wrong URL, a missing driver, a refused password or a database that does not exist are the
user's to fix: one line naming ``database.url``, and ``inspectd run`` stops with exit code 2. A
database that is locked by another program, a PostgreSQL server that is still starting, a host
that cannot be reached or resolved yet (the network comes up after the service at boot) are
waited for: ``inspectd run`` retries with back-off and says so in the log and in systemd's STATUS=,
instead of crash-looping into systemd's start limit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from loguru import logger
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError, SQLAlchemyError

from daemon.db.engine import make_engine
from daemon.db.migrate import require_head, upgrade
from daemon.db.url import sqlite_file
from daemon.errors import ConfigError, DatabaseNotReady
from daemon.retry import Retries
from inspectd.errors import InspectdError

# Texts of the drivers' errors that a user must fix (PostgreSQL's libpq and SQLite's).
USER_ERRORS = (
    "password authentication failed",
    "no password supplied",
    "does not exist",  # role "x" / database "x" does not exist
    "unable to open database file",
    "authentication",
    "invalid dsn",
    "invalid connection option",
)


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unreadable URL)"


def reason(exc: BaseException) -> str:
    """The driver's own words, on one line."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return " ".join(str(inner).split()) or inner.__class__.__name__


def is_user_error(exc: BaseException) -> bool:
    if not isinstance(exc, OperationalError):
        return True
    text = reason(exc).lower()
    return any(marker in text for marker in USER_ERRORS)


def open_engine(url: str) -> Engine:
    """An engine for ``database.url``; a malformed URL or a missing driver is a ConfigError."""
    try:
        return make_engine(url)
    except (ArgumentError, NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        missing = getattr(exc, "name", None) or reason(exc)
        hint = (
            "the PostgreSQL driver is installed with inspectd (postgresql+psycopg://...)"
            if "postgres" in url
            else "use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB"
        )
        raise ConfigError(f"database.url {safe_url(url)}: cannot use it ({missing}); {hint}") from None


@contextmanager
def reading(url: str) -> Iterator[Engine]:
    """For ``results`` and ``stats``: an engine on a database that already exists at the newest
    schema; never creates or migrates one, and any database error is one line."""
    if (path := sqlite_file(url)) is not None and not path.is_file():
        raise DatabaseNotReady(f"no results database at {path} yet; `inspectd run` creates it")
    engine = open_engine(url)
    with one_line_errors(url):
        require_head(engine)
        yield engine


@contextmanager
def one_line_errors(url: str) -> Iterator[None]:
    """For the commands that only read or migrate once: any database error is one line."""
    try:
        yield
    except SQLAlchemyError as exc:
        error = ConfigError if is_user_error(exc) else InspectdError
        raise error(f"database.url {safe_url(url)}: {reason(exc)}") from None


def migrate_when_ready(
    engine: Engine,
    *,
    stop: threading.Event | None = None,
    status: Callable[[str, float], None] = lambda text, delay_s: None,
    retries: Retries[str] | None = None,
) -> tuple[str | None, str | None] | None:
    """Upgrade the schema, waiting with back-off while the database cannot be reached or is
    locked; None when ``stop`` was set while waiting. A user's error raises ConfigError at once."""
    retries = retries or Retries()
    url = engine.url.render_as_string(hide_password=True)
    while True:
        try:
            return upgrade(engine)
        except SQLAlchemyError as exc:
            if is_user_error(exc):
                raise ConfigError(f"database.url {url}: {reason(exc)}") from None
            attempt = retries.failed("database")
            text = f"waiting for the database {url}: {reason(exc)}; retrying in {attempt.delay_s:.0f} s"
            logger.warning("{} (attempt {})", text, attempt.number)
            status(text, attempt.delay_s)
            engine.dispose()
            if (stop or threading.Event()).wait(attempt.delay_s) and stop is not None:
                return None
