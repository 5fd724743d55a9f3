"""Transient faults: a database locked by another writer, a full or read-only destination, a model
that is briefly unavailable. Each is retried with back-off and logged; nothing is lost or doubled,
and work carries on once the fault clears."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from daemon.db.store import Store
from daemon.judge.destinations import Destinations
from inspectd.errors import ModelError
from inspectd.scorer import Score
from tests.conftest import write_image
from tests.hotfolder import (
    FakeScorer,
    audit,
    make_folders,
    make_pipeline,
    make_store,
    offer,
    settle,
    sha,
    tmpfs,
)


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{level} {message}")
    yield lines
    logger.remove(sink)


def impatient_store(db: Path) -> Store:
    """The daemon's store, but giving up on a lock after 0.2 s instead of 10 s (test speed)."""
    store = make_store_at(db)
    event.listen(store.engine, "connect", lambda conn, _rec: conn.execute("PRAGMA busy_timeout=200"))
    store.engine.dispose()  # connections pooled by the migration keep the 10 s timeout
    return store


def make_store_at(db: Path) -> Store:
    from daemon.db.engine import make_engine
    from daemon.db.migrate import upgrade

    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    return Store(engine)


class Locker:
    """Another process's long write transaction on the results database (an admin's sqlite3 shell)."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, timeout=5, isolation_level=None, check_same_thread=False)

    def __enter__(self) -> Locker:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("UPDATE inspections SET host = host WHERE id < 0")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def test_database_locked_by_a_writer_defers_then_judges_once(tmp_path: Path, logs: list[str]) -> None:
    folders = make_folders(tmp_path)
    store = impatient_store(folders.db)
    pipeline = make_pipeline(folders, FakeScorer(), store=store)
    pipeline.recover()
    img = write_image(folders.inbox / "a.png", seed=1)
    originals = {sha(img): "a.png"}
    with Locker(folders.db):
        offer(pipeline, img)
        outcomes = [pipeline.step(timeout=0.01).outcome for _ in range(3)]
        assert "deferred" in outcomes and pipeline.backlog() == 1  # it waits, claimed
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pipeline.backlog():
        pipeline.step(timeout=0.1)
    assert audit(folders, originals) == {
        "images": 1,
        "rows": 1,
        "lost": 0,
        "duplicated": 0,
        "unknown_files": 0,
    }
    assert any("database unavailable" in line and "retrying in" in line for line in logs)


def test_database_unreachable_at_start_holds_back_new_work_until_recovery_is_done(
    tmp_path: Path,
) -> None:
    """In WAL mode a reader is never blocked, so this is PostgreSQL restarting or a network blip."""
    folders = make_folders(tmp_path)
    old = write_image(folders.inbox / "old.png", seed=2)
    originals = {sha(old): "old.png"}
    first = make_pipeline(folders, FakeScorer())
    first.filer.file = lambda p: "waiting"  # type: ignore[method-assign]  # crash after the commit
    offer(first, old)
    first.step(timeout=0.01)
    first.store.engine.dispose()
    (claimed,) = list(folders.inbox.rglob("*old.png"))  # it waits in the claims folder
    new = write_image(folders.inbox / "new.png", seed=3)
    originals[sha(new)] = "new.png"

    pipeline = make_pipeline(folders, FakeScorer())
    real_unmoved = pipeline.store.unmoved
    down = {"until": time.monotonic() + 1.0}

    def unmoved(owner: object) -> list:
        if time.monotonic() < down["until"]:
            raise OperationalError("SELECT ...", None, ConnectionRefusedError("connection refused"))
        return real_unmoved(owner)  # type: ignore[arg-type]

    pipeline.store.unmoved = unmoved  # type: ignore[method-assign]
    assert pipeline.recover() == 0  # does not raise: the daemon starts and waits
    offer(pipeline, new)
    assert pipeline.step(timeout=0.01).outcome == "deferred"
    assert new.exists() and claimed.exists()  # nothing new judged before the old row is settled
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (new.exists() or claimed.exists() or pipeline.backlog()):
        pipeline.step(timeout=0.1)
    assert audit(folders, originals) == {
        "images": 2,
        "rows": 2,
        "lost": 0,
        "duplicated": 0,
        "unknown_files": 0,
    }


def test_marking_blocked_by_a_lock_is_retried_and_a_same_name_upload_is_separate(tmp_path: Path) -> None:
    folders = make_folders(tmp_path)
    pipeline = make_pipeline(folders, FakeScorer(), store=impatient_store(folders.db))
    real_record = pipeline.store.record
    lock: list[Locker] = []

    def record_then_lock(row: object) -> object:
        out = real_record(row)  # type: ignore[arg-type]
        if not lock:
            lock.append(Locker(folders.db).__enter__())  # the move goes through, moved_at cannot
        return out

    pipeline.store.record = record_then_lock  # type: ignore[method-assign]
    first = write_image(folders.inbox / "cam.png", seed=4)
    originals = {sha(first): "cam.png #1"}
    offer(pipeline, first)
    pipeline.step(timeout=0.01)
    assert pipeline.filer.pending and pipeline.filer.pending[0].stage == "mark"
    second = write_image(folders.inbox / "cam.png", seed=5)  # the name is free again: a new image
    originals[sha(second)] = "cam.png #2"
    lock[0].__exit__()
    offer(pipeline, second)
    settle(pipeline)
    assert audit(folders, originals) == {
        "images": 2,
        "rows": 2,
        "lost": 0,
        "duplicated": 0,
        "unknown_files": 0,
    }


def test_disk_full_destination_keeps_the_image_and_finishes_when_space_returns(
    tmp_path: Path, logs: list[str]
) -> None:
    with tmpfs(tmp_path / "small", size="512k") as small:
        dests = Destinations(small / "accepted", small / "rejected", small / "quarantine")
        folders = make_folders(tmp_path, dests)
        filler = small / "filler.bin"
        with filler.open("wb") as fh:  # leave ~100 kB free
            fh.write(b"\0" * (400 * 1024))
        big = write_image(folders.inbox / "big.png", seed=6, size=256)  # ~200 kB of noise
        originals = {sha(big): "big.png"}
        pipeline = make_pipeline(folders, FakeScorer(), threshold=0.0)
        offer(pipeline, big)
        result = pipeline.step(timeout=0.01)
        assert result.outcome == "rejected" and result.final_path is None  # judged, not filed yet
        assert pipeline.backlog() == 1
        assert [p.name for p in dests.rejected.iterdir()] == []  # no partial file, no temp file
        assert any("No space left on device" in line and "retrying in" in line for line in logs)
        filler.unlink()
        settle(pipeline)
        assert audit(folders, originals)["lost"] == 0
        assert [p.name for p in dests.rejected.iterdir()] == ["big.png"]


def test_read_only_destination_is_retried_until_writable(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "dest") as dest:
        dests = Destinations(dest / "accepted", dest / "rejected", dest / "quarantine")
        folders = make_folders(tmp_path, dests)
        subprocess.run(["mount", "-o", "remount,ro", str(dest)], check=True, timeout=20)
        try:
            img = write_image(folders.inbox / "ro.png", seed=7)
            originals = {sha(img): "ro.png"}
            pipeline = make_pipeline(folders, FakeScorer(), threshold=0.0)
            offer(pipeline, img)
            pipeline.step(timeout=0.01)
            pipeline.filer.retries.clear_waits()
            assert pipeline.step(timeout=0.01).outcome == "deferred"
            assert pipeline.filer.retries.attempts(pipeline.filer.pending[0].row_id) == 2
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(dest)], check=True, timeout=20)
        settle(pipeline)
        assert audit(folders, originals)["rows"] == 1
        assert (dests.rejected / "ro.png").exists()


class FlakyModel(FakeScorer):
    """The model file is briefly missing (a deploy swapping files): ModelError, then it is back."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def score(self, path: Path) -> Score:
        if self.failures > 0:
            self.failures -= 1
            raise ModelError("model.xml: no such file (being replaced)")
        return super().score(path)


def test_model_briefly_unavailable_defers_instead_of_quarantining(tmp_path: Path, logs: list[str]) -> None:
    folders = make_folders(tmp_path)
    pipeline = make_pipeline(folders, FlakyModel(failures=2))
    img = write_image(folders.inbox / "m.png", seed=8)
    originals = {sha(img): "m.png"}
    offer(pipeline, img)
    deadline = time.monotonic() + 10
    outcomes = []
    while time.monotonic() < deadline and (img.exists() or pipeline.backlog()):
        outcomes.append(pipeline.step(timeout=0.1).outcome)
    assert outcomes.count("deferred") == 2 and "quarantined" not in outcomes
    assert audit(folders, originals)["rows"] == 1
    assert not list(folders.dests.quarantine.iterdir())
    assert sum("model unavailable" in line for line in logs) == 2


def test_locker_thread_released_while_daemon_waits(tmp_path: Path) -> None:
    """A lock released while a write is waiting on busy_timeout: the write simply succeeds."""
    folders = make_folders(tmp_path)
    store = make_store(folders)  # the daemon's own 10 s busy timeout
    pipeline = make_pipeline(folders, FakeScorer(), store=store)
    img = write_image(folders.inbox / "w.png", seed=9)
    locker = Locker(folders.db).__enter__()
    threading.Timer(0.5, locker.__exit__).start()
    offer(pipeline, img)
    t0 = time.monotonic()
    result = pipeline.step(timeout=0.01)
    assert result.outcome in ("accepted", "rejected") and 0.3 < time.monotonic() - t0 < 9
