"""Helpers for the hot-folder tests: a pipeline on real folders and SQLite, a fast fake scorer for
tests that are about filing rather than judging, tmpfs mounts, and the exactly-once audit."""

from __future__ import annotations

import contextlib
import hashlib
import queue
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.db.engine import make_engine
from daemon.db.migrate import upgrade
from daemon.db.store import Store
from daemon.fs import FileSystem
from daemon.intake.settle import Arrivals
from daemon.judge.destinations import Destinations
from daemon.judge.pipeline import Pipeline, StepResult
from inspectd.errors import UnreadableImage
from inspectd.scorer import Score

JUDGED = ("accepted", "rejected", "quarantined")


class FakeScorer:
    """Scores by content (first pixel byte), refuses non-PNGs like the real decoder would."""

    model_id = "fake-model"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, path: Path) -> Score:
        self.calls += 1
        data = path.read_bytes()
        if not data.startswith(b"\x89PNG"):
            raise UnreadableImage("not an image file (format not recognised)")
        return Score(score=data[-20] / 255, inference_ms=1.0, decode_ms=0.1)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Folders:
    root: Path
    inbox: Path
    dests: Destinations
    db: Path

    def destination_files(self) -> list[Path]:
        out: list[Path] = []
        for folder in (self.dests.accepted, self.dests.rejected, self.dests.quarantine):
            out += [p for p in folder.rglob("*") if p.is_file() or p.is_symlink()]
        return out


def make_folders(root: Path, dests: Destinations | None = None) -> Folders:
    inbox = root / "inbox"
    dests = dests or Destinations(root / "accepted", root / "rejected", root / "quarantine")
    for d in (inbox, dests.accepted, dests.rejected, dests.quarantine):
        d.mkdir(parents=True, exist_ok=True)
    return Folders(root, inbox, dests, root / "db.sqlite")


def make_store(folders: Folders) -> Store:
    engine = make_engine(f"sqlite:///{folders.db}")
    upgrade(engine)
    return Store(engine)


def fs_with(**steps: Callable[..., object]) -> FileSystem:
    """The real file system with some steps replaced (they fail, or die, where a test says)."""
    fs = FileSystem()
    for name, step in steps.items():
        assert callable(getattr(fs, name)), name
        setattr(fs, name, step)
    return fs


def make_pipeline(
    folders: Folders, scorer: object, store: Store | None = None, settle_s: float = 0.0, **kw: object
) -> Pipeline:
    return Pipeline(
        queue.SimpleQueue(),
        Arrivals(settle_s),
        scorer,  # type: ignore[arg-type]
        store or make_store(folders),
        folders.dests,
        kw.pop("threshold", 0.5),  # type: ignore[arg-type]
        inbox=folders.inbox,
        **kw,  # type: ignore[arg-type]
    )


def offer(pipeline: Pipeline, *paths: Path, kind: str = "closed") -> None:
    for p in paths:
        pipeline.events.put((kind, p))  # type: ignore[arg-type]


def settle(pipeline: Pipeline, max_steps: int = 200, skip_backoff: bool = True) -> list[StepResult]:
    """Step until nothing is left to do; back-off waits are skipped so the test stays fast."""
    results = []
    idle = 0
    for _ in range(max_steps):
        if skip_backoff:
            pipeline.filer.retries.clear_waits()
        r = pipeline.step(timeout=0.01)
        if r.outcome == "idle" and not pipeline.backlog():
            idle += 1
            if idle >= 2:
                break
        else:
            idle = 0
            if r.outcome != "idle":
                results.append(r)
    return results


def audit(folders: Folders, originals: dict[str, str]) -> dict[str, int]:
    """Exactly-once check; ``originals`` maps sha256 -> name of every image ever offered.

    Returns the figures (images, lost, duplicated, extra rows) and asserts the invariants that do
    not depend on them: inbox empty of images and claims, no temp files, every row's file exists
    with its recorded content in its status folder, moved_at set.
    """
    leftovers = [p.name for p in folders.inbox.rglob("*") if not p.is_dir()]
    assert leftovers == [], f"left in the inbox: {leftovers}"
    temps = [p for p in folders.destination_files() if p.name.startswith(".inspectd-")]
    assert temps == [], f"temp files in destinations: {temps}"
    found: dict[str, int] = {}
    for p in folders.destination_files():
        if p.is_file():
            found[sha(p)] = found.get(sha(p), 0) + 1
    with sqlite3.connect(folders.db) as conn:
        rows = conn.execute(
            "SELECT id, filename, final_path, status, sha256, moved_at FROM inspections"
        ).fetchall()
    row_shas: dict[str, int] = {}
    roots = {
        "accepted": folders.dests.accepted,
        "rejected": folders.dests.rejected,
        "quarantined": folders.dests.quarantine,
    }
    for row_id, name, final_path, status, digest, moved_at in rows:
        final = Path(final_path)
        assert moved_at is not None, f"row #{row_id} {name} not marked moved"
        assert final.is_relative_to(roots[status]), f"row #{row_id} {name} filed outside {status}"
        assert final.is_file(), f"row #{row_id} {name}: {final} does not exist"
        assert sha(final) == digest, f"row #{row_id} {name}: {final} holds other content"
        row_shas[digest] = row_shas.get(digest, 0) + 1
    return {
        "images": len(originals),
        "rows": len(rows),
        "lost": sum(1 for d in originals if d not in found or d not in row_shas),
        "duplicated": sum(max(0, found.get(d, 0) - 1) + max(0, row_shas.get(d, 0) - 1) for d in originals),
        "unknown_files": sum(n for d, n in found.items() if d not in originals),
    }


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "8m") -> Iterator[Path]:
    """A real tmpfs mounted at ``where`` (another file system than tmp_path); skips without root."""
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) on this machine: cannot make a second file system")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=20, check=False)
