"""``inspectd bench``: how fast this machine judges with one export, as ratios measured in one run.

Three ways to run the same IR on the same images, in one process run so that the machine's mood
(other load, clock) is shared:

- ``seed_loop_ips``: anomalib's ``OpenVINOInferencer.predict(path)`` in a loop, default config
  (the tutorial way, and this project's starting point);
- ``raw_ips``: the best raw OpenVINO configuration found (precision hint x performance hint x
  async infer requests x batch) on tensors decoded beforehand at the model's input size: the
  ceiling for this IR on this CPU;
- ``daemon_ips``: a real ``inspectd run`` (a child process) draining a backlog of the images:
  once it has judged one warm-up image, all of them are renamed into its inbox at once, timed from
  its first decision of the backlog to the last, as the issue that asked for the bench defines it
  (the images decided after the first batch over that span, so that a batch of verdicts landing
  together does not count as time-free images); ``daemon_ips_from_landing`` is the stricter figure
  from the first landing to the last decision, which also counts the time to the first verdict
  (``first_decision_ms``: claiming the burst, decoding and the first inference).

``raw_ips`` is not the screen's best figure: the best of eight noisy one-second runs is biased high
(on a shared CPU it often caught a fast second; the winner's curse). And a shared CPU's speed
drifts by up to 2x from one minute to the next, so one raw figure and one drain taken minutes apart
give a ratio that is mostly the drift. So the daemon drains the backlog ``rounds`` times (fresh
copies of the images each time), and the configuration the screen picked is timed again before the
first drain, between drains and after the last: ``daemon_ips`` and ``raw_ips`` are the medians,
``round_ratios`` each drain over the mean of the raw timings on either side of it, and
``raw_screen_ips`` the screen's own figure.

``overhead_ms_per_image`` is the daemon's time per image minus the raw one; latency p50/p95 is from
a closed file to its committed row at a low rate (one image at a time), and
``daemon_inference_p50_ms`` the median inference time those rows record (anomalib's inferencer call
in the daemon), so that latency minus it is what intake, reading and recording add;
``peak_rss_mb`` is the daemon process's high-water mark. Overlays wait for a pause in judging
(``daemon.judge.heatmaps``), so their cost is not in ``daemon_ips`` but after it:
``overlays_per_drain`` and ``overlays_done_ms``, from a drain's last verdict to its last overlay PNG.

``baseline_seed_loop_ips`` (with ``baseline=``, e.g. the fp32 export an INT8 one was quantised from):
the seed loop on that other export, same images, same run, so that "the INT8 daemon against the FP
seed loop" is one ratio from one run; ``None`` without it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from PIL import Image

from inspectd.export import locate_xml
from inspectd.imaging import decode_rgb

WARMUP = 2
MIN_TIMED_S = 1.0  # seed loop and raw runs repeat their images until this long has passed
CONFIRM_S = 3.0  # the chosen raw configuration, timed again before, between and after the drains
LATENCY_IMAGES = 8
SETTLE_S = 30.0  # after a drain, how long to wait for its moves and overlays before timing raw
DEFAULT_ROUNDS = 3


@dataclass(frozen=True)
class BenchResult:
    images: int
    image_size: tuple[int, int]
    seed_loop_ips: float
    raw_ips: float
    raw_config: dict[str, Any]
    raw_screen_ips: float  # the chosen configuration's figure in the screen (biased high)
    daemon_ips: float  # first to last decision of the backlog
    overhead_ms_per_image: float
    latency_p50_ms: float
    latency_p95_ms: float
    inference_ms: float  # raw, synchronous, per image at the chosen precision
    daemon_inference_p50_ms: float  # what the low-rate rows record as their inference time
    peak_rss_mb: float
    cpu: str
    baseline_seed_loop_ips: float | None = None
    round_ratios: tuple[float, ...] = ()  # each drain over the raw timings on either side of it
    daemon_backlog_batch: int = 1  # the daemon's model.backlog_batch: the chosen raw batch
    daemon_backlog_streams: bool = True  # the daemon's model.backlog_streams: a THROUGHPUT pick
    daemon_ips_from_landing: float = 0.0  # first landing to last decision: the stricter figure
    first_decision_ms: float = 0.0  # median over the drains, from the landing to the first verdict
    overlays_per_drain: float = 0.0  # median: the drain's rejects that got an overlay PNG
    overlays_done_ms: float | None = None  # median: from a drain's last verdict to its last overlay

    def ratios(self) -> dict[str, float]:
        """The figures the speed goals are set on, each defined here once (text output, ``--json``
        and ``benchmarks/camera_frames.py`` all read them from here)."""
        found = {
            "daemon_over_raw": round(self.daemon_ips / self.raw_ips, 3),
            "daemon_from_landing_over_raw": round(self.daemon_ips_from_landing / self.raw_ips, 3),
            "daemon_over_seed_loop": round(self.daemon_ips / self.seed_loop_ips, 3),
            "overhead_ms_per_image": self.overhead_ms_per_image,
            "idle_latency_over_raw_inference_ms": round(self.latency_p50_ms - self.inference_ms, 1),
            "idle_latency_over_daemon_inference_ms": round(
                self.latency_p50_ms - self.daemon_inference_p50_ms, 1
            ),
        }
        if self.baseline_seed_loop_ips:
            found["daemon_over_baseline_seed_loop"] = round(self.daemon_ips / self.baseline_seed_loop_ips, 3)
        return found

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ratios": self.ratios()}, indent=2)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def write_images(folder: Path, n: int, size: tuple[int, int], fmt: str, seed: int = 0) -> list[Path]:
    """Camera-like test frames: a lit, grainy surface, each one different."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(n):
        base = 120 + 40 * np.sin(xx / (37 + i) + i) * np.cos(yy / 53)
        grain = rng.normal(0, 6, (height, width))
        gray = np.clip(base + grain, 0, 255).astype(np.uint8)
        image = Image.fromarray(np.stack([gray, gray, (gray * 0.95).astype(np.uint8)], axis=-1))
        path = folder / f"frame{i:04d}.{fmt}"
        image.save(path, quality=90) if fmt == "jpg" else image.save(path)
        paths.append(path)
    return paths


def _ips(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _timed_ips(one_pass: Callable[[], int], min_s: float = MIN_TIMED_S) -> float:
    """Images/s of ``one_pass`` (which returns how many images it ran), repeated until ``min_s``
    has passed: a few fast images alone are timer and wake-up noise."""
    done, started = 0, time.perf_counter()
    while True:
        done += one_pass()
        elapsed = time.perf_counter() - started
        if elapsed >= min_s:
            return _ips(done, elapsed)


def seed_loop(xml: Path, paths: list[Path], cache: Path) -> float:
    """anomalib's inferencer, default config, path by path (its own decoding and resizing)."""
    from anomalib.deploy import OpenVINOInferencer

    cwd = Path.cwd()
    os.chdir(cache)  # it writes ./openvino_cache
    try:
        inferencer = OpenVINOInferencer(path=xml, device="CPU")
        for path in paths[:WARMUP]:
            inferencer.predict(path)

        def one_pass() -> int:
            for path in paths:
                inferencer.predict(path)
            return len(paths)

        return _timed_ips(one_pass)
    finally:
        os.chdir(cwd)


def input_tensors(xml: Path, paths: list[Path]) -> NDArray[np.float32]:
    """The images decoded and resized to the model's input size, NCHW float in [0, 1]."""
    from inspectd.card import read_card

    height, width = read_card(xml).image_size
    arrays = []
    for path in paths:
        rgb = (decode_rgb(path) * 255).astype(np.uint8)
        small = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(arrays)


def raw_configs() -> list[dict[str, Any]]:
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    precisions = ["f32", *(["bf16"] if "BF16" in capabilities else [])]
    configs = []
    for precision in precisions:
        configs.append({"precision": precision, "hint": "LATENCY", "mode": "sync", "batch": 1})
        # one request, two images: what batching a backlog would buy the daemon's single inference
        configs.append({"precision": precision, "hint": "LATENCY", "mode": "sync", "batch": 2})
        configs.append({"precision": precision, "hint": "THROUGHPUT", "mode": "async", "batch": 1})
        configs.append({"precision": precision, "hint": "THROUGHPUT", "mode": "async", "batch": 2})
    return configs


def raw_run(
    xml: Path, tensors: NDArray[np.float32], config: dict[str, Any], min_s: float = MIN_TIMED_S
) -> float:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(xml),
        "CPU",
        {"INFERENCE_PRECISION_HINT": config["precision"], "PERFORMANCE_HINT": config["hint"]},
    )
    batch = int(config["batch"])
    chunks = [tensors[i : i + batch] for i in range(0, len(tensors), batch)]
    if config["mode"] == "sync":
        request = compiled.create_infer_request()
        for chunk in chunks[:WARMUP]:
            request.infer({0: chunk})

        def sync_pass() -> int:
            for chunk in chunks:
                request.infer({0: chunk})
            return len(tensors)

        return _timed_ips(sync_pass, min_s)
    jobs = max(2, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    queue = ov.AsyncInferQueue(compiled, jobs)
    for chunk in chunks[:WARMUP]:
        queue.start_async({0: chunk})
    queue.wait_all()

    def async_pass() -> int:
        for chunk in chunks:
            queue.start_async({0: chunk})
        queue.wait_all()
        return len(tensors)

    return _timed_ips(async_pass, min_s)


def raw_best(
    xml: Path, tensors: NDArray[np.float32], say: Callable[[str], None]
) -> tuple[float, dict[str, Any], float]:
    """(best images/s, its config, synchronous ms per image at the best precision).

    Each configuration is timed twice, in two passes of opposite order, and judged by the mean of
    its two timings: a CPU whose speed drifts during the screen favours neither the first nor the
    last configurations, and one lucky second picks no configuration on its own (a wrong pick
    lets a daemon on the better configuration look faster than raw)."""
    configs = raw_configs()
    timings: list[list[float]] = [[] for _ in configs]
    unusable: set[int] = set()
    for index in [*range(len(configs)), *reversed(range(len(configs)))]:
        if index in unusable:
            continue
        config = configs[index]
        try:
            timings[index].append(raw_run(xml, tensors, config))
        except RuntimeError as exc:  # a batch the IR does not take, a hint this CPU lacks
            say(f"raw {config}: not usable ({' '.join(str(exc).split())[:120]})")
            unusable.add(index)
            continue
        if len(timings[index]) == 2:
            say(f"raw {config}: {statistics.mean(timings[index]):.2f} images/s")
    results = [(statistics.mean(timings[i]), config) for i, config in enumerate(configs) if i not in unusable]
    best_ips, best = max(results, key=lambda r: r[0])
    sync = [
        ips
        for ips, c in results
        if c["mode"] == "sync" and c["batch"] == 1 and c["precision"] == best["precision"]
    ]
    return best_ips, best, 1000.0 / sync[0] if sync else 1000.0 / best_ips


def daemon_config(root: Path, model: Path, backlog_batch: int = 1, backlog_streams: bool = True) -> Path:
    data = {
        "paths": {
            "inbox": "inbox",
            "accepted": "accepted",
            "rejected": "rejected",
            "quarantine": "quarantine",
            "state": "state",
        },
        "database": {"url": "sqlite:///bench.db"},
        "model": {
            "path": str(model),
            "check_seconds": 0,
            "backlog_batch": backlog_batch,
            "backlog_streams": backlog_streams,
        },
        "watch": {"settle_ms": 200, "rescan_seconds": 30},
        "log": {"level": "WARNING"},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


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
    log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    try:
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
        figures = DaemonFigures(drains, latencies, inference_ms_of(db, late_names), _peak_rss_mb(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return figures


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
    from_landing = _ips(len(paths), (times[-1] - started).total_seconds())
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


def bench(
    model: Path,
    *,
    images: int = 30,
    size: tuple[int, int] = (256, 256),
    fmt: str = "png",
    say: Callable[[str], None] = lambda text: None,
    baseline: Path | None = None,
    rounds: int = DEFAULT_ROUNDS,
) -> BenchResult:
    xml = locate_xml(model)
    baseline_xml = locate_xml(baseline) if baseline is not None else None
    with tempfile.TemporaryDirectory(prefix="inspectd-bench-") as tmp:
        root = Path(tmp)
        paths = write_images(root / "images", images, size, fmt)
        (root / "seed").mkdir()
        say(f"seed loop: anomalib OpenVINOInferencer.predict(path) on {images} images")
        seed_ips = seed_loop(xml, paths, root / "seed")
        say(f"seed loop: {seed_ips:.2f} images/s")
        baseline_ips = None
        if baseline_xml is not None:
            (root / "baseline").mkdir()
            baseline_ips = seed_loop(baseline_xml, paths, root / "baseline")
            say(f"seed loop on the baseline {baseline_xml}: {baseline_ips:.2f} images/s")
        tensors = input_tensors(xml, paths)
        screen_ips, raw_config, inference_ms = raw_best(xml, tensors, say)
        raws: list[float] = []

        def time_raw() -> None:
            raws.append(raw_run(xml, tensors, raw_config, CONFIRM_S))
            say(f"raw, chosen configuration: {raws[-1]:.2f} images/s")

        batch = backlog_batch_for(raw_config)
        streams = backlog_streams_for(raw_config)
        say(
            f"daemon: inspectd run (model.backlog_streams: {str(streams).lower()}, backlog_batch: "
            f"{batch}) draining a backlog {rounds} "
            "time(s), then one image at a time"
        )
        (root / "daemon").mkdir()
        run = daemon_run(
            model, paths, root / "daemon", rounds, time_raw, backlog_batch=batch, backlog_streams=streams
        )
    for drain in run.drains:
        say(
            f"daemon: {drain.ips:.2f} images/s from its first decision to the last, "
            f"{drain.ips_from_landing:.2f} from the landing (first decision after "
            f"{drain.first_decision_ms:.0f} ms)"
        )
    round_ratios = tuple(
        round(drain.ips / ((raws[i] + raws[i + 1]) / 2), 3) for i, drain in enumerate(run.drains)
    )
    raw_ips = statistics.median(raws)
    daemon_ips = statistics.median(drain.ips for drain in run.drains)
    return BenchResult(
        images=images,
        image_size=size,
        seed_loop_ips=round(seed_ips, 3),
        raw_ips=round(raw_ips, 3),
        raw_config=raw_config,
        raw_screen_ips=round(screen_ips, 3),
        daemon_ips=round(daemon_ips, 3),
        overhead_ms_per_image=round(1000 / daemon_ips - 1000 / raw_ips, 1),
        latency_p50_ms=round(statistics.median(run.latencies_ms), 1),
        latency_p95_ms=round(float(np.percentile(run.latencies_ms, 95)), 1),
        inference_ms=round(inference_ms, 1),
        daemon_inference_p50_ms=round(statistics.median(run.inference_ms), 1) if run.inference_ms else 0.0,
        peak_rss_mb=round(run.peak_rss_mb, 1),
        cpu=cpu_name(),
        baseline_seed_loop_ips=round(baseline_ips, 3) if baseline_ips is not None else None,
        round_ratios=round_ratios,
        daemon_backlog_batch=batch,
        daemon_backlog_streams=streams,
        daemon_ips_from_landing=round(statistics.median(drain.ips_from_landing for drain in run.drains), 3),
        first_decision_ms=round(statistics.median(drain.first_decision_ms for drain in run.drains), 1),
        overlays_per_drain=statistics.median(drain.overlays for drain in run.drains),
        overlays_done_ms=_median_or_none([drain.overlays_done_ms for drain in run.drains]),
    )


def _median_or_none(values: list[float | None]) -> float | None:
    found = [value for value in values if value is not None]
    return round(statistics.median(found), 1) if found else None


def backlog_streams_for(raw_config: dict[str, Any]) -> bool:
    """The daemon runs a backlog on THROUGHPUT streams only when the chosen raw configuration did
    (after a LATENCY pick it infers one image at a time, as raw did)."""
    return bool(raw_config["hint"] == "THROUGHPUT")


def backlog_batch_for(raw_config: dict[str, Any]) -> int:
    """The daemon runs what the chosen raw configuration runs: a backlog batched on the THROUGHPUT
    streams as raw batched them (the daemon's sync LATENCY inference never batches)."""
    return int(raw_config["batch"]) if backlog_streams_for(raw_config) else 1
