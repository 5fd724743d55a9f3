"""Judge one claimed file per ``step()``: score, record, move.

Pure orchestration: the event queue, the scorer, the store, the file system and the clock come in
as constructor arguments, so a test can build a Pipeline on real parts and step it by hand. The
runner owns the repetition (``while not stop.is_set(): pipeline.step()``).

Per-file state machine, safe to kill at any instant:
  inbox file --complete, claim--> claims folder --score--> row committed (moved_at NULL, final_path
  chosen, sha256 of what was judged) --move--> final_path --mark--> moved_at set
Every step first claims every complete inbox file (a rename each: ``daemon.intake.claims``), so an
inbox name is free for the next upload as soon as its capture is complete, however long the queue
of captures waiting to be judged. Hashing and scoring run ahead on worker threads
(``daemon.judge.ahead``): while the oldest claimed file is scored, this thread keeps claiming new
arrivals, and the next files are already being read and scored while a verdict is committed and
its image moved. Verdicts are still recorded here, one per step, in arrival order.
Before claiming or judging anything, ``recover()`` finishes every committed-but-unmoved row of this
daemon's (``daemon.judge.filer``) and queues every claimed file that has no row yet. So an image is
never judged twice, never lost, and never filed under another image's row.
"""

from __future__ import annotations

import collections
import datetime as dt
import errno
import queue
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from loguru import logger

from daemon.db.engine import is_transient
from daemon.db.models import Inspection
from daemon.db.store import Owner, Store
from daemon.fs import FileSignature, FileSystem
from daemon.intake.claims import Claimed, Claims
from daemon.intake.settle import Arrivals, Kind
from daemon.judge.ahead import Ahead, Job, Judged, Scorer
from daemon.judge.destinations import Destinations, sub_path
from daemon.judge.filer import Filer, PendingMove
from daemon.judge.followups import Followups
from daemon.names import display_name, free_name
from daemon.retry import Retries
from inspectd.errors import InferenceFailed, ModelError, UnreadableImage
from inspectd.scorer import Score

Outcome = Literal["accepted", "rejected", "quarantined", "idle", "vanished", "deferred", "ignored"]
SWAPPED = (errno.ELOOP, errno.EINVAL)  # open_regular met a symlink or FIFO where a file was
RECOVERY = "recovery"  # the retries key of the start-up recovery
DEFAULT_INSTANCE = "local"


@dataclass(frozen=True)
class StepResult:
    outcome: Outcome
    path: Path | None = None  # the inbox path the image arrived under
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
    inbox: Path
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.timezone.utc))
    host: str = field(default_factory=socket.gethostname)
    instance: str = DEFAULT_INSTANCE  # with the host, the daemon that owns its rows and claims
    line: str = "default"
    fs: FileSystem = field(default_factory=FileSystem)
    # After each verdict: the heatmap overlay and the drift check (daemon.judge.followups).
    followups: Followups = field(default_factory=Followups)
    # Files being hashed and scored on worker threads while this thread records and claims.
    ahead: Ahead = field(default_factory=Ahead)
    # Called while waiting for a score: the service claims its other lines' arrivals meanwhile.
    while_waiting: Callable[[], None] = field(default=lambda: None)
    claims: Claims = field(init=False)
    filer: Filer = field(init=False)
    retries: Retries[Path | str] = field(init=False)  # by inbox or claim path, and RECOVERY
    _queue: collections.deque[Claimed] = field(default_factory=collections.deque)
    _waiting: dict[Path, Claimed] = field(default_factory=dict)  # claimed, settling again
    _recovered: bool = False
    _warned: set[Path] = field(default_factory=set)
    _reports: collections.deque[StepResult] = field(default_factory=collections.deque)

    def __post_init__(self) -> None:
        self.retries = Retries(self.clock)
        self.arrivals.held = self.retries.wait_s  # a file backing off is not ready, however settled
        self.claims = Claims(self.inbox, self.instance, self.fs)
        self.filer = Filer(
            self.store,
            self.destinations.for_status,
            self.clock,
            self.now,
            Owner(self.host, self.instance, self.line),
            fs=self.fs,
        )

    # -- the loop body -------------------------------------------------------------------------
    def step(self, timeout: float = 0.5) -> StepResult:
        """Claim what is complete, then handle at most one file; wait at most ``timeout`` seconds
        when there is nothing to do."""
        self._drain_events(block_s=0.0)
        if not self._recovered:
            if self.retries.due(RECOVERY):
                self.recover()
            if not self._recovered:  # nothing new is claimed before every old row is settled
                self._drain_events(block_s=min(timeout, self.retries.wait_s(RECOVERY)))
                return StepResult("deferred", error="database unavailable; recovery pending")
        done = self._retry_move() or (self._reports.popleft() if self._reports else self.intake())
        if done is not None:  # a move retried, or a FIFO found in the inbox
            return done
        while self._queue and not self.ahead.full:
            started = self._start(self._queue.popleft())
            if started is not None:  # gone, a link or not a file: handled without reading it
                return started
        if not self.ahead:
            wait = self.arrivals.next_check_in()
            self._drain_events(block_s=timeout if wait is None else min(timeout, wait))
            return StepResult("idle")
        return self._finish(self._await_head())

    def _retry_move(self) -> StepResult | None:
        """A move that failed after its row was committed, tried again once its back-off is over."""
        if not self.filer.pending or (due := self.filer.retry_due()) is None:
            return None
        p, state = due
        if state == "done":
            return StepResult(p.status, p.src, p.row_id, final_path=p.dst)  # type: ignore[arg-type]
        return StepResult("vanished" if state == "void" else "deferred", p.src, p.row_id)

    def intake(self) -> StepResult | None:
        """Claim every complete inbox file; a FIFO or device is reported (once) and left alone.
        The claims are made durable together before this returns, so before any is judged."""
        found = self._claim_ready()
        self.claims.sync()
        return found

    def _claim_ready(self) -> StepResult | None:
        while (ready := self.arrivals.pop_ready()) is not None:
            path = ready.path
            if path in self._waiting:  # a claimed file that changed while judged, settled again
                self._queue.append(self._waiting.pop(path))
                continue
            sig = self.fs.signature(path)
            if sig is None:
                continue
            if sig.kind == "special":
                return self._not_a_file(path)
            try:
                claimed = self.claims.claim(path, ready.first_seen_wall)
            except OSError as exc:
                self._defer(path, f"cannot claim it ({exc})")
                continue
            if claimed is not None:  # None: gone, or taken by another daemon sharing the inbox
                self._queue.append(claimed)
        return None

    def intake_if_ready(self) -> None:
        """Between other lines' steps: take in new events and claim what is complete."""
        if self._recovered:
            self._drain_events(block_s=0.0)
            self.intake()

    def release(self) -> int:
        """At a clean stop: give every claimed file that was not judged back its inbox name (when
        that name is still free), so that it waits where the user expects and another daemon
        sharing the inbox can take it; the others stay claimed and are judged after the restart."""
        released = 0
        for claimed in [*self.ahead.stop(), *self._queue, *self._waiting.values()]:
            try:
                self.fs.move_no_clobber(claimed.path, claimed.source)
            except OSError:  # the name was taken meanwhile, or its folder is gone
                continue
            released += 1
        self._queue.clear()
        self._waiting.clear()
        if released:
            logger.info("line {}: {} image(s) not judged yet put back into the inbox", self.line, released)
        return released

    def backlog(self) -> int:
        settling = sum(1 for path in self._waiting if path not in self.arrivals)  # else counted there
        return len(self.arrivals) + len(self.ahead) + len(self._queue) + settling + len(self.filer.pending)

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
    def _start(self, claimed: Claimed) -> StepResult | None:
        """Send a claimed regular file to be judged; anything else is dealt with here and now."""
        sig = self.fs.signature(claimed.path)
        if sig is None:
            return StepResult("vanished", claimed.source)
        if sig.kind == "symlink":
            return self._quarantine_link(claimed, sig)
        if sig.kind != "file":
            return self._not_a_file(claimed.path)
        self.ahead.start(claimed, sig, self.scorer, self.threshold, self.fs)
        return None

    def _await_head(self) -> Job:
        """The oldest job, once scored; meanwhile new arrivals are claimed (their inbox names freed)."""
        while not self.ahead.head_done():
            self._drain_events(block_s=0.0)
            if (ignored := self.intake()) is not None:
                self._reports.append(ignored)
            self.while_waiting()
        return self.ahead.pop()

    def _finish(self, job: Job) -> StepResult:
        claimed = job.claimed
        judged = self._verdict(claimed, job.future.result())
        if isinstance(judged, StepResult):
            return judged
        if self.fs.signature(claimed.path) != job.sig:
            return self._changed(claimed)
        return self._commit(claimed, job.sig, *judged, scorer=job.scorer, threshold=job.threshold)

    def _quarantine_link(self, claimed: Claimed, sig: FileSignature) -> StepResult:
        """A symlink is quarantined as the link itself, never read."""
        try:
            target = display_name(str(claimed.path.readlink()))
        except OSError:
            return StepResult("vanished", claimed.source)
        why = f"symbolic link to {target!r}: not followed, inspectd reads only real files"
        return self._commit(claimed, sig, None, None, why, scorer=self.scorer, threshold=self.threshold)

    def _not_a_file(self, path: Path) -> StepResult:
        if path not in self._warned:
            self._warned.add(path)
            logger.warning(
                "line {}: {}: not a regular file (FIFO, socket or device); left alone", self.line, path
            )
        return StepResult("ignored", path, error="not a regular file")

    def _verdict(
        self, claimed: Claimed, judged: Judged
    ) -> tuple[str | None, Score | None, str | None] | StepResult:
        """(sha256, score, error) of a regular file, or what to do instead when it cannot be read."""
        exc = judged.error
        if exc is None:
            return judged.digest, judged.score, None
        if isinstance(exc, (UnreadableImage, InferenceFailed, PermissionError)):  # quarantined with why
            why = str(exc)
            if isinstance(exc, PermissionError):
                why = f"cannot read the file: {exc.strerror} (check the uploader's permissions)"
            return judged.digest, None, why
        if isinstance(exc, ModelError):
            return self._defer_claimed(claimed, f"model unavailable ({exc})")
        if not isinstance(exc, OSError):
            raise exc
        if exc.errno in SWAPPED:
            return self._changed(claimed)
        if isinstance(exc, FileNotFoundError):
            return StepResult("vanished", claimed.source)
        return self._defer_claimed(claimed, f"cannot read {display_name(claimed.source.name)}: {exc}")

    def _commit(
        self,
        claimed: Claimed,
        sig: FileSignature,
        digest: str | None,
        score: Score | None,
        error: str | None,
        *,
        scorer: Scorer,
        threshold: float,
    ) -> StepResult:
        source = claimed.source
        status = "quarantined" if score is None else "rejected" if score.score >= threshold else "accepted"
        received_at = dt.datetime.fromtimestamp(claimed.first_seen_wall, dt.timezone.utc)
        decided_at = self.now()
        held = status == "accepted" and self.followups.holding
        folder = self.destinations.folder_for("review" if held else status, sub_path(self.inbox, source))
        final = free_name(folder, source.name, self.filer.taken(), self.fs.exists)
        row = Inspection(
            filename=display_name(source.name),
            source_path=display_name(str(source)),
            final_path=str(final),
            status=status,
            score=None if score is None else score.score,
            threshold=threshold,
            model_id=scorer.model_id,
            error=error,
            sha256=digest,
            size_bytes=sig.size,
            received_at=received_at,
            decided_at=decided_at,
            latency_ms=(decided_at - received_at).total_seconds() * 1000,
            inference_ms=None if score is None else score.inference_ms,
            host=self.host,
            line=self.line,
            instance=self.instance,
            claim_path=str(claimed.path),
        )
        try:
            self.store.record(row)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return self._defer_claimed(claimed, f"database unavailable ({exc.__class__.__name__}: {exc})")
        self.retries.forget(claimed.path)
        self.followups.after(row, self.line, sub_path(self.inbox, source), score)
        pending = PendingMove(row.id, claimed.path, final, status, "move", row.filename)
        state = self.filer.file(pending)
        return StepResult(
            status,  # type: ignore[arg-type]
            source,
            row.id,
            row.score,
            pending.dst if state == "done" else None,
            error,
        )

    def _changed(self, claimed: Claimed) -> StepResult:
        logger.info(
            "line {}: {} changed while it was being judged; judging it again once it settles",
            self.line,
            claimed.source.name,
        )
        self._waiting[claimed.path] = claimed
        self.arrivals.note(claimed.path, "changed")
        return StepResult("deferred", claimed.source, error="changed while being judged")

    def _defer(self, path: Path, why: str, name: str | None = None) -> StepResult:
        attempt = self.retries.failed(path)
        logger.warning(
            "line {}: {}: {}; retrying in {:.1f} s (attempt {})",
            self.line,
            display_name(name or path.name),
            why,
            attempt.delay_s,
            attempt.number,
        )
        self.arrivals.note(path, "retry")
        return StepResult("deferred", path, error=why)

    def _defer_claimed(self, claimed: Claimed, why: str) -> StepResult:
        """A claimed file that cannot be judged now waits, claimed, for its back-off."""
        self._waiting[claimed.path] = claimed
        self._defer(claimed.path, why, claimed.source.name)
        return StepResult("deferred", claimed.source, error=why)

    # -- start-up ------------------------------------------------------------------------------
    def recover(self) -> int:
        """Settle every row of ours committed before a crash whose move was not marked, and queue
        every claimed file that has no row yet; returns how many rows were settled.

        A locked database does not raise: ``step()`` tries again with back-off, and claims or
        judges nothing new until every old row is settled.
        """
        try:
            rows = self.filer.recover()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt = self.retries.failed(RECOVERY)
            logger.warning(
                "line {}: database unavailable ({}); recovery retried in {:.1f} s",
                self.line,
                exc,
                attempt.delay_s,
            )
            return 0
        self._recovered = True
        self.retries.forget(RECOVERY)
        filed = {Path(row.claim_path) for row in rows if row.claim_path}
        orphans = [c for c in self.claims.orphans() if c.path not in filed and self.fs.exists(c.path)]
        if orphans:
            logger.info(
                "line {}: {} claimed image(s) waiting to be judged since the last stop",
                self.line,
                len(orphans),
            )
        self._queue.extend(orphans)
        return len(rows)
