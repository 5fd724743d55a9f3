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

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from daemon.bench.drain import (
    daemon_child,
    daemon_config,
    daemon_run,
    decided_count,
    drain_rate,
    overlay_lag,
    settled,
    wait_for,
    wait_settled,
)
from daemon.bench.frames import cpu_name, frame_size, write_images
from daemon.bench.raw import (
    CONFIRM_S,
    backlog_batch_for,
    backlog_streams_for,
    input_tensors,
    raw_best,
    raw_run,
    seed_loop,
)
from daemon.bench.result import BenchResult
from inspectd.export import locate_xml

DEFAULT_ROUNDS = 3

__all__ = [
    "DEFAULT_ROUNDS",
    "BenchResult",
    "backlog_batch_for",
    "backlog_streams_for",
    "bench",
    "daemon_child",
    "daemon_config",
    "decided_count",
    "drain_rate",
    "frame_size",
    "overlay_lag",
    "settled",
    "wait_for",
    "wait_settled",
    "write_images",
]


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
