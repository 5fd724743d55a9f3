"""Filesystem events → candidate paths on a queue; nothing else happens on watchdog's thread.

A handler that raises would kill watchdog's observer thread and a slow one stalls every watch, so
the handler only filters names and enqueues. Events can be lost (inotify overflow, network shares),
so the inbox is scanned at start-up and every ``rescan_seconds``; that same timer restarts an
observer thread that died.

With ``recursive`` the whole tree under the inbox is watched (folders matching an ignore pattern,
such as ``.*``, are skipped) and neither the observer nor the scan ever follows a symbolic link.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import psutil
from loguru import logger
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from daemon.intake.names import ignored_folder, in_scope, is_candidate
from daemon.intake.settle import Kind

EventQueue = queue.SimpleQueue[tuple[Kind, Path]]

# watchdog's inotify observer holds every IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO,
# and its queue sleeps out that half second even when the pair is made, holding back every event
# behind it (watchdog issue #649). Each claim renames a file out of the inbox (a half that never
# pairs), so the next upload was seen up to 0.5 s late: idle latency was inference + 245 ms. The
# kernel queues both halves of a rename together, so 20 ms pairs them all; an unpaired half still
# arrives, as a deletion or a creation, and a creation settles like any new file.
MOVE_PAIRING_S = 0.02
ObserverKind = Literal["auto", "native", "polling"]

NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "davfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.rclone",
        "fuse.gvfsd-fuse",
        "lustre",
        "beegfs",
        "gpfs",
    }
)


def filesystem_type(path: Path) -> str:
    """fstype of the mount holding ``path`` (longest matching mount point), '' if unknown."""
    target = os.path.realpath(path)
    best, fstype = "", ""
    for part in psutil.disk_partitions(all=True):
        mp = part.mountpoint
        if (target == mp or target.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
            best, fstype = mp, part.fstype
    return fstype


def choose_observer(
    kind: ObserverKind, inbox: Path, polling_interval: float = 1.0
) -> tuple[str, Callable[[], BaseObserver]]:
    """Name and factory of the observer: polling where inotify cannot see writes (NFS, SMB)."""

    def polling() -> BaseObserver:
        # lstat, not stat: a symlink in the inbox is reported as itself and never walked into.
        return PollingObserverVFS(os.lstat, os.scandir, polling_interval=polling_interval)

    def native() -> BaseObserver:
        _pair_moves_quickly()
        if sys.platform.startswith("linux"):
            from watchdog.observers.inotify import InotifyObserver

            # A file renamed into the inbox from outside it (an uploader's staging folder) is
            # reported as a move with no source instead of a creation, so it counts as complete at
            # once rather than after settle_ms (1 s by default; a rename never shows a partial file).
            return InotifyObserver(generate_full_events=True)
        return Observer()

    if kind == "polling":
        return "polling", polling
    if kind == "native":
        return "native", native
    fstype = filesystem_type(inbox)
    if fstype in NETWORK_FS or fstype.startswith("fuse."):
        return f"polling (inbox is on {fstype})", polling
    return "native", native


def _pair_moves_quickly() -> None:
    """Set the pairing delay where this watchdog keeps it: its move grouper since 7.0, its inotify
    buffer before (``watchdog>=4.0``); neither exists off Linux, where nothing is held back."""
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper as Holder
    except ImportError:
        try:
            from watchdog.observers.inotify_buffer import InotifyBuffer as Holder  # type: ignore[no-redef]
        except ImportError:
            return
    Holder.delay = MOVE_PAIRING_S


class _Enqueue(FileSystemEventHandler):
    def __init__(
        self,
        inbox: Path,
        out: EventQueue,
        extensions: tuple[str, ...],
        ignore: tuple[str, ...],
        recursive: bool = False,
    ):
        self.inbox = inbox
        self.out = out
        self.extensions = extensions
        self.ignore = ignore
        self.recursive = recursive

    def _offer(self, kind: Kind, raw: str | bytes) -> None:
        path = Path(os.fsdecode(raw))
        if is_candidate(path.name, self.extensions, self.ignore) and in_scope(
            self.inbox, path, self.ignore, self.recursive
        ):
            self.out.put((kind, path))

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.is_directory:
                return
            if isinstance(event, FileMovedEvent):
                if event.dest_path:  # empty: renamed out of the watched tree, like a deletion
                    self._offer("moved", event.dest_path)
            elif isinstance(event, FileClosedEvent):
                self._offer("closed", event.src_path)
            elif isinstance(event, FileCreatedEvent):
                self._offer("created", event.src_path)
            elif isinstance(event, FileModifiedEvent):
                self._offer("modified", event.src_path)
        except Exception:  # noqa: BLE001 - never let an event kill the observer thread
            logger.opt(exception=True).warning("ignored a filesystem event that could not be handled")


class InboxWatcher:
    """Owns the watchdog observer and the rescan timer; produces (kind, path) on ``events``."""

    def __init__(
        self,
        inbox: Path,
        *,
        extensions: tuple[str, ...],
        ignore: tuple[str, ...],
        rescan_seconds: float,
        observer: ObserverKind = "auto",
        polling_interval: float = 1.0,
        recursive: bool = False,
    ) -> None:
        self.inbox = inbox
        self.extensions = extensions
        self.ignore = ignore
        self.recursive = recursive
        self.rescan_seconds = rescan_seconds
        self.events: EventQueue = queue.SimpleQueue()
        self.observer_name, self._make_observer = choose_observer(observer, inbox, polling_interval)
        # inotify reports close-after-write; polling (and the BSD/macOS observers) never do.
        self.reports_close = self.observer_name == "native" and sys.platform.startswith("linux")
        self._observer: BaseObserver | None = None
        self._stop = threading.Event()
        self._rescanner: threading.Thread | None = None
        self.restarts = 0

    def start(self) -> None:
        self._observer = self._new_observer()
        self._observer.start()
        self.scan()  # after the observer runs, so nothing falls between the two
        self._rescanner = threading.Thread(target=self._rescan_loop, name="inspectd-rescan", daemon=True)
        self._rescanner.start()

    def _new_observer(self) -> BaseObserver:
        observer = self._make_observer()
        observer.schedule(
            _Enqueue(self.inbox, self.events, self.extensions, self.ignore, self.recursive),
            str(self.inbox),
            recursive=self.recursive,
        )
        observer.name = "inspectd-observer"
        return observer

    def scan(self) -> int:
        """Enqueue every candidate already in the inbox (and its sub-folders if recursive).

        Symlinks and other non-folders with image names are enqueued too, so the pipeline can
        quarantine them with a reason; links to folders are never descended into.
        """
        found = 0
        folders = [self.inbox]
        while folders:
            folder = folders.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            if self.recursive and not ignored_folder(entry.name, self.ignore):
                                folders.append(Path(entry.path))
                        elif is_candidate(entry.name, self.extensions, self.ignore):
                            self.events.put(("scan", Path(entry.path)))
                            found += 1
            except OSError as exc:
                logger.warning("cannot scan {}: {}", folder, exc)
        return found

    def _rescan_loop(self) -> None:
        while not self._stop.wait(self.rescan_seconds):
            try:
                self._ensure_observer()
                self.scan()
            except Exception:  # noqa: BLE001 - the safety net must outlive one bad scan
                logger.opt(exception=True).error("inbox rescan failed; will try again")

    def _ensure_observer(self) -> None:
        if self._observer is not None and not self._observer.is_alive() and not self._stop.is_set():
            self.restarts += 1
            logger.error(
                "filesystem observer stopped unexpectedly; restarting it (restart #{})", self.restarts
            )
            self._observer = self._new_observer()
            self._observer.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._rescanner is not None:  # first, so it cannot restart an observer behind our back
            self._rescanner.join(timeout)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
