"""Prometheus metrics and a liveness check, two routes of the daemon's web server.

Each Daemon owns its CollectorRegistry (never the process-global one), so two daemons in one test
process do not collide. Images are counted when their row is committed (the store calls
``row_recorded``), so ``inspectd_images_total`` agrees with the database. ``/healthz`` answers 503
when the processing loop has not completed an iteration for ``stall_seconds``: a hung loop is
visible even though the HTTP thread itself still answers.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

from daemon.db.models import STATUSES, Inspection
from daemon.judge.ahead import Scorer
from daemon.judge.pipeline import StepResult
from daemon.web.server import Request, Response, Route
from inspectd.errors import InferenceFailed, UnreadableImage
from inspectd.scorer import Score

# verdict_voided: recovery found a row's image gone (neither filed nor claimed) and deleted the row,
# so inspectd_images_total can run ahead of the table by this count.
ERROR_KINDS = (
    "unreadable_image",
    "inference_failed",
    "deferred",
    "move_failed",
    "verdict_voided",
    "reload_refused",
)
INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


class Metrics:
    """Every series carries a ``line`` label (the line's name in config.yaml; ``daemon`` for what
    concerns the whole daemon, such as a refused reload)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.images = Counter(
            "inspectd_images", "Images recorded in the database, by status", ["line", "status"], registry=r
        )
        self.errors = Counter(
            "inspectd_errors", "Problems met while judging, by kind", ["line", "kind"], registry=r
        )
        self.inference = Histogram(
            "inspectd_inference_seconds",
            "Model inference time per image",
            ["line"],
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "inspectd_end_to_end_seconds",
            "First seen in the inbox to verdict recorded",
            ["line"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backlog = Gauge(
            "inspectd_inbox_backlog", "Inbox files seen but not judged or moved yet", ["line"], registry=r
        )
        self.last_success = Gauge(
            "inspectd_last_success_timestamp_seconds",
            "Unix time of the last accepted/rejected verdict",
            ["line"],
            registry=r,
        )
        self.last_loop = Gauge(
            "inspectd_loop_last_iteration_timestamp_seconds", "Unix time the loop last went round", registry=r
        )
        self.model_loads = Counter(
            "inspectd_model_reloads", "Models swapped in while running", ["line"], registry=r
        )
        self.model = Info("inspectd_model", "The model judging now", ["line"], registry=r)
        self.drift_alarm = Gauge(
            "inspectd_drift_alarm",
            "1 while accepted parts no longer score like the model's good parts (KS test), else 0",
            ["line"],
            registry=r,
        )
        self.drift_statistic = Gauge(
            "inspectd_drift_statistic",
            "Kolmogorov-Smirnov distance between recent accepted scores and the reference",
            ["line"],
            registry=r,
        )
        self.counts: collections.Counter[str] = collections.Counter()
        self._clock = clock
        self._last_beat = clock()

    def add_line(self, line: str) -> None:
        """Every series of a line exists from the start, at zero, so dashboards see the line."""
        for status in STATUSES:
            self.images.labels(line, status)
        for kind in ERROR_KINDS:
            self.errors.labels(line, kind)
        self.model_loads.labels(line)
        self.drift_alarm.labels(line).set(0)
        self.drift_statistic.labels(line).set(0)

    def error(self, line: str, kind: str) -> None:
        self.errors.labels(line, kind).inc()

    # -- fed by the store, the scorer and the loop --------------------------------------------
    def row_recorded(self, row: Inspection) -> None:
        self.images.labels(row.line, row.status).inc()
        self.counts[row.status] += 1
        if row.latency_ms is not None:
            self.latency.labels(row.line).observe(max(row.latency_ms, 0.0) / 1000)
        if row.status != "quarantined":
            self.last_success.labels(row.line).set(time.time())

    def step_done(self, line: str, result: StepResult, backlog: int) -> None:
        if result.outcome == "deferred":
            self.error(line, "deferred")
        elif result.outcome == "vanished" and result.row_id is not None:
            self.error(line, "verdict_voided")
        elif result.outcome in STATUSES and result.row_id is not None and result.final_path is None:
            self.error(line, "move_failed")  # recorded, the move is being retried
        self.backlog.labels(line).set(backlog)
        self.beat()

    def beat(self) -> None:
        self._last_beat = self._clock()
        self.last_loop.set(time.time())

    def set_model(self, line: str, model_id: str, teacher: str, threshold: float) -> None:
        self.model.labels(line).info(
            {"model_id": model_id, "teacher": teacher, "threshold": f"{threshold:.4f}"}
        )

    def seconds_since_beat(self) -> float:
        return self._clock() - self._last_beat

    def status_line(self, backlog: int, models: str) -> str:
        c = self.counts
        judged = sum(c[s] for s in STATUSES)
        return (
            f"judged {judged} since start ({c['accepted']} accepted, {c['rejected']} rejected, "
            f"{c['quarantined']} quarantined); backlog {backlog}; {models}"
        )


class MeteredScorer:
    """Wraps the model a line's pipeline calls: times inference and counts failures by kind."""

    def __init__(self, model: Scorer, metrics: Metrics, line: str = "default") -> None:
        self.model = model
        self.metrics = metrics
        self.line = line

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def score(self, path: Path) -> Score:
        try:
            result = self.model.score(path)
        except UnreadableImage:
            self.metrics.error(self.line, "unreadable_image")
            raise
        except InferenceFailed:
            self.metrics.error(self.line, "inference_failed")
            raise
        self.metrics.inference.labels(self.line).observe(result.inference_ms / 1000)
        return result


def metrics_routes(metrics: Metrics, stall_seconds: float) -> dict[str, Route]:
    """``/metrics`` in Prometheus' text format, ``/healthz`` answering 503 once the loop stalls."""

    def prometheus(_request: Request) -> Response:
        return Response(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)

    def health(_request: Request) -> Response:
        idle = metrics.seconds_since_beat()
        if idle > stall_seconds:
            return Response.text(503, f"stalled: the processing loop has not gone round for {idle:.0f} s\n")
        return Response.text(200, "ok\n")

    return {"/metrics": prometheus, "/healthz": health}
