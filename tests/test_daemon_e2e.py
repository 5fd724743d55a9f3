"""End to end: a real ``inspectd run`` process, a real watchdog observer, files arriving the ways
cameras deliver them, SIGTERM at the end."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import make_config, write_image
from tests.daemon_process import DaemonProcess, row_count, wait_rows

pytestmark = pytest.mark.timeout(300)


def slow_write(src: Path, dst: Path, chunks: int = 4, pause: float = 0.15) -> None:
    data = src.read_bytes()
    step = len(data) // chunks + 1
    with dst.open("wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i : i + step])
            fh.flush()
            time.sleep(pause)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_24_images_by_cp_rename_slow_writer_and_preexisting(tmp_path: Path, tiny_model: Path) -> None:
    config = make_config(tmp_path, tiny_model)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source = tmp_path / "camera"
    source.mkdir()
    originals = [write_image(source / f"img{i:02d}.png", seed=i) for i in range(24)]

    for src in originals[:3]:  # already waiting before the daemon starts
        shutil.copy(src, inbox / src.name)
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        for src in originals[3:10]:  # plain cp
            shutil.copy(src, inbox / src.name)
        for src in originals[10:17]:  # temp name, then rename (rsync, many FTP clients)
            tmp = inbox / f".{src.name}.part"
            shutil.copy(src, tmp)
            tmp.rename(inbox / src.name)
        writers = [
            threading.Thread(target=slow_write, args=(src, inbox / src.name)) for src in originals[17:]
        ]
        for w in writers:
            w.start()
        for w in writers:
            w.join(30)
        assert wait_rows(tmp_path / "inspectd.db", 24, timeout=180) == 24
    finally:
        code = daemon.stop(signal.SIGTERM)
    assert code == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "stopped cleanly" in log

    judged = files_in(tmp_path / "accepted") + files_in(tmp_path / "rejected")
    assert sorted(judged) == sorted(p.name for p in originals)
    assert files_in(inbox) == [] and files_in(tmp_path / "quarantine") == []
    with sqlite3.connect(tmp_path / "inspectd.db") as conn:
        names = [r[0] for r in conn.execute("SELECT filename FROM inspections")]
        unmoved = conn.execute("SELECT count(*) FROM inspections WHERE moved_at IS NULL").fetchone()[0]
    assert sorted(names) == sorted(p.name for p in originals) and unmoved == 0
    for src in originals:  # nothing judged on a half-written file
        moved = next(
            p for p in (tmp_path / "accepted" / src.name, tmp_path / "rejected" / src.name) if p.exists()
        )
        assert moved.read_bytes() == src.read_bytes()


def test_sigterm_mid_stream_loses_nothing_and_restart_finishes(tmp_path: Path, tiny_model: Path) -> None:
    config = make_config(tmp_path, tiny_model, watch__settle_ms=100)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    db = tmp_path / "inspectd.db"
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    for i in range(10):
        write_image(inbox / f"burst{i}.png", seed=100 + i)
    wait_rows(db, 1, timeout=60)
    assert daemon.stop(signal.SIGTERM) == 0
    first = row_count(db)
    judged = files_in(tmp_path / "accepted") + files_in(tmp_path / "rejected")
    assert len(judged) == first and len(files_in(inbox)) == 10 - first  # current image finished

    again = DaemonProcess(config, tmp_path / "daemon2.log")
    again.start()
    try:
        assert wait_rows(db, 10, timeout=120) == 10
    finally:
        assert again.stop(signal.SIGINT) == 0
    assert row_count(db) == 10 and files_in(inbox) == []
