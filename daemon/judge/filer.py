"""File a judged image: claim it, move it, mark its row; and finish what a crash interrupted.

The second half of the pipeline's state machine, after the row is committed:
  claim  renamed to ``.inspectd-claim-<id>`` beside it in the inbox, only once its destination
         folder is there (a new upload under the same name is then a new image, never this one);
  move   link to the final name, or copy + fsync + publish across file systems, never overwriting;
  mark   ``moved_at`` set.
When the inbox file changed or vanished between the verdict and the claim, the verdict describes an
image that no longer exists: the row is deleted (``void``) and the current content is judged anew.
Every failure of the file system or the database is retried with back-off; nothing is dropped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from loguru import logger

from daemon.db.store import Inspection, Store, is_transient
from daemon.judge.fs import (
    FileSignature,
    claim,
    display_name,
    free_name,
    move_no_clobber,
    same_entry,
    signature,
    temp_name,
)
from inspectd.hashing import sha256_of

Stage = Literal["claim", "move", "mark", "void"]
State = Literal["done", "void", "waiting"]
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based), capped at 30 s."""
    return RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]


def claim_path(source: Path, row_id: int) -> Path:
    """Hidden name a judged file takes in its inbox folder once its row is committed."""
    return source.with_name(f".inspectd-claim-{row_id}")


@dataclass
class PendingMove:
    """A committed row whose file is on its way; ``stage`` is the next thing to do."""

    row_id: int
    src: Path
    dst: Path
    status: str
    stage: Stage
    sig: FileSignature | None = None  # what was judged (live); None when recovery checked sha256
    dst_done: bool = False  # recovery found the image at dst already
    attempts: int = 0
    not_before: float = 0.0

    @property
    def claimed(self) -> Path:
        return claim_path(self.src, self.row_id)


@dataclass
class Filer:
    store: Store
    root_for: Callable[[str], Path]  # status -> configured destination folder
    clock: Callable[[], float]
    now: Callable[[], dt.datetime]
    on_void: Callable[[Path], None] = lambda path: None  # the inbox name holds something new
    pending: list[PendingMove] = field(default_factory=list)

    def taken(self, but: PendingMove | None = None) -> frozenset[str]:
        """Final names promised to rows still on their way: no other row may pick them."""
        return frozenset(str(p.dst) for p in self.pending if p is not but)

    def blocks(self, path: Path) -> bool:
        """True while ``path`` is a judged file still waiting under its inbox name."""
        return any(p.src == path and p.stage == "claim" for p in self.pending)

    def file(self, p: PendingMove) -> State:
        """Run ``p``'s remaining stages; on a transient failure keep it and retry with back-off."""
        try:
            while True:
                if p.stage == "claim":
                    if p.sig is not None and signature(p.src) != p.sig:
                        p.stage = "void"  # overwritten or removed after the verdict
                        continue
                    self._ensure_folder(p)  # a broken destination leaves the file under its name
                    claim(p.src, p.claimed)
                    p.stage = "move"
                elif p.stage == "move":
                    if p.dst_done:
                        p.claimed.unlink(missing_ok=True)
                    else:
                        self._move(p)
                    p.stage = "mark"
                elif p.stage == "mark":
                    self.store.mark_moved(p.row_id, self.now())
                    self._drop(p)
                    return "done"
                else:
                    self._void(p)
                    self._drop(p)
                    return "void"
        except Exception as exc:
            if not (isinstance(exc, OSError) or is_transient(exc)):
                raise
            self._schedule(p, exc)
            return "waiting"

    def retry_due(self) -> tuple[PendingMove, State] | None:
        """Advance the first pending move whose back-off has passed, if any."""
        now = self.clock()
        for p in list(self.pending):
            if p.not_before <= now:
                return p, self.file(p)
        return None

    def recover(self) -> int:
        """Settle every row committed before a crash whose move was not marked; returns how many.

        Raises the database's error when it is unavailable (the caller retries).
        """
        done = 0
        for row in self.store.unmoved():
            if self.file(self._resume(row)) != "waiting":
                done += 1
        return done

    # -- stages --------------------------------------------------------------------------------
    def _ensure_folder(self, p: PendingMove) -> None:
        root = self.root_for(p.status)
        if not root.is_dir():  # never recreated: it may be an unmounted share's mount point
            raise FileNotFoundError(errno.ENOENT, "destination folder is missing", str(root))
        if p.dst.parent != root:
            p.dst.parent.mkdir(parents=True, exist_ok=True)

    def _move(self, p: PendingMove) -> None:
        self._ensure_folder(p)
        while True:
            try:
                move_no_clobber(p.claimed, p.dst)
                return
            except FileExistsError:  # something else took the name since the verdict
                new = free_name(p.dst.parent, p.dst.name, self.taken(but=p) | {str(p.dst)})
                with self.store.session() as session:  # the row names it before it is there
                    row = session.get(Inspection, p.row_id)
                    if row is not None:
                        row.final_path = str(new)
                p.dst = new

    def _void(self, p: PendingMove) -> None:
        with self.store.session() as session:
            row = session.get(Inspection, p.row_id)
            if row is not None:
                session.delete(row)
        logger.warning(
            "#{} {}: the judged file was replaced or removed before it could be filed; its verdict "
            "({}) is dropped and whatever is in the inbox under that name is judged as a new image",
            p.row_id,
            display_name(p.src.name),
            p.status,
        )
        if os.path.lexists(p.src):
            self.on_void(p.src)

    def _schedule(self, p: PendingMove, exc: BaseException) -> None:
        delay = backoff(p.attempts)
        p.attempts += 1
        p.not_before = self.clock() + delay
        if p not in self.pending:
            self.pending.append(p)
        if p.stage == "claim":
            what = f"move it to {p.dst.parent} (it stays in the inbox as is)"
        elif p.stage == "move":
            what = f"move it to {p.dst.parent} (it waits in the inbox as {p.claimed.name})"
        else:
            what = "update its row"
        logger.error(
            "#{} {}: cannot {} ({}: {}); nothing lost, retrying in {:.1f} s (attempt {})",
            p.row_id,
            display_name(p.src.name),
            display_name(what),
            exc.__class__.__name__,
            exc,
            delay,
            p.attempts,
        )

    def _drop(self, p: PendingMove) -> None:
        if p in self.pending:
            self.pending.remove(p)

    # -- recovery ------------------------------------------------------------------------------
    def _resume(self, row: Inspection) -> PendingMove:
        """Where did the crash leave this row's image? Decided by content, never by name alone."""
        src, dst = Path(row.source_path), Path(row.final_path)
        p = PendingMove(row.id, src, dst, row.status, "void")
        with contextlib.suppress(OSError):
            temp_name(dst).unlink(missing_ok=True)  # a cross-file-system copy cut short
        if _holds(dst, row):
            p.stage, p.dst_done = "move", True
            how = "it was already filed"
            if same_entry(src, dst):  # a version without claims crashed between link and unlink
                with contextlib.suppress(OSError):
                    src.unlink()
        elif os.path.lexists(p.claimed):
            p.stage, how = "move", "it was claimed, not yet filed"
        elif _holds(src, row):
            p.stage, how = "claim", "it was still in the inbox"
        else:
            return p
        logger.info("#{} {}: finishing a move interrupted by the last stop ({})", row.id, row.filename, how)
        return p


def _holds(path: Path, row: Inspection) -> bool:
    """True when ``path`` is the very image ``row`` judged (same size and sha256)."""
    sig = signature(path)
    if sig is None or sig.size != row.size_bytes:
        return False
    if row.sha256 is None:  # a symlink or unreadable file: never read, matched by kind and size
        return sig.kind != "special"
    if sig.kind != "file":
        return False
    try:
        return sha256_of(path) == row.sha256
    except OSError:
        return False
