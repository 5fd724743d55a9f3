"""Prune old result rows and judged images on a background thread, never blocking judging.

Only regular files (and quarantined symlinks, never their targets) directly inside the accepted/,
rejected/, quarantine/ and heatmaps/ folders are ever deleted. A file's age counts from the later of its mtime
and ctime: the ctime changes when the daemon moves the file in, so an image from a camera whose
clock is years behind (or one that sat in a backlog) is not deleted the moment it is judged. Rows
go in small transactions so the loop's writes wait at most milliseconds; rows whose move has not
finished are never deleted.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from daemon.config import RetentionConfig
from daemon.db.store import Store

DAY_S = 86_400.0


@dataclass(frozen=True)
class Pruned:
    rows: int = 0
    images: int = 0


class Retention:
    def __init__(
        self,
        store: Store,
        folders: Iterable[Path],
        settings: RetentionConfig,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.folders = tuple(folders)
        self.settings = settings  # replaced on SIGHUP; read once per round
        self._wall = wall
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="inspectd-retention", daemon=True)
        self._thread.start()

    def update(self, settings: RetentionConfig) -> None:
        self.settings = settings
        self._wake.set()  # a shorter period takes effect now, not after the old one

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.prune_once()
            except Exception:  # noqa: BLE001 - a failed round is retried next period, judging goes on
                logger.opt(exception=True).error("retention: pruning failed; will try again")
            self._wake.wait(self.settings.check_seconds)
            self._wake.clear()

    def prune_once(self) -> Pruned:
        settings = self.settings
        now = self._wall()
        rows = images = 0
        if settings.rows_days is not None:
            cutoff = dt.datetime.fromtimestamp(now - settings.rows_days * DAY_S, dt.timezone.utc)
            while not self._stop.is_set() and (n := self.store.delete_decided_before(cutoff)):
                rows += n
        if settings.images_days is not None:
            images = self._prune_images(now - settings.images_days * DAY_S)
        if rows or images:
            logger.info("retention: deleted {} row(s) and {} image(s) past their age", rows, images)
        return Pruned(rows, images)

    def _prune_images(self, cutoff: float) -> int:
        removed = 0
        for folder in self.folders:
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                logger.warning("retention: cannot list {}: {}", folder, exc)
                continue
            for entry in entries:
                if self._stop.is_set():
                    return removed
                if entry.name.startswith("."):
                    continue  # half-published copies of a cross-file-system move
                try:
                    if not (entry.is_file(follow_symlinks=False) or entry.is_symlink()):
                        continue  # a quarantined symlink goes itself; its target is never touched
                    st = entry.stat(follow_symlinks=False)
                    if max(st.st_mtime, st.st_ctime) >= cutoff:
                        continue
                    Path(entry.path).unlink()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    logger.warning("retention: cannot delete {}: {}", entry.path, exc)
                    continue
                removed += 1
        return removed
