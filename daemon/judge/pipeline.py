"""Judge one inbox file per ``step()``: settle, score, record, move.

Pure orchestration: the event queue, the scorer, the store and the clock come in as constructor
arguments, so a test can build a Pipeline on real parts and step it by hand. The runner owns the
repetition (``while not stop.is_set(): pipeline.step()``).

Per-file state machine, safe to kill at any instant:
  inbox file  --score-->  row committed (moved_at NULL, final_path chosen, sha256 of what was judged)
              --claim-->  hidden name beside it   --move-->  final_path   --mark-->  moved_at set
(the last three live in ``filing``). A file that changes while it is judged is judged again once it
settles. Before judging anything, ``recover()`` finishes every committed-but-unmoved row by looking
at content (sha256), not names: the final file, then the claim, then the inbox name. So an image is
never judged twice, never lost, and never filed under another image's row.
"""

from __future__ import annotations

import datetime as dt
import errno
import queue
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from loguru import logger

from daemon.db.engine import is_transient
from daemon.db.models import Inspection
from daemon.db.store import Store
from daemon.intake.settle import Arrivals, Kind, Ready
from daemon.intake.signature import FileSignature
from daemon.judge.filer import Filer, PendingMove
from daemon.judge.fs import FileSystem
from daemon.judge.names import display_name, free_name, safe_name
from daemon.judge.retry import Retries
from inspectd.errors import InferenceFailed, ModelError, UnreadableImage
from inspectd.scorer import Score

Outcome = Literal["accepted", "rejected", "quarantined", "idle", "vanished", "deferred", "ignored"]
SWAPPED = (errno.ELOOP, errno.EINVAL)  # open_regular met a symlink or FIFO where a file was
RECOVERY = "recovery"  # the retries key of the start-up recovery


class Scorer(Protocol):
    @property
    def model_id(self) -> str: ...

    def score(self, path: Path) -> Score: ...


@dataclass(frozen=True)
class Destinations:
    accepted: Path
    rejected: Path
    quarantine: Path

    def for_status(self, status: str) -> Path:
        return {"accepted": self.accepted, "rejected": self.rejected}.get(status, self.quarantine)


@dataclass(frozen=True)
class StepResult:
    outcome: Outcome
    path: Path | None = None
    row_id: int | None = None
    score: float | None = None
    final_path: Path | None = None
    error: str | None = None


@dataclass
class Pipeline:
    events: queue.SimpleQueue[tuple[Kind, Path]]
    arrivals: Arrivals
    scorer: Scorer
    store: Store
    destinations: Destinations
    threshold: float
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.timezone.utc))
    host: str = field(default_factory=socket.gethostname)
    inbox: Path | None = None  # set it to keep sub-folders (recursive watching) in the destinations
    fs: FileSystem = field(default_factory=FileSystem)
    filer: Filer = field(init=False)
    retries: Retries[Path | str] = field(init=False)  # by inbox path, and RECOVERY
    _recovered: bool = False
    _warned: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.retries = Retries(self.clock)
        self.arrivals.held = self.retries.wait_s  # a file backing off is not ready, however settled
        self.filer = Filer(
            self.store,
            self.destinations.for_status,
            self.clock,
            self.now,
            on_void=lambda path: self.arrivals.note(path, "changed"),
            fs=self.fs,
        )

    # -- the loop body -------------------------------------------------------------------------
    def step(self, timeout: float = 0.5) -> StepResult:
        """Handle at most one file; wait at most ``timeout`` seconds when there is nothing to do."""
        self._drain_events(block_s=0.0)
        if not self._recovered:
            if self.retries.due(RECOVERY):
                self.recover()
            if not self._recovered:  # nothing new is judged before every old row is settled
                self._drain_events(block_s=min(timeout, self.retries.wait_s(RECOVERY)))
                return StepResult("deferred", error="database unavailable; recovery pending")
        if self.filer.pending and (due := self.filer.retry_due()) is not None:
            p, state = due
            if state == "done":
                return StepResult(p.status, p.src, p.row_id, final_path=p.dst)  # type: ignore[arg-type]
            return StepResult("vanished" if state == "void" else "deferred", p.src, p.row_id)
        ready = self.arrivals.pop_ready()
        if ready is None:
            wait = self.arrivals.next_check_in()
            self._drain_events(block_s=timeout if wait is None else min(timeout, wait))
            return StepResult("idle")
        if self.filer.blocks(ready.path):
            self.retries.hold(ready.path, 1.0)  # judged; its move is being retried
            self.arrivals.note(ready.path, "retry")
            return StepResult("idle")
        return self._handle(ready)

    def backlog(self) -> int:
        return len(self.arrivals) + len(self.filer.pending)

    def _drain_events(self, block_s: float) -> None:
        try:
            kind, path = self.events.get(timeout=block_s) if block_s > 0 else self.events.get_nowait()
        except queue.Empty:
            return
        while True:
            self.arrivals.note(path, kind)
            try:
                kind, path = self.events.get_nowait()
            except queue.Empty:
                return

    # -- one file ------------------------------------------------------------------------------
    def _handle(self, ready: Ready) -> StepResult:
        path = ready.path
        sig = self.fs.signature(path)
        if sig is None:
            return StepResult("vanished", path)
        if sig.kind != "file":
            return self._not_a_file(ready, sig)
        judged = self._judge(path)
        if isinstance(judged, StepResult):
            return judged
        if self.fs.signature(path) != sig:
            return self._changed(path)
        return self._commit(ready, sig, *judged)

    def _not_a_file(self, ready: Ready, sig: FileSignature) -> StepResult:
        """A symlink is quarantined, as the link itself, never read; a FIFO or device is left alone."""
        path = ready.path
        if sig.kind == "symlink":
            try:
                target = display_name(str(path.readlink()))
            except OSError:
                return StepResult("vanished", path)
            why = f"symbolic link to {target!r}: not followed, inspectd reads only real files"
            return self._commit(ready, sig, None, None, why)
        if path not in self._warned:
            self._warned.add(path)
            logger.warning("{}: not a regular file (FIFO, socket or device); left alone", path)
        return StepResult("ignored", path, error="not a regular file")

    def _judge(self, path: Path) -> tuple[str | None, Score | None, str | None] | StepResult:
        """(sha256, score, error) of a regular file, or what to do instead when it cannot be read."""
        digest: str | None = None
        try:
            digest = self.fs.sha256(path)
            return digest, self.scorer.score(path), None
        except (UnreadableImage, InferenceFailed, PermissionError) as exc:  # quarantined with why
            why = str(exc)
            if isinstance(exc, PermissionError):
                why = f"cannot read the file: {exc.strerror} (check the uploader's permissions)"
            return digest, None, why
        except ModelError as exc:
            return self._defer(path, f"model unavailable ({exc})")
        except OSError as exc:
            return self._read_failed(path, exc)

    def _read_failed(self, path: Path, exc: OSError) -> StepResult:
        if exc.errno in SWAPPED:
            return self._changed(path)
        if isinstance(exc, FileNotFoundError):
            return StepResult("vanished", path)
        return self._defer(path, f"cannot read {display_name(path.name)}: {exc}")

    def _commit(
        self, ready: Ready, sig: FileSignature, digest: str | None, score: Score | None, error: str | None
    ) -> StepResult:
        path = ready.path
        if score is None:
            status = "quarantined"
        else:
            status = "rejected" if score.score >= self.threshold else "accepted"
        received_at = dt.datetime.fromtimestamp(ready.first_seen_wall, dt.timezone.utc)
        decided_at = self.now()
        final = free_name(self._folder_for(status, path), path.name, self.filer.taken(), self.fs.exists)
        row = Inspection(
            filename=display_name(path.name),
            source_path=display_name(str(path)),
            final_path=str(final),
            status=status,
            score=None if score is None else score.score,
            threshold=self.threshold,
            model_id=self.scorer.model_id,
            error=error,
            sha256=digest,
            size_bytes=sig.size,
            received_at=received_at,
            decided_at=decided_at,
            latency_ms=(decided_at - received_at).total_seconds() * 1000,
            inference_ms=None if score is None else score.inference_ms,
            host=self.host,
        )
        try:
            self.store.record(row)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return self._defer(path, f"database unavailable ({exc.__class__.__name__}: {exc})")
        self.retries.forget(path)
        self._log(row)
        pending = PendingMove(row.id, path, final, status, "claim", sig=sig)
        state = self.filer.file(pending)
        if state == "void":
            return StepResult("vanished", path, row.id)
        return StepResult(
            status,  # type: ignore[arg-type]
            path,
            row.id,
            row.score,
            pending.dst if state == "done" else None,
            error,
        )

    def _folder_for(self, status: str, path: Path) -> Path:
        root = self.destinations.for_status(status)
        if self.inbox is None or path.parent == self.inbox:
            return root
        try:
            rel = path.parent.relative_to(self.inbox)
        except ValueError:
            return root
        return root.joinpath(*(safe_name(part) for part in rel.parts))

    def _changed(self, path: Path) -> StepResult:
        logger.info("{} changed while it was being judged; judging it again once it settles", path.name)
        self.arrivals.note(path, "changed")
        return StepResult("deferred", path, error="changed while being judged")

    def _defer(self, path: Path, why: str) -> StepResult:
        attempt = self.retries.failed(path)
        logger.warning(
            "{}: {}; retrying in {:.1f} s (attempt {})", path.name, why, attempt.delay_s, attempt.number
        )
        self.arrivals.note(path, "retry")
        return StepResult("deferred", path, error=why)

    def _log(self, row: Inspection) -> None:
        if row.status == "quarantined":
            logger.warning("#{} {} quarantined: {}", row.id, row.filename, row.error)
        else:
            logger.info(
                "#{} {} {} score={:.4f} threshold={:.4f} latency={:.0f} ms",
                row.id,
                row.filename,
                row.status,
                row.score,
                row.threshold,
                row.latency_ms,
            )

    # -- start-up ------------------------------------------------------------------------------
    def recover(self) -> int:
        """Settle every row committed before a crash whose move was not marked; returns how many.

        A locked database does not raise: ``step()`` tries again with back-off, and judges nothing
        new until every old row is settled.
        """
        try:
            done = self.filer.recover()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt = self.retries.failed(RECOVERY)
            logger.warning("database unavailable ({}); recovery retried in {:.1f} s", exc, attempt.delay_s)
            return 0
        self._recovered = True
        self.retries.forget(RECOVERY)
        return done
