"""systemd's notify protocol against real datagram sockets: the Notifier alone, then ``inspectd run``
as a child process with ``$NOTIFY_SOCKET`` set, the way systemd starts a Type=notify service."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.run.notify import Notifier
from tests.conftest import make_config, write_image
from tests.daemon_process import DaemonProcess, wait_rows

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    # AF_UNIX paths are limited to 108 bytes: a short folder of our own, not pytest's long tmp_path.
    folder = Path(tempfile.mkdtemp(prefix="inspectd-ntf-"))
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink()
        folder.rmdir()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_notifier_speaks_the_protocol_on_a_path_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    clock = FakeClock()
    notifier = Notifier(path, watchdog_usec=2_000_000, clock=clock)
    notifier.ready("judged 0")
    assert sock.recv(4096) == b"READY=1\nSTATUS=judged 0"
    notifier.watchdog()
    clock.now += 0.5
    notifier.watchdog()  # within half the watchdog period: not sent
    clock.now += 0.6
    notifier.watchdog()
    notifier.status("judged 0")  # unchanged: not sent
    notifier.status("judged 1")
    notifier.stopping()
    notifier.close()
    got = [sock.recv(4096) for _ in range(4)]
    assert got[:3] == [b"WATCHDOG=1", b"WATCHDOG=1", b"STATUS=judged 1"]
    assert got[3].startswith(b"STOPPING=1\nSTATUS=")


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"inspectd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
        notifier.close()
    finally:
        sock.close()


def test_notifier_is_silent_outside_systemd_and_for_another_pid() -> None:
    assert not Notifier.from_environment({}).enabled
    assert not Notifier.from_environment({}).send("READY=1")
    other = Notifier.from_environment(
        {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    )
    assert other.watchdog_interval is None
    mine = Notifier.from_environment(
        {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine.watchdog_interval == 0.5
    assert not mine.send("READY=1")  # nobody listening: reported once in the log, never raised


@dataclass
class Received:
    at: float
    message: str
    log_said_watching: bool
    database_existed: bool


def listen(sock: socket.socket, log: Path, db: Path, out: list[Received], stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        watching = log.exists() and "watching " in log.read_text(errors="replace")
        out.append(Received(time.monotonic(), data.decode(), watching, db.exists()))


def test_daemon_notifies_ready_watchdog_status_and_stopping(
    tmp_path: Path, tiny_model: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    config = make_config(tmp_path, tiny_model, watch__settle_ms=100)
    log, db = tmp_path / "daemon.log", tmp_path / "inspectd.db"
    received: list[Received] = []
    stop = threading.Event()
    reader = threading.Thread(
        target=listen, args=(sock, log, db, received, stop), name="inspectd-test-notify", daemon=True
    )
    reader.start()
    daemon = DaemonProcess(config, log, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    try:
        daemon.start()
        inbox = tmp_path / "inbox"
        for i in range(3):
            write_image(inbox / f"part{i}.png", seed=i)
        assert wait_rows(db, 3, timeout=90) == 3
        time.sleep(2.0)  # idle: the loop keeps going round, so the pings keep coming
        code = daemon.stop(signal.SIGTERM)
        time.sleep(0.5)
    finally:
        stop.set()
        reader.join(5)
    assert code == 0
    messages = [r.message for r in received]
    first = received[0]
    assert first.message.startswith("READY=1\n"), messages[:3]
    assert first.log_said_watching and first.database_existed  # model loaded, DB migrated, inbox watched
    assert sum(m.startswith("READY=1") for m in messages) == 1

    pings = [r.at for r in received if r.message == "WATCHDOG=1"]
    assert len(pings) >= 4
    assert min(b - a for a, b in itertools.pairwise(pings)) >= 0.45  # rate-limited to half
    statuses = [m for m in messages if "STATUS=judged 3 " in m]
    with sqlite3.connect(db) as conn:  # verdicts of a 3-step model are arbitrary: compare with the DB
        counts = dict(conn.execute("SELECT status, count(*) FROM inspections GROUP BY status").fetchall())
    expected = (
        f"({counts.get('accepted', 0)} accepted, {counts.get('rejected', 0)} rejected, "
        f"{counts.get('quarantined', 0)} quarantined)"
    )
    assert statuses and expected in statuses[-1], (statuses, counts)
    assert messages[-1].startswith("STOPPING=1\n")
    assert not any(m.startswith("STOPPING=1") for m in messages[:-1])


def test_no_ready_when_start_up_fails(
    tmp_path: Path, tiny_model: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    config = make_config(tmp_path, tmp_path / "no-model-here")
    daemon = DaemonProcess(config, tmp_path / "daemon.log", env={"NOTIFY_SOCKET": path})
    with pytest.raises(AssertionError, match="daemon exited 2"):
        daemon.start(ready_timeout=60)
    daemon._log_fh.close()
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
