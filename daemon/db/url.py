"""The one place that reads a SQLite URL: which file it names, and making a relative one absolute.

Kept free of SQLAlchemy so that loading the configuration stays cheap.
"""

from __future__ import annotations

from pathlib import Path

SQLITE_PREFIX = "sqlite:///"
MEMORY = "sqlite:///:memory:"


def sqlite_file(url: str) -> Path | None:
    """The database file of a file-backed SQLite URL, else None (PostgreSQL, in-memory)."""
    if url.startswith(SQLITE_PREFIX) and url != MEMORY:
        return Path(url.removeprefix(SQLITE_PREFIX))
    return None


def resolve_sqlite_url(url: str, base: Path) -> str:
    """Make a relative ``sqlite:///rel/path.db`` absolute against ``base``; leave others alone."""
    path = sqlite_file(url)
    if path is None or path.is_absolute():
        return url
    return SQLITE_PREFIX + str(base / path)
