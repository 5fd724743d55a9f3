"""Judging runs ahead of recording: the next claimed files are hashed, decoded and scored on worker
threads while the pipeline thread commits the previous verdict, files its image and claims new
arrivals.

Only the pure part of judging moves here (read the bytes, score them); everything that decides an
image's fate (the row, the move, a retry) stays on the pipeline thread, in arrival order, so the
exactly-once rules of ``daemon.judge.pipeline`` are unchanged: a file being scored is still in the
claims folder with no row, which is what recovery finds after a crash at that instant.

A job remembers the scorer and threshold it was started with, so a model swapped while it runs
cannot give its verdict another model's name or boundary.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from daemon.fs import FileSignature, FileSystem
from daemon.intake.claims import Claimed
from inspectd.scorer import Score

DEFAULT_DEPTH = 2  # one being scored, the next being read (a line: one per stream, plus one)
POLL_S = 0.02  # while the head is scored, how often the pipeline thread claims new arrivals
RELEASE_WAIT_S = 30.0  # at a clean stop, how long a running inference may take to finish


class Scorer(Protocol):
    @property
    def model_id(self) -> str: ...

    def score(self, path: Path) -> Score: ...


@dataclass(frozen=True)
class Judged:
    """What the worker found: the sha256 of the bytes judged, the score, or what was raised."""

    digest: str | None
    score: Score | None
    error: Exception | None


@dataclass(frozen=True)
class Job:
    claimed: Claimed
    sig: FileSignature  # before reading: the file must still match it when the verdict is recorded
    scorer: Scorer
    threshold: float
    future: concurrent.futures.Future[Judged]


def judge_file(fs: FileSystem, scorer: Scorer, path: Path) -> Judged:
    """Hash then score one claimed file; an error is returned (with the digest if it got that far)
    for the pipeline thread to classify. A BaseException is re-raised on the pipeline thread."""
    digest: str | None = None
    try:
        digest = fs.sha256(path)
        return Judged(digest, scorer.score(path), None)
    except Exception as exc:  # noqa: BLE001 -- classified (quarantine, retry, raise) by the pipeline
        return Judged(digest, None, exc)


class Ahead:
    """A bounded, ordered window of files being judged; at most ``depth`` at once."""

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.depth = depth
        self._jobs: collections.deque[Job] = collections.deque()

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def full(self) -> bool:
        return len(self._jobs) >= self.depth

    def start(
        self, claimed: Claimed, sig: FileSignature, scorer: Scorer, threshold: float, fs: FileSystem
    ) -> None:
        """Judge ``claimed`` on a thread of its own (it ends with the job, so an idle daemon holds
        no worker threads; starting one costs far less than the inference it runs)."""
        future: concurrent.futures.Future[Judged] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(judge_file(fs, scorer, claimed.path))
            except BaseException as exc:  # noqa: BLE001 -- re-raised on the pipeline thread
                future.set_exception(exc)

        self._jobs.append(Job(claimed, sig, scorer, threshold, future))
        threading.Thread(target=run, name="inspectd-judge", daemon=True).start()

    def head_done(self, wait_s: float = POLL_S) -> bool:
        """Whether the oldest job has finished, waiting at most ``wait_s`` for it."""
        if not self._jobs:
            return False
        done, _ = concurrent.futures.wait([self._jobs[0].future], timeout=wait_s)
        return bool(done)

    def pop(self) -> Job:
        return self._jobs.popleft()

    def stop(self) -> list[Claimed]:
        """At a clean stop: let running inferences finish (bounded), and return every job's
        claimed file so that the caller can give it back."""
        jobs = list(self._jobs)
        self._jobs.clear()
        concurrent.futures.wait([j.future for j in jobs], timeout=RELEASE_WAIT_S)
        return [job.claimed for job in jobs]
