"""The store's two writes per image, on a real migrated SQLite database: the row as given, with
its id, and the mark of its move on that row alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from daemon.db.engine import make_engine
from daemon.db.migrate import upgrade
from daemon.db.models import Inspection
from daemon.db.store import Query, Store

pytestmark = pytest.mark.timeout(60)
NOW = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.timezone.utc)


def new_row(name: str, line: str | None = "press-2") -> Inspection:
    return Inspection(
        filename=name,
        source_path=f"/in/{name}",
        final_path=f"/out/{name}",
        status="rejected",
        score=0.7,
        threshold=0.5,
        model_id="m1",
        sha256="ab" * 32,
        size_bytes=1234,
        received_at=NOW,
        decided_at=NOW + dt.timedelta(milliseconds=40),
        latency_ms=40.0,
        inference_ms=25.0,
        host="pc1",
        line=line,
        instance="local",
        claim_path=f"/claims/{name}",
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path / 'results.db'}")
    upgrade(engine)
    return Store(engine)


def test_record_commits_every_field_and_sets_the_id(store: Store) -> None:
    seen: list[int] = []
    store.on_record = lambda row: seen.append(row.id)
    first, second = store.record(new_row("a.png")), store.record(new_row("b.png"))
    assert (first.id, second.id) == (1, 2)
    assert seen == [1, 2]
    (read,) = [row for row in store.query(Query(limit=None)) if row.id == first.id]
    expected = new_row("a.png")
    for column in Inspection.__table__.columns:
        if column.key != "id":
            got, want = getattr(read, column.key), getattr(expected, column.key)
            if isinstance(want, dt.datetime):
                got = got.replace(tzinfo=dt.timezone.utc) if got.tzinfo is None else got
            assert got == want, column.key


def test_a_row_without_a_line_gets_the_default_line_in_the_table_and_on_the_object(store: Store) -> None:
    row = store.record(new_row("c.png", line=None))
    assert row.line == "default"
    assert [r.line for r in store.query(Query())] == ["default"]


def test_mark_moved_marks_that_row_only(store: Store) -> None:
    rows = [store.record(new_row(f"{i}.png")) for i in range(3)]
    store.mark_moved(rows[1].id, NOW + dt.timedelta(seconds=1))
    moved = {row.id: row.moved_at for row in store.query(Query(limit=None))}
    assert moved[rows[0].id] is None and moved[rows[2].id] is None
    assert moved[rows[1].id] is not None
