"""Decide when an inbox file is completely written, from events and file signatures.

Pure bookkeeping (no threads, no I/O but an injected ``stat``), so the rules can be tested by
hand: a file is ready once a close-after-write or a rename into the inbox was seen and the file has
not changed since; otherwise once its size/mtime/inode stayed unchanged for ``settle`` seconds.
Empty files never count as ready on a close event alone: several clients create, close and reopen.

A stalled upload must not be judged half-written. When the observer reports close-after-write
(``expect_close``: inotify does, polling never does; else learnt from the first close event), a
file seen being written and not closed yet waits for its close, or as a last resort ``open_settle``
seconds unchanged (default max(30 s, 10 x settle)) instead of ``settle``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from daemon.fs import FileSignature, signature

# "changed": the pipeline saw the file change while judging it; "retry": back-off, nothing else.
Kind = Literal["created", "modified", "closed", "moved", "scan", "retry", "changed"]


@dataclass
class _Tracked:
    first_seen_wall: float
    sig: FileSignature | None
    sig_since: float
    closed_sig: FileSignature | None = None
    writing: bool = False  # written (modified event) and not closed since


@dataclass(frozen=True)
class Ready:
    path: Path
    first_seen_wall: float


class Arrivals:
    def __init__(
        self,
        settle_s: float,
        *,
        stat: Callable[[Path], FileSignature | None] = signature,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        open_settle_s: float | None = None,
        expect_close: bool = False,
    ) -> None:
        self.settle_s = settle_s
        self.open_settle_s = max(30.0, 10 * settle_s) if open_settle_s is None else open_settle_s
        self._stat = stat
        self._clock = clock
        self._wall = wall
        self._tracked: dict[Path, _Tracked] = {}
        self._closes_seen = expect_close  # the observer reports close-after-write
        # Seconds a file is still held back by its retries (``daemon.judge.retry``): set by the
        # pipeline, which owns the back-off; a held file is not ready however settled it is.
        self.held: Callable[[Path], float] = lambda path: 0.0

    def __len__(self) -> int:
        return len(self._tracked)

    def __contains__(self, path: object) -> bool:
        return path in self._tracked

    def note(self, path: Path, kind: Kind) -> None:
        now = self._clock()
        entry = self._tracked.get(path)
        if entry is None:
            entry = _Tracked(first_seen_wall=self._wall(), sig=None, sig_since=now)
            self._tracked[path] = entry
        if kind in ("closed", "moved"):
            self._closes_seen = self._closes_seen or kind == "closed"
            sig = self._stat(path)
            entry.closed_sig = sig if sig is not None and sig.size > 0 else None
            entry.writing = False
        elif kind in ("created", "modified", "changed"):
            entry.closed_sig = None
            entry.writing = entry.writing or kind == "modified"

    def forget(self, path: Path) -> None:
        self._tracked.pop(path, None)

    def pop_ready(self) -> Ready | None:
        """The oldest complete file, removed from tracking; vanished files are dropped silently."""
        now = self._clock()
        for path, entry in list(self._tracked.items()):
            if self.held(path) > 0:
                continue
            sig = self._stat(path)
            if sig is None:
                del self._tracked[path]
                continue
            if sig != entry.sig:
                entry.sig, entry.sig_since = sig, now
            closed_ok = entry.closed_sig is not None and entry.closed_sig == sig
            if closed_ok or now - entry.sig_since >= self._settle_for(entry):
                del self._tracked[path]
                return Ready(path, entry.first_seen_wall)
        return None

    def next_check_in(self) -> float | None:
        """Seconds until some tracked file may become ready (None when nothing is tracked)."""
        if not self._tracked:
            return None
        now = self._clock()
        soonest = min(
            max(now + self.held(path), e.sig_since + self._settle_for(e) if e.sig else now)
            for path, e in self._tracked.items()
        )
        return max(0.0, min(soonest - now, self.settle_s or 0.05))

    def _settle_for(self, entry: _Tracked) -> float:
        return self.open_settle_s if entry.writing and self._closes_seen else self.settle_s
