"""Alembic environment: the URL comes from inspectd's config (``inspectd db upgrade``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from daemon.db.engine import make_engine
from daemon.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # handed over by daemon.migrate
        _migrate(connection)
        return
    with make_engine(config.get_main_option("sqlalchemy.url") or "").connect() as own:
        _migrate(own)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
