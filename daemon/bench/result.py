"""What ``inspectd bench`` measured, and the ratios its goals are set on."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


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
