"""Bring a database to the newest schema with the Alembic revisions shipped in ``migrations/``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

import migrations
from daemon.errors import DatabaseNotReady


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Upgrade to head; return (revision before, revision after)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    before = current_revision(engine)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
    return before, current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


def require_head(engine: Engine) -> None:
    """Refuse to read a database whose schema is not the one this version writes.

    Readers (``inspectd results``) never migrate: on a service install the database belongs to
    the service user, and a schema change is the operator's decision (``inspectd db upgrade``).
    """
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise DatabaseNotReady(
            f"the database {where} holds no inspectd results yet; `inspectd run` creates it "
            f"(or `inspectd db upgrade`)"
        )
    raise DatabaseNotReady(
        f"the database {where} is at schema revision {current}, this inspectd reads {head}: run "
        f"`inspectd db upgrade` (on a service install, as the service user)"
    )
