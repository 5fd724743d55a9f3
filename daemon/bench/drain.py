"""A real ``inspectd run`` (a child process) draining backlogs and then judging one image at a
time, read back from its SQLite database: rates, latencies, peak RSS, and the overlays' lag."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon.bench.raw import ips
from daemon.config import dump_defaults

LATENCY_IMAGES = 8
SETTLE_S = 30.0  # after a drain, how long to wait for its moves and overlays before timing raw


def daemon_config(root: Path, model: Path, backlog_batch: int = 1, backlog_streams: bool = True) -> Path:
    """The daemon's defaults (as ``inspectd demo`` writes them), with the bench's model and a quiet log."""
    data = dump_defaults()
    data["database"] = {"url": "sqlite:///bench.db"}
    data["model"].update(
        path=str(model), check_seconds=0, backlog_batch=backlog_batch, backlog_streams=backlog_streams
    )
    data["watch"] = {"settle_ms": 200, "rescan_seconds": 30}
    data["log"] = {"level": "WARNING"}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@contextlib.contextmanager
def daemon_child(config: Path, work: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``inspectd run`` as a child process in ``work`` (its output in daemon.log there), stopped
    with SIGTERM as systemd stops it, and killed if it has not exited a minute later."""
    with (work / "daemon.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def decided(db: Path) -> list[tuple[str, dt.datetime]]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=10) as conn:
        try:
            rows = conn.execute("SELECT filename, decided_at FROM inspections ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []
    return [(name, _utc(text)) for name, text in rows]


def decided_count(db: Path) -> int:
    """How many rows the daemon has committed: one COUNT, so polling it costs the daemon's CPU
    nothing that grows with the table (the soak polls a table of 10,000 rows)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=10) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM inspections").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def inference_ms_of(db: Path, names: list[str]) -> list[float]:
    """The inference time the daemon recorded for these file names."""
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute("SELECT filename, inference_ms FROM inspections").fetchall()
    wanted = set(names)
    return [float(ms) for name, ms in rows if name in wanted and ms is not None]


def _utc(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def wait_for(check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"inspectd run exited with {proc.returncode} during the benchmark")
        if time.monotonic() > deadline:
            raise RuntimeError("inspectd run did not finish the benchmark's images in time")
        time.sleep(0.05)


@dataclass(frozen=True)
class DaemonFigures:
    drains: list[Drain]  # one per round
    latencies_ms: list[float]  # closed file to committed row, one image at a time
    inference_ms: list[float]  # what those rows record
    peak_rss_mb: float


def daemon_run(
    model: Path,
    paths: list[Path],
    work: Path,
    rounds: int = 1,
    between: Callable[[], object] = lambda: None,
    *,
    backlog_batch: int = 1,
    backlog_streams: bool = True,
) -> DaemonFigures:
    """Backlog rate (``rounds`` drains, ``between()`` called before, between and after them while
    the daemon idles), low-rate latencies and peak RSS of a real ``inspectd run``."""
    config = daemon_config(work, model, backlog_batch, backlog_streams)
    inbox, db, stage = work / "inbox", work / "bench.db", work / "stage"
    inbox.mkdir()
    stage.mkdir()
    shutil.copy(paths[0], inbox / f"warmup{paths[0].suffix}")  # judged first: the daemon is up
    with daemon_child(config, work) as proc:
        wait_for(functools.partial(_more_than, db, 0), 180, proc)
        drains = []
        for round_no in range(rounds):
            between()
            drain = _drain(proc, paths, stage / f"r{round_no}", inbox, db, batch=backlog_batch)
            wait_settled(db, work / "heatmaps")
            drains.append(dataclasses.replace(drain, **overlay_lag(db, f"r{round_no}", work)))
        between()
        latencies, late_names = [], []
        for i, path in enumerate(paths[:LATENCY_IMAGES]):
            target = inbox / f"late{i:02d}{path.suffix}"
            late_names.append(target.name)
            part = inbox / f".{target.name}.part"
            shutil.copy(path, part)
            before = decided_count(db)
            closed = dt.datetime.now(dt.timezone.utc)
            part.rename(target)
            wait_for(functools.partial(_more_than, db, before), 60, proc)
            latencies.append((decided(db)[-1][1] - closed).total_seconds() * 1000)
            time.sleep(0.2)
        return DaemonFigures(drains, latencies, inference_ms_of(db, late_names), _peak_rss_mb(proc.pid))


@dataclass(frozen=True)
class Drain:
    ips: float  # first to last decision
    ips_from_landing: float
    first_decision_ms: float
    overlays: int = 0  # overlay PNGs written for the drain's rejects
    overlays_done_ms: float | None = None  # from its last decision to its last overlay written


def _drain(
    proc: subprocess.Popen[bytes], paths: list[Path], stage: Path, inbox: Path, db: Path, *, batch: int
) -> Drain:
    """The whole backlog lands at once (renames, as an uploader finishing its files) and is timed
    both ways: from the first decision to the last (``drain_rate``) and from the first landing to
    the last decision."""
    stage.mkdir()
    prefix = stage.name
    staged = [Path(shutil.copy(path, stage / f"{prefix}-{path.name}")) for path in paths]
    before = decided_count(db)
    started = dt.datetime.now(dt.timezone.utc)
    for path in staged:
        path.rename(inbox / path.name)
    wait_for(functools.partial(_more_than, db, before + len(paths) - 1), 60 + 5 * len(paths), proc)
    times = sorted(t for _, t in decided(db)[before:])
    from_landing = ips(len(paths), (times[-1] - started).total_seconds())
    return Drain(
        drain_rate(times, batch) or from_landing,
        from_landing,
        (times[0] - started).total_seconds() * 1000,
    )


def drain_rate(times: list[dt.datetime], batch: int) -> float | None:
    """Images/s from the first decision to the last: the images decided after the first batch
    over that span (a batch's verdicts come together, so counting all but one image would credit
    the first batch's other images with no time). None when the span holds no such image."""
    span = (times[-1] - times[0]).total_seconds() if times else 0.0
    after_first = len(times) - max(1, batch)
    return after_first / span if after_first > 0 and span > 0 else None


def overlay_lag(db: Path, prefix: str, work: Path) -> dict[str, Any]:
    """How many overlays a drain's rows got and when the last was written, from the drain's last
    decision: overlays wait for a pause in judging, so their cost shows after the verdicts."""
    with sqlite3.connect(db, timeout=10) as conn:
        rows = conn.execute(
            "SELECT decided_at, heatmap_path FROM inspections WHERE filename LIKE ?", (f"{prefix}-%",)
        ).fetchall()
    if not rows:
        return {}
    last_decision = max(_utc(decided_at).timestamp() for decided_at, _ in rows)
    written = [mtime for _, path in rows if path and (mtime := _mtime(work / path)) is not None]
    done_ms = round((max(written) - last_decision) * 1000, 1) if written else None
    return {"overlays": len(written), "overlays_done_ms": done_ms}


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:  # not written (dropped under load) or gone
        return None


def settled(db: Path, heatmaps: Path) -> bool:
    """Whether the daemon has finished what follows its verdicts: every row's move marked, and an
    overlay written for every rejected row (the bench's config writes overlays for those only)."""
    with sqlite3.connect(db, timeout=10) as conn:
        unmoved, rejected = conn.execute(
            "SELECT SUM(moved_at IS NULL), SUM(status = 'rejected') FROM inspections"
        ).fetchone()
    overlays = sum(1 for _ in heatmaps.rglob("[!.]*.png")) if heatmaps.is_dir() else 0
    return not unmoved and overlays >= (rejected or 0)


def wait_settled(db: Path, heatmaps: Path, timeout: float = SETTLE_S) -> bool:
    """Wait (bounded) until the daemon is settled, so that the raw timing after a drain does not
    share the CPU with the drain's last moves and overlay PNGs. False if it did not settle: an
    overlay the daemon dropped under load never comes, and the bench goes on."""
    deadline = time.monotonic() + timeout
    while not settled(db, heatmaps):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _more_than(db: Path, count: int) -> bool:
    return decided_count(db) > count


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
