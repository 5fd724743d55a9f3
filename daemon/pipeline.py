"""Judge one inbox file per ``step()``: settle, score, record, move.

Pure orchestration: the event queue, the scorer, the store and the clock come in as constructor
arguments, so a test can build a Pipeline on real parts and step it by hand. The runner owns the
repetition (``while not stop.is_set(): pipeline.step()``).

Per-file state machine, safe to kill at any instant:
  inbox file  --score-->  row committed (moved_at NULL, final_path chosen)
              --move-->   file at final_path  --mark-->  moved_at set.
A restart calls ``recover()`` first, which finishes every committed-but-unmoved row, so an image is
never judged twice nor lost. A file with no row yet is simply judged again.
"""

from __future__ import annotations

import datetime as dt
import queue
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from loguru import logger

from daemon.arrivals import Arrivals, Kind, Ready
from daemon.errors import InferenceFailed, UnreadableImage
from daemon.files import free_name, move_no_clobber, sha256_of, signature
from daemon.inference import Score
from daemon.store import Inspection, Store, is_transient

Outcome = Literal["accepted", "rejected", "quarantined", "idle", "vanished", "deferred"]
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


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
class _PendingMove:
    row_id: int
    src: Path
    dst: Path
    status: str
    attempts: int = 0
    not_before: float = 0.0


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
    _pending: list[_PendingMove] = field(default_factory=list)
    _retries: dict[Path, int] = field(default_factory=dict)

    # -- the loop body -------------------------------------------------------------------------
    def step(self, timeout: float = 0.5) -> StepResult:
        """Handle at most one file; wait at most ``timeout`` seconds when there is nothing to do."""
        self._drain_events(block_s=0.0)
        if self._pending and (moved := self._retry_moves()) is not None:
            return moved
        ready = self.arrivals.pop_ready()
        if ready is None:
            wait = self.arrivals.next_check_in()
            self._drain_events(block_s=timeout if wait is None else min(timeout, wait))
            return StepResult("idle")
        if any(p.src == ready.path for p in self._pending):
            return StepResult("idle")  # already judged; its move is being retried
        return self._handle(ready)

    def backlog(self) -> int:
        return len(self.arrivals) + len(self._pending)

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
        received_at = dt.datetime.fromtimestamp(ready.first_seen_wall, dt.timezone.utc)
        try:
            size = path.stat(follow_symlinks=False).st_size
            digest = sha256_of(path)
        except FileNotFoundError:
            logger.debug("{} vanished before it could be judged", path.name)
            return StepResult("vanished", path)
        except OSError as exc:
            return self._defer(path, f"cannot read {path.name}: {exc}")
        score: Score | None = None
        error: str | None = None
        try:
            score = self.scorer.score(path)
        except FileNotFoundError:
            return StepResult("vanished", path)
        except (UnreadableImage, InferenceFailed) as exc:
            error = str(exc)
        if signature(path) is None:
            return StepResult("vanished", path)
        if score is None:
            status = "quarantined"
        else:
            status = "rejected" if score.score >= self.threshold else "accepted"
        decided_at = self.now()
        final = free_name(self.destinations.for_status(status), path.name)
        row = Inspection(
            filename=path.name,
            source_path=str(path),
            final_path=str(final),
            status=status,
            score=None if score is None else score.score,
            threshold=self.threshold,
            model_id=self.scorer.model_id,
            error=error,
            sha256=digest,
            size_bytes=size,
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
        self._retries.pop(path, None)
        self._log(row)
        pending = _PendingMove(row.id, path, final, status)
        self._move(pending)
        return StepResult(
            status,  # type: ignore[arg-type]
            path,
            row.id,
            row.score,
            pending.dst if pending not in self._pending else None,
            error,
        )

    def _defer(self, path: Path, why: str) -> StepResult:
        n = self._retries.get(path, 0)
        self._retries[path] = n + 1
        delay = RETRY_BACKOFF_S[min(n, len(RETRY_BACKOFF_S) - 1)]
        logger.warning("{}: {}; retrying in {:.1f} s (attempt {})", path.name, why, delay, n + 1)
        self.arrivals.note(path, "retry", delay_s=delay)
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

    # -- moves ---------------------------------------------------------------------------------
    def _move(self, pending: _PendingMove) -> bool:
        try:
            move_no_clobber(pending.src, pending.dst)
        except FileExistsError:
            pending.dst = free_name(pending.dst.parent, pending.src.name)
            with self.store.session() as session:
                row = session.get(Inspection, pending.row_id)
                if row is not None:
                    row.final_path = str(pending.dst)
            return self._move(pending)
        except OSError as exc:
            pending.attempts += 1
            delay = RETRY_BACKOFF_S[min(pending.attempts - 1, len(RETRY_BACKOFF_S) - 1)]
            pending.not_before = self.clock() + delay
            if pending not in self._pending:
                self._pending.append(pending)
            logger.error(
                "#{} {}: cannot move to {} ({}); retrying in {:.1f} s",
                pending.row_id,
                pending.src.name,
                pending.dst.parent,
                exc,
                delay,
            )
            return False
        try:
            self.store.mark_moved(pending.row_id, self.now())
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning(
                "#{} moved, but marking it failed ({}); recover() will finish it", pending.row_id, exc
            )
        if pending in self._pending:
            self._pending.remove(pending)
        return True

    def _retry_moves(self) -> StepResult | None:
        now = self.clock()
        for pending in list(self._pending):
            if pending.not_before <= now:
                if self._move(pending):
                    return StepResult(pending.status, pending.src, pending.row_id, final_path=pending.dst)  # type: ignore[arg-type]
                return StepResult("deferred", pending.src, pending.row_id)
        return None

    # -- start-up ------------------------------------------------------------------------------
    def recover(self) -> int:
        """Finish rows committed before a crash whose files were not moved yet; returns how many."""
        done = 0
        for row in self.store.unmoved():
            src, dst = Path(row.source_path), Path(row.final_path)
            pending = _PendingMove(row.id, src, dst, row.status)
            if not src.exists() and not dst.exists():
                logger.warning(
                    "#{} {}: file is in neither {} nor {}", row.id, row.filename, src.parent, dst.parent
                )
                self.store.mark_moved(row.id, self.now())
                continue
            if self._move(pending):
                done += 1
                logger.info("#{} {}: finished an interrupted move to {}", row.id, row.filename, dst)
        return done
