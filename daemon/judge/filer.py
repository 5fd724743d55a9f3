"""File a judged image: move it, mark its row; and finish what a crash interrupted.

The second half of the pipeline's state machine, after the row is committed:
  move   from the claims folder to the final name: a hard link, or copy + fsync + publish across
         file systems, never overwriting;
  mark   ``moved_at`` set.
Every failure of the file system or the database is retried with back-off; nothing is dropped.

After a crash ``recover()`` finds where each of this daemon's unmarked rows left its image, by
content (sha256), never by name alone: at the final name, in the claims folder, or (rows of an
older version, which claimed after the verdict) beside its inbox name or under it. A row whose
image is nowhere is deleted: its verdict describes an image that no longer exists.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from loguru import logger

from daemon.db.engine import is_transient
from daemon.db.models import Inspection
from daemon.db.store import Owner, Store
from daemon.fs import FileSystem
from daemon.names import display_name, free_name, temp_name
from daemon.retry import Retries

Stage = Literal["move", "mark", "void"]
State = Literal["done", "void", "waiting"]


def legacy_claim_path(source: Path, row_id: int) -> Path:
    """Where a version before claim-on-arrival hid a judged file beside its inbox name."""
    return source.with_name(f".inspectd-claim-{row_id}")


@dataclass
class PendingMove:
    """A committed row whose file is on its way; ``stage`` is the next thing to do."""

    row_id: int
    src: Path  # where the image waits: the claims folder (or, for an old row, the inbox)
    dst: Path
    status: str
    stage: Stage
    name: str  # the image's name as it arrived, for the log


@dataclass
class Filer:
    store: Store
    root_for: Callable[[str], Path]  # status -> configured destination folder
    clock: Callable[[], float]
    now: Callable[[], dt.datetime]
    owner: Owner
    pending: list[PendingMove] = field(default_factory=list)
    fs: FileSystem = field(default_factory=FileSystem)
    retries: Retries[int] = field(init=False)  # by row id

    def __post_init__(self) -> None:
        self.retries = Retries(self.clock)

    def taken(self, but: PendingMove | None = None) -> frozenset[str]:
        """Final names promised to rows still on their way: no other row may pick them."""
        return frozenset(str(p.dst) for p in self.pending if p is not but)

    def file(self, p: PendingMove) -> State:
        """Run ``p``'s remaining stages; on a transient failure keep it and retry with back-off."""
        try:
            if p.stage == "void":
                self._void(p)
                self._drop(p)
                return "void"
            if p.stage == "move":
                self._move(p)
                p.stage = "mark"
            self.store.mark_moved(p.row_id, self.now())
            self._drop(p)
            return "done"
        except Exception as exc:
            if not (isinstance(exc, OSError) or is_transient(exc)):
                raise
            self._schedule(p, exc)
            return "waiting"

    def retry_due(self) -> tuple[PendingMove, State] | None:
        """Advance the first pending move whose back-off has passed, if any."""
        for p in list(self.pending):
            if self.retries.due(p.row_id):
                return p, self.file(p)
        return None

    def recover(self) -> list[Inspection]:
        """Settle every row of ours committed before a crash whose move was not marked.

        Returns those rows. Raises the database's error when it is unavailable (the caller retries).
        """
        rows = self.store.unmoved(self.owner)
        for row in rows:
            self.file(self._resume(row))
        return rows

    # -- stages --------------------------------------------------------------------------------
    def _ensure_folder(self, p: PendingMove) -> None:
        root = self.root_for(p.status)
        if not root.is_dir():  # not recreated while running: it may be an unmounted share's mount point
            raise FileNotFoundError(errno.ENOENT, "destination folder is missing", str(root))
        if p.dst.parent != root:
            p.dst.parent.mkdir(parents=True, exist_ok=True)

    def _move(self, p: PendingMove) -> None:
        self._ensure_folder(p)
        while True:
            try:
                self.fs.move_no_clobber(p.src, p.dst)
                return
            except FileExistsError:  # something else took the name since the verdict
                new = free_name(p.dst.parent, p.dst.name, self.taken(but=p) | {str(p.dst)}, self.fs.exists)
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
            "#{} {}: the judged image is gone (neither filed nor waiting to be); its verdict ({}) is dropped",
            p.row_id,
            display_name(p.name),
            p.status,
        )

    def _schedule(self, p: PendingMove, exc: BaseException) -> None:
        attempt = self.retries.failed(p.row_id)
        if p not in self.pending:
            self.pending.append(p)
        what = f"move it to {p.dst.parent} (it waits as {p.src})" if p.stage == "move" else "update its row"
        logger.error(
            "line {}: #{} {}: cannot {} ({}: {}); nothing lost, retrying in {:.1f} s (attempt {})",
            self.owner.line,
            p.row_id,
            display_name(p.name),
            display_name(what),
            exc.__class__.__name__,
            exc,
            attempt.delay_s,
            attempt.number,
        )

    def _drop(self, p: PendingMove) -> None:
        self.retries.forget(p.row_id)
        if p in self.pending:
            self.pending.remove(p)

    # -- recovery ------------------------------------------------------------------------------
    def _resume(self, row: Inspection) -> PendingMove:
        """Where did the crash leave this row's image? Decided by content, never by name alone."""
        source, dst = Path(row.source_path), Path(row.final_path)
        claim = Path(row.claim_path) if row.claim_path else None
        p = PendingMove(row.id, claim or source, dst, row.status, "void", row.filename)
        with contextlib.suppress(OSError):
            temp_name(dst).unlink(missing_ok=True)  # a cross-file-system copy cut short
        ours = [q for q in (claim, legacy_claim_path(source, row.id)) if q is not None]
        places = [*ours, source]
        if self._holds(dst, row):
            p.stage, how = "mark", "it was already filed"
            # A leftover of the move (a crash between link or copy and unlink) goes; the inbox
            # name only if it is the very same inode (a new upload may have taken the name).
            with contextlib.suppress(OSError):
                for leftover in [q for q in ours if self.fs.exists(q)]:
                    self.fs.unlink(leftover)
                if self.fs.same_entry(source, dst):
                    self.fs.unlink(source)
        else:
            for place in places:
                if self._holds(place, row) or (place != source and self.fs.exists(place)):
                    p.stage, p.src, how = "move", place, f"it waited as {place}"
                    break
            else:
                return p
        logger.info(
            "line {}: #{} {}: finishing a move interrupted by the last stop ({})",
            self.owner.line,
            row.id,
            row.filename,
            how,
        )
        return p

    def _holds(self, path: Path, row: Inspection) -> bool:
        """True when ``path`` is the very image ``row`` judged (same size and sha256)."""
        sig = self.fs.signature(path)
        if sig is None or sig.size != row.size_bytes:
            return False
        if row.sha256 is None:  # a symlink or unreadable file: never read, matched by kind and size
            return sig.kind != "special"
        if sig.kind != "file":
            return False
        try:
            return self.fs.sha256(path) == row.sha256
        except OSError:
            return False
