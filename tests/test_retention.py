"""Retention on real SQLite and real files: what goes, what always stays."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.config import RetentionConfig
from daemon.db.engine import make_engine
from daemon.db.migrate import upgrade
from daemon.db.models import Inspection
from daemon.db.store import Store
from daemon.run.retention import Retention

pytestmark = pytest.mark.timeout(60)
NOW = dt.datetime.now(dt.timezone.utc)


def row(name: str, age_days: float, moved: bool = True) -> Inspection:
    when = NOW - dt.timedelta(days=age_days)
    return Inspection(
        filename=name,
        source_path=f"/in/{name}",
        final_path=f"/out/{name}",
        status="accepted",
        score=0.1,
        threshold=0.5,
        model_id="m",
        received_at=when,
        decided_at=when,
        moved_at=when if moved else None,
    )


def add_row(store: Store, name: str, age_days: float, moved: bool = True) -> None:
    store.record(row(name, age_days, moved))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    return Store(engine)


def names(store: Store) -> list[str]:
    with store.session() as s:
        return sorted(s.scalars(select(Inspection.filename)))


def test_old_rows_go_unfinished_rows_stay(store: Store) -> None:
    with store.session() as s:
        s.add_all(row(f"old{i:04d}.png", age_days=40) for i in range(1203))  # more than two batches
    add_row(store, "recent.png", age_days=5)
    add_row(store, "old-but-unmoved.png", age_days=40, moved=False)  # recover() still needs it
    retention = Retention(store, [], RetentionConfig(rows_days=30))
    assert retention.prune_once().rows == 1203
    assert names(store) == ["old-but-unmoved.png", "recent.png"]
    store.engine.dispose()


def test_only_old_files_in_the_verdict_folders_are_deleted(tmp_path: Path, store: Store) -> None:
    folders = [tmp_path / d for d in ("accepted", "rejected", "quarantine")]
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    for d in [*folders, inbox, elsewhere]:
        d.mkdir()
    old = [d / f"old-{d.name}.png" for d in folders]
    kept = [inbox / "waiting.png", elsewhere / "other.png", folders[0] / ".half.png.inspectd-tmp"]
    for p in old + kept:
        p.write_bytes(b"x")
    (folders[1] / "sub").mkdir()
    (folders[1] / "sub" / "nested.png").write_bytes(b"x")  # only files directly in the folder
    target = elsewhere / "target.png"
    target.write_bytes(b"x")
    (folders[2] / "link.png").symlink_to(target)
    past = time.time() - 90 * 86_400
    os.utime(old[0], (past, past))  # an old mtime alone proves nothing: the ctime is what moved it in
    time.sleep(1.5)
    fresh = folders[0] / "fresh.png"
    fresh.write_bytes(b"x")
    os.utime(fresh, (past, past))  # a camera whose clock is far behind
    retention = Retention(store, folders, RetentionConfig(images_days=1 / 86_400))  # one second
    pruned = retention.prune_once()
    assert pruned.images == 4  # three old images and the old symlink entry
    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in kept) and fresh.exists() and target.exists()
    assert (folders[1] / "sub" / "nested.png").exists()
    store.engine.dispose()


def test_background_thread_prunes_and_stops_promptly(store: Store) -> None:
    add_row(store, "old.png", age_days=10)
    retention = Retention(store, [], RetentionConfig(rows_days=30, check_seconds=0.1))
    retention.start()
    try:
        time.sleep(0.3)
        assert names(store) == ["old.png"]
        retention.update(RetentionConfig(rows_days=7, check_seconds=3600))  # a reload, applied at once
        deadline = time.monotonic() + 5
        while names(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert names(store) == []
    finally:
        started = time.monotonic()
        retention.stop()
        assert time.monotonic() - started < 2  # bounded wait, not the hour-long period
    store.engine.dispose()
