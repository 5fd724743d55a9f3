"""Revision 0003 on SQLite and PostgreSQL: ``heatmap_path`` and the ``labels`` table exist, the
constraints hold, a label goes with its inspection, the models match the migrated schema, and the
revision downgrades cleanly."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from daemon.db.engine import make_engine
from daemon.db.migrate import alembic_config, current_revision, upgrade
from daemon.db.models import Base, Inspection, Label
from daemon.db.store import Store

NOW = dt.datetime(2026, 12, 8, 10, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        made = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
        # SQLite enforces ON DELETE CASCADE only when asked, per connection.
        event.listen(made, "connect", lambda conn, _rec: conn.execute("PRAGMA foreign_keys=ON"))
    else:
        made = make_engine(request.getfixturevalue("pg_url"))
    yield made
    made.dispose()


def row(**fields: object) -> Inspection:
    base: dict[str, object] = {
        "filename": "a.png", "source_path": "/in/a.png", "final_path": "/rej/a.png",
        "status": "rejected", "received_at": NOW, "decided_at": NOW,
    }  # fmt: skip
    return Inspection(**(base | fields))


def test_0003_adds_heatmap_path_and_labels(engine: Engine) -> None:
    assert upgrade(engine) == (None, "0003")
    schema = inspect(engine)
    assert "heatmap_path" in {c["name"] for c in schema.get_columns("inspections")}
    assert {c["name"] for c in schema.get_columns("labels")} == {
        "id", "inspection_id", "label", "labelled_by", "labelled_at", "copied_to",
    }  # fmt: skip
    (fk,) = schema.get_foreign_keys("labels")
    assert fk["referred_table"] == "inspections" and fk["options"].get("ondelete") == "CASCADE"
    assert "ix_labels_inspection_id" in {i["name"] for i in schema.get_indexes("labels")}
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_labels_follow_their_inspection_and_hold_only_good_or_defect(engine: Engine) -> None:
    upgrade(engine)
    store = Store(engine)
    with store.session() as session:
        inspection = row(heatmap_path="/heat/a.png")
        session.add(inspection)
        session.flush()
        session.add(Label(inspection_id=inspection.id, label="good", labelled_by="ana", labelled_at=NOW))
    with store.session() as session:
        (label,) = session.scalars(select(Label))
        assert label.label == "good" and label.copied_to is None
        assert session.scalars(select(Inspection.heatmap_path)).one() == "/heat/a.png"
    with pytest.raises(IntegrityError), store.session() as session:
        session.add(Label(inspection_id=label.inspection_id, label="maybe", labelled_by="x", labelled_at=NOW))
    with store.session() as session:
        session.delete(session.get(Inspection, label.inspection_id))
    with store.session() as session:
        assert list(session.scalars(select(Label))) == []


def test_0003_downgrades_to_0002(engine: Engine) -> None:
    upgrade(engine)
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0002")
    assert current_revision(engine) == "0002"
    schema = inspect(engine)
    assert "labels" not in schema.get_table_names()
    assert "heatmap_path" not in {c["name"] for c in schema.get_columns("inspections")}
