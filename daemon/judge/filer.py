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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from loguru import logger

from daemon.db.engine import is_transient
from daemon.db.models import Inspection
from daemon.db.store import Store
from daemon.intake.signature import FileSignature
from daemon.judge.fs import FileSystem
from daemon.judge.names import display_name, free_name, temp_name
from daemon.judge.retry import Retries

Stage = Literal["claim", "move", "mark", "void"]
State = Literal["done", "void", "waiting"]


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
    fs: FileSystem = field(default_factory=FileSystem)
    retries: Retries[int] = field(init=False)  # by row id

    def __post_init__(self) -> None:
        self.retries = Retries(self.clock)

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
                    if p.sig is not None and self.fs.signature(p.src) != p.sig:
                        p.stage = "void"  # overwritten or removed after the verdict
                        continue
                    self._ensure_folder(p)  # a broken destination leaves the file under its name
                    self.fs.claim(p.src, p.claimed)
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
        for p in list(self.pending):
            if self.retries.due(p.row_id):
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
                self.fs.move_no_clobber(p.claimed, p.dst)
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
            "#{} {}: the judged file was replaced or removed before it could be filed; its verdict "
            "({}) is dropped and whatever is in the inbox under that name is judged as a new image",
            p.row_id,
            display_name(p.src.name),
            p.status,
        )
        if self.fs.exists(p.src):
            self.on_void(p.src)

    def _schedule(self, p: PendingMove, exc: BaseException) -> None:
        attempt = self.retries.failed(p.row_id)
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
        src, dst = Path(row.source_path), Path(row.final_path)
        p = PendingMove(row.id, src, dst, row.status, "void")
        with contextlib.suppress(OSError):
            temp_name(dst).unlink(missing_ok=True)  # a cross-file-system copy cut short
        if self._holds(dst, row):
            p.stage, p.dst_done = "move", True
            how = "it was already filed"
            if self.fs.same_entry(src, dst):  # a version without claims crashed between link and unlink
                with contextlib.suppress(OSError):
                    src.unlink()
        elif self.fs.exists(p.claimed):
            p.stage, how = "move", "it was claimed, not yet filed"
        elif self._holds(src, row):
            p.stage, how = "claim", "it was still in the inbox"
        else:
            return p
        logger.info("#{} {}: finishing a move interrupted by the last stop ({})", row.id, row.filename, how)
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
