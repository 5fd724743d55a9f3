"""The results database: the ``inspections`` table, engines for SQLite and PostgreSQL, the store
the pipeline writes through, and Alembic migrations (revisions in ``migrations/``)."""
