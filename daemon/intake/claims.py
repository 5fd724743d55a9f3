"""Claim on arrival: a complete capture is renamed out of the inbox into this daemon's own claims
folder at once, so its inbox name is free for the next upload and no other daemon can take it.

The claims folder is ``INBOX/.inspectd-claims/<instance>/``: inside the inbox, so the claim is a
same-filesystem rename (atomic, also on a share two PCs watch), hidden, so watchers and upload
tools pass it by, and per daemon instance, so each daemon recovers only its own claims after a
crash. Sub-folders of a recursively watched inbox are mirrored under it. A claimed file is named
``<token>-<original name>``; the token (nanoseconds since the epoch, hex) keeps claims unique and
in arrival order. When two daemons race for one file, the rename decides: the loser finds it gone
and skips it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.fs import FileSystem
from daemon.intake.names import CLAIMS_DIR
from daemon.names import NAME_MAX, safe_name

TOKEN_HEX = 16


@dataclass(frozen=True)
class Claimed:
    """A capture that is ours now: where it waits, and where it arrived."""

    path: Path  # in the claims folder
    source: Path  # its inbox path, as it arrived
    first_seen_wall: float


def claims_folder(inbox: Path, instance: str) -> Path:
    return inbox / CLAIMS_DIR / instance


class Claims:
    def __init__(self, inbox: Path, instance: str, fs: FileSystem) -> None:
        self.inbox = inbox
        self.folder = claims_folder(inbox, instance)
        self.fs = fs
        self._counter = itertools.count()
        self._unsynced: set[Path] = set()  # folders holding claims not yet fsynced

    def contains(self, path: Path) -> bool:
        return path.is_relative_to(self.folder)

    def claim(self, source: Path, first_seen_wall: float) -> Claimed | None:
        """Rename ``source`` into the claims folder; None when it is gone (taken by another daemon,
        or removed). Other errors propagate: the caller retries. The claim is durable once
        ``sync()`` has run: call it before judging what was claimed."""
        target = self._target(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.claim(source, target)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:  # the inbox sub-folder itself went away
                return None
            raise
        self._unsynced.add(target.parent)
        return Claimed(target, source, first_seen_wall)

    def sync(self) -> None:
        """Make the claims since the last call durable: one fsync per folder they went to (a burst
        of 120 captures costs one fsync instead of 120, before the first of them is judged)."""
        while self._unsynced:
            self.fs.fsync_dir(self._unsynced.pop())

    def orphans(self) -> Iterator[Claimed]:
        """Claimed files still here (a stop came between the claim and the row), oldest first."""
        if not self.folder.is_dir():
            return
        found = []
        for folder, _dirs, files in os.walk(self.folder):
            for name in files:
                if len(name) > TOKEN_HEX and name[TOKEN_HEX] == "-":
                    path = Path(folder) / name
                    found.append((name[:TOKEN_HEX], path))
        for token, path in sorted(found):
            rel = path.parent.relative_to(self.folder)
            source = self.inbox / rel / path.name[TOKEN_HEX + 1 :]
            yield Claimed(path, source, _token_time(token))

    def tidy(self) -> None:
        """At a clean stop: remove this daemon's claims folder if nothing waits in it, and the
        shared parent if no other daemon has one (an rmdir never removes a folder with files)."""
        if not self.folder.is_dir():
            return
        for folder, _dirs, _files in sorted(os.walk(self.folder), key=lambda f: -len(f[0])):
            with contextlib.suppress(OSError):
                Path(folder).rmdir()
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()

    def _target(self, source: Path) -> Path:
        try:
            rel = source.parent.relative_to(self.inbox)
        except ValueError:
            rel = Path()
        token = f"{time.time_ns() + next(self._counter) % 1000:0{TOKEN_HEX}x}"
        name = safe_name(source.name)  # valid UTF-8, so the row can name the claim
        while len(os.fsencode(f"{token}-{name}")) > NAME_MAX:  # keep the extension, trim the stem
            path = Path(name)
            name = path.stem[:-1] + path.suffix
        return self.folder / rel / f"{token}-{name}"


def _token_time(token: str) -> float:
    try:
        return int(token, 16) / 1e9
    except ValueError:
        return time.time()
