"""The two ceilings the daemon is set against: anomalib's own loop (the seed's way) and the best raw
OpenVINO configuration on tensors decoded beforehand; and what the daemon takes over from the raw pick."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from inspectd.imaging import decode_rgb

WARMUP = 2
MIN_TIMED_S = 1.0  # seed loop and raw runs repeat their images until this long has passed
CONFIRM_S = 3.0  # the chosen raw configuration, timed again before, between and after the drains


def ips(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _timed_ips(one_pass: Callable[[], int], min_s: float = MIN_TIMED_S) -> float:
    """Images/s of ``one_pass`` (which returns how many images it ran), repeated until ``min_s``
    has passed: a few fast images alone are timer and wake-up noise."""
    done, started = 0, time.perf_counter()
    while True:
        done += one_pass()
        elapsed = time.perf_counter() - started
        if elapsed >= min_s:
            return ips(done, elapsed)


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


def backlog_streams_for(raw_config: dict[str, Any]) -> bool:
    """The daemon runs a backlog on THROUGHPUT streams only when the chosen raw configuration did
    (after a LATENCY pick it infers one image at a time, as raw did)."""
    return bool(raw_config["hint"] == "THROUGHPUT")


def backlog_batch_for(raw_config: dict[str, Any]) -> int:
    """The daemon runs what the chosen raw configuration runs: a backlog batched on the THROUGHPUT
    streams as raw batched them (the daemon's sync LATENCY inference never batches)."""
    return int(raw_config["batch"]) if backlog_streams_for(raw_config) else 1
