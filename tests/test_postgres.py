"""PostgreSQL: the same migrations and store as SQLite, several daemons sharing one database and one
inbox under random SIGKILLs, a daemon that starts before its server, and one-line errors for the
mistakes a user makes in ``database.url``. A real server (tests/postgres.py) in every test."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from daemon.cli import main
from daemon.db.engine import make_engine
from daemon.db.migrate import current_revision, head_revision, upgrade
from daemon.db.models import Inspection
from daemon.db.store import Owner, Store
from daemon.intake.names import CLAIMS_DIR
from tests.conftest import make_config, write_image
from tests.daemon_process import DaemonProcess
from tests.hotfolder import FakeScorer, make_folders, make_pipeline, offer, settle


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shared_config(root: Path, name: str, model: Path, shared: Path, url: str) -> Path:
    """A daemon's own config (own state folder, so its own instance id), shared folders and database."""
    folder = root / name
    folder.mkdir(parents=True)
    data = {
        "paths": {
            "inbox": str(shared / "inbox"),
            "accepted": str(shared / "accepted"),
            "rejected": str(shared / "rejected"),
            "quarantine": str(shared / "quarantine"),
            "state": str(folder / "state"),
        },
        "database": {"url": url},
        "model": {"path": str(model), "check_seconds": 0},
        "watch": {"settle_ms": 200, "rescan_seconds": 1},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_migrations_and_the_pipeline_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    engine = make_engine(pg_url)
    assert upgrade(engine) == (None, head_revision())
    assert current_revision(engine) == head_revision()
    folders = make_folders(tmp_path)
    store = Store(engine)
    pipeline = make_pipeline(folders, FakeScorer(), store=store, instance="a1")
    images = [write_image(folders.inbox / f"p{i}.png", seed=i) for i in range(3)]
    digests = {sha(p) for p in images}
    offer(pipeline, *images)
    assert pipeline.recover() == 0
    settle(pipeline)
    with store.session() as session:
        rows = list(session.scalars(select(Inspection)))
    assert {r.sha256 for r in rows} == digests and all(r.moved_at is not None for r in rows)
    assert {(r.line, r.instance) for r in rows} == {("default", "a1")}
    assert store.unmoved(Owner(pipeline.host, "a1", "default")) == []
    engine.dispose()


def test_each_daemon_recovers_only_its_own_rows(tmp_path: Path, pg_url: str) -> None:
    """A daemon starting next to another must not void or move the other's committed rows."""
    engine = make_engine(pg_url)
    upgrade(engine)
    folders = make_folders(tmp_path)
    a = make_pipeline(folders, FakeScorer(), store=Store(engine), instance="a")
    a.recover()
    a.filer.file = lambda p: "waiting"  # type: ignore[method-assign]  # a commits, then is busy
    img = write_image(folders.inbox / "mine.png", seed=4)
    offer(a, img)
    a.step(timeout=0.01)
    b = make_pipeline(folders, FakeScorer(), store=Store(engine), instance="b")
    assert b.recover() == 0  # not b's
    with Store(engine).session() as session:
        (row,) = session.scalars(select(Inspection))
    assert row.instance == "a" and row.moved_at is None and Path(row.claim_path or "").exists()
    engine.dispose()


@pytest.mark.timeout(900)
def test_three_daemons_one_database_one_inbox_random_kills(
    tmp_path: Path, tiny_model: Path, pg_url: str
) -> None:
    shared = tmp_path / "shared"
    for sub in ("inbox", "accepted", "rejected", "quarantine"):
        (shared / sub).mkdir(parents=True)
    configs = [shared_config(tmp_path, f"d{i}", tiny_model, shared, pg_url) for i in range(3)]
    daemons = [DaemonProcess(c, c.parent / "daemon.log") for c in configs]
    for d in daemons:
        d.start()
    rng = random.Random(13)
    originals: dict[str, str] = {}
    source = tmp_path / "camera"
    source.mkdir()
    kills = 0
    for i in range(300):
        image = write_image(source / f"cam{i:03d}.png", seed=1000 + i, size=48)
        originals[sha(image)] = image.name
        tmp = shared / "inbox" / f".{image.name}.part"
        shutil.copyfile(image, tmp)
        tmp.rename(shared / "inbox" / image.name)
        if i % 40 == 39:  # now and then a daemon dies without warning, and comes back
            victim = daemons[rng.randrange(3)]
            victim.stop(signal.SIGKILL)
            kills += 1
            victim.start()
        time.sleep(0.01)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if _count_rows(pg_url) >= 300 and not _waiting(shared / "inbox"):
            break
        time.sleep(1)
    codes = [d.stop(signal.SIGTERM) for d in daemons]
    assert codes == [0, 0, 0]
    assert kills == 7

    engine = make_engine(pg_url)
    with Store(engine).session() as session:
        rows = list(session.scalars(select(Inspection)))
    engine.dispose()
    by_sha: dict[str, int] = {}
    for row in rows:
        by_sha[row.sha256 or ""] = by_sha.get(row.sha256 or "", 0) + 1
        assert row.moved_at is not None and Path(row.final_path).is_file(), row.filename
    assert set(by_sha) == set(originals) and set(by_sha.values()) == {1}, "exactly one row per image"
    filed: dict[str, int] = {}
    for folder in ("accepted", "rejected", "quarantine"):
        for path in (shared / folder).rglob("*"):
            if path.is_file():
                filed[sha(path)] = filed.get(sha(path), 0) + 1
    assert set(filed) == set(originals) and set(filed.values()) == {1}, "each image in one destination"
    assert _waiting(shared / "inbox") == [], "nothing left in the inbox or a claims folder"
    owners = {row.instance for row in rows}
    assert len(owners) == 3  # all three took part


def _count_rows(url: str) -> int:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(dsn) as conn:
            return int(
                conn.execute("SELECT count(*) FROM inspections WHERE moved_at IS NOT NULL").fetchone()[0]
            )
    except psycopg.Error:
        return 0


def _waiting(inbox: Path) -> list[str]:
    return sorted(str(p.relative_to(inbox)) for p in inbox.rglob("*") if p.is_file())


@pytest.mark.timeout(300)
def test_daemon_started_before_its_server_waits_then_judges(tmp_path: Path, tiny_model: Path) -> None:
    from tests.postgres import PostgresServer

    server = PostgresServer()  # initialised, not started
    config = make_config(tmp_path, tiny_model, database__url=server.url())
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    images = [write_image(inbox / f"early{i}.png", seed=i) for i in range(3)]
    started = time.monotonic()
    daemon.proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
        stdout=(log := (tmp_path / "daemon.log").open("ab")),
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    daemon._log_fh = log
    try:
        daemon.wait_for_log("waiting for the database", 60)
        time.sleep(max(0.0, 20 - (time.monotonic() - started)))
        assert daemon.proc.poll() is None  # still there, 20 s later: not a crash loop
        server.start()
        daemon.wait_for_log("watching", 120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _count_rows(server.url()) < len(images):
            time.sleep(0.5)
        assert _count_rows(server.url()) == len(images)
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        server.remove()
    text = (tmp_path / "daemon.log").read_text()
    assert "waiting for the database" in text and "connection" in text.lower()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://user:pw@127.0.0.1/db", "database.url mysql://user:***@127.0.0.1/db"),
        ("not a url", "database.url"),
    ],
)
def test_a_wrong_database_url_is_one_line(
    tmp_path: Path, tiny_model: Path, url: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, tiny_model, database__url=url)
    for command in (["db", "upgrade"], ["run"]):
        assert main([*command, "--config", str(config)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0] and "Traceback" not in err[0], err


def test_a_refused_password_is_one_line(
    tmp_path: Path, tiny_model: Path, postgres: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, tiny_model, database__url=postgres.url(password="wrong"))
    for command in (["db", "upgrade"], ["run"]):
        assert main([*command, "--config", str(config)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "database.url" in err[0] and "password" in err[0], err
        assert "wrong" not in err[0]  # the password is never printed


def test_an_unknown_host_is_one_line_for_the_commands(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(
        tmp_path, tiny_model, database__url="postgresql+psycopg://u:p@no-such-host.invalid/db"
    )
    assert main(["db", "upgrade", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "database.url" in err[0] and "no-such-host.invalid" in err[0], err


def test_sqlite_locked_at_first_start_is_waited_for(tmp_path: Path, tiny_model: Path) -> None:
    """Another program creates the database file and holds it under an exclusive lock while
    ``inspectd run`` starts for the first time: the daemon waits instead of exiting."""
    import sqlite3

    db = tmp_path / "inspectd.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(25.0, lambda: (holder.execute("ROLLBACK"), holder.close()))
    release.start()
    config = make_config(tmp_path, tiny_model)
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env={"PYTHONUNBUFFERED": "1"})
    try:
        daemon.start(ready_timeout=120)
        write_image(tmp_path / "inbox" / "after.png", seed=1)
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline
            and not list((tmp_path / "accepted").glob("*"))
            and not list((tmp_path / "rejected").glob("*"))
        ):
            time.sleep(0.2)
        assert daemon.stop() == 0
    finally:
        release.join(10)
    text = (tmp_path / "daemon.log").read_text()
    assert "waiting for the database" in text and "locked" in text
    assert db.exists()
    assert not (tmp_path / "inbox" / CLAIMS_DIR).exists()
