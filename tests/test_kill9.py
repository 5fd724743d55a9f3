"""Fault injection: SIGKILL the real daemon process at random moments while a camera delivers a
burst of images (some under a name already used), restart it, and check exactly-once at the end:
every image in exactly one destination with exactly one row, database and folders agreeing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon.judge.destinations import Destinations
from tests.conftest import write_image
from tests.daemon_process import row_count
from tests.hotfolder import Folders, audit, sha

pytestmark = pytest.mark.timeout(300)

KILLS = 8
N_UNIQUE, N_SAME = 24, 6  # 30 images; six of them arrive one after another as "same.png"


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while "watching " not in self.text():
            assert self.proc.poll() is None, f"daemon exited {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"daemon not ready in {timeout} s:\n{self.text()}"
            time.sleep(0.05)

    def end(self, sig: int) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._fh.close()


def deliver(camera: list[tuple[str, Path]], inbox: Path, stop: threading.Event) -> None:
    """The camera: rename-into-place (rsync/FTP style) or a plain write, never over a waiting file."""
    for i, (name, src) in enumerate(camera):
        final = inbox / name
        deadline = time.monotonic() + 120
        while os.path.lexists(final) and not stop.is_set():  # a same.png still waiting: hold it
            assert time.monotonic() < deadline, "the inbox never took same.png"
            time.sleep(0.05)
        if i % 2:
            tmp = inbox / f".{name}.{i}.tmp"
            tmp.write_bytes(src.read_bytes())
            os.link(tmp, final)  # publish without overwriting
            tmp.unlink()
        else:
            with final.open("xb") as fh:
                fh.write(src.read_bytes())
        if stop.wait(random.uniform(0.2, 0.8)):
            return


def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path, tiny_model: Path) -> None:
    from tests.conftest import make_config

    seed = int(os.environ.get("INSPECTD_KILL_SEED", str(random.randrange(1 << 30))))
    random.seed(seed)
    print(f"kill test seed {seed} (set INSPECTD_KILL_SEED to replay)")
    config = make_config(tmp_path, tiny_model, watch__settle_ms=100, watch__rescan_seconds=1)
    folders = Folders(
        tmp_path,
        tmp_path / "inbox",
        Destinations(tmp_path / "accepted", tmp_path / "rejected", tmp_path / "quarantine"),
        tmp_path / "inspectd.db",
    )
    folders.inbox.mkdir()
    shots = tmp_path / "camera"
    shots.mkdir()
    camera = [(f"img{i:02d}.png", write_image(shots / f"u{i}.png", seed=1000 + i)) for i in range(N_UNIQUE)]
    for k in range(N_SAME):
        camera.insert(4 * k + 2, ("same.png", write_image(shots / f"s{k}.png", seed=2000 + k)))
    originals = {sha(p): name for name, p in camera}
    assert len(originals) == N_UNIQUE + N_SAME

    stop = threading.Event()
    feeder = threading.Thread(target=deliver, args=(camera, folders.inbox, stop), name="test-camera")
    logs: list[Path] = []
    t0 = time.monotonic()
    kills = during_startup = 0
    try:
        feeder.start()
        for n in range(KILLS):
            logs.append(tmp_path / f"daemon{n}.log")
            daemon = Daemon(config, logs[-1])
            if n % 4 == 3:  # during start-up: model load, migration or recovery
                time.sleep(random.uniform(0.5, 6.0))
                during_startup += "watching " not in daemon.text()
            else:
                daemon.wait_ready()
                before = row_count(folders.db)
                deadline = time.monotonic() + 20
                while row_count(folders.db) == before and time.monotonic() < deadline:
                    time.sleep(0.002)
                if n % 2:  # somewhere inside judging or filing of a later image
                    time.sleep(random.uniform(0.0, 2.5))
                # else: right after a row was committed, while its file is being claimed and moved
            assert daemon.end(signal.SIGKILL) == -signal.SIGKILL
            kills += 1
        logs.append(tmp_path / "final.log")
        final = Daemon(config, logs[-1])
        final.wait_ready()
        feeder.join(150)
        assert not feeder.is_alive(), "the camera could not deliver everything"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            row_count(folders.db) < len(originals) or any(folders.inbox.iterdir())
        ):
            time.sleep(0.2)
        assert final.end(signal.SIGTERM) == 0
    finally:
        stop.set()
        feeder.join(10)
    recovered = sum(log.read_text(errors="replace").count("finishing a move interrupted") for log in logs)
    figures = audit(folders, originals)
    figures |= {"kills": kills, "kills_during_startup": during_startup, "interrupted_moves": recovered}
    print(f"kill test figures: {figures} in {time.monotonic() - t0:.0f} s")
    assert figures["lost"] == 0 and figures["duplicated"] == 0 and figures["unknown_files"] == 0
    assert figures["rows"] == figures["images"] == N_UNIQUE + N_SAME
    assert kills == KILLS
