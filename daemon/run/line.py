"""One line: an inbox with its watcher, settle tracker, pipeline, model and model watch.

The service holds the lines and what they share (the store, metrics, notifier, retention); a line
judges its own captures with its own model and threshold, and swaps its model on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from daemon.config import DriftConfig, LineConfig, WatchConfig
from daemon.db.store import Store
from daemon.errors import ConfigError
from daemon.intake.settle import Arrivals
from daemon.intake.watcher import InboxWatcher
from daemon.judge.ahead import Ahead
from daemon.judge.destinations import Destinations
from daemon.judge.drift import DriftMonitor, DriftState
from daemon.judge.followups import Followups
from daemon.judge.heatmaps import HeatmapWriter
from daemon.judge.pipeline import Pipeline, StepResult
from daemon.run.model_watch import Fingerprint, ModelWatch
from daemon.web.metrics import MeteredScorer, Metrics
from inspectd.errors import ModelError
from inspectd.scorer import Model


def make_watcher(line: LineConfig) -> InboxWatcher:
    return InboxWatcher(
        line.paths.inbox,
        extensions=line.watch.extensions,
        ignore=line.watch.ignore,
        rescan_seconds=line.watch.rescan_seconds,
        observer=line.watch.observer,
        recursive=line.watch.recursive,
    )


HEATMAP_STATUSES = {"rejected": ("rejected",), "all": ("accepted", "rejected"), "off": ()}


def load_model(line: LineConfig, cache_dir: Path, max_pixels: int) -> Model:
    return Model(
        line.model.path,
        cache_dir,
        line.model.device,
        max_pixels,
        line.model.precision,
        backlog_streams=line.model.backlog_streams,
        backlog_batch=line.model.backlog_batch,
    )


def compiled_as(line: LineConfig) -> tuple[object, ...]:
    """The settings a model is loaded and compiled with: a change needs the model loaded again."""
    m = line.model
    return (m.path, m.device, m.precision, m.backlog_streams, m.backlog_batch)


def ahead_depth(model: Model) -> int:
    """Files judged at once: a batch per stream the model infers on together, and the next being
    read."""
    return model.streams * model.batch + 1


class Line:
    def __init__(
        self,
        config: LineConfig,
        *,
        store: Store,
        metrics: Metrics,
        cache_dir: Path,
        max_pixels: int,
        key: str,
        instance: str,
        beat: Callable[[], None] = lambda: None,
        heatmaps: str = "rejected",
        drift: DriftConfig | None = None,
        quiet: threading.Event | None = None,
    ) -> None:
        """``key`` names the line in configuration errors (``model`` or ``lines.2.model``);
        ``beat`` tells systemd the loop is alive while a model compiles; ``quiet``, set while
        every line is idle, is when heatmap overlays are written (``daemon.judge.heatmaps``)."""
        self.config = config
        self.metrics = metrics
        metrics.add_line(config.name)
        self.cache_dir = cache_dir
        self._beat = beat
        try:
            self.model = load_model(config, cache_dir, max_pixels)
        except ModelError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        self.model_watch = ModelWatch(config.model.path, config.model.check_seconds, time.monotonic())
        self.watcher = make_watcher(config)
        self.heatmaps = HeatmapWriter(store.set_heatmap, quiet) if heatmaps != "off" else None
        self.drift_config = drift or DriftConfig()
        self.pipeline = Pipeline(
            events=self.watcher.events,
            arrivals=Arrivals(config.watch.settle_ms / 1000, expect_close=self.watcher.reports_close),
            scorer=MeteredScorer(self.model, metrics, config.name),
            store=store,
            destinations=Destinations(
                config.paths.accepted, config.paths.rejected, config.paths.quarantine, config.paths.review
            ),
            threshold=self.threshold_for(config, self.model),
            inbox=config.paths.inbox,
            instance=instance,
            ahead=Ahead(ahead_depth(self.model)),
            line=config.name,
            followups=Followups(
                heatmaps=self.heatmaps,
                heatmap_dir=config.paths.heatmaps,
                heatmap_statuses=HEATMAP_STATUSES[heatmaps],
                drift=self.new_drift_monitor(),
                on_drift=self._drift_checked,
            ),
        )

    def new_drift_monitor(self) -> DriftMonitor | None:
        """A fresh window against this model's held-out good-part scores (None: drift is off)."""
        d = self.drift_config
        if d.action == "off":
            return None
        reference = self.model.card.validation.get("normal_scores")
        monitor = DriftMonitor(reference, window=d.window, alpha=d.alpha, hold=d.action == "hold")
        self.metrics.drift_alarm.labels(self.config.name).set(0)
        return monitor

    def reset_drift(self) -> None:
        """SIGHUP or a new model: the operator has cleared the alarm (and any hold)."""
        drift = self.pipeline.followups.drift
        if drift is not None and drift.state.alarm:
            logger.info("line {}: drift alarm cleared; a new window starts", self.name)
        self.pipeline.followups.drift = self.new_drift_monitor()

    def _drift_checked(self, state: DriftState) -> None:
        line = self.config.name
        self.metrics.drift_alarm.labels(line).set(1 if state.alarm else 0)
        self.metrics.drift_statistic.labels(line).set(state.statistic)
        if not state.changed:
            return
        if state.alarm:
            logger.warning(
                "line {}: drift alarm: the last {} accepted parts no longer score like the reference "
                "({}): KS D={:.3f}, p={:.2g}{}",
                line,
                self.drift_config.window,
                drift.reference_source if (drift := self.pipeline.followups.drift) else "-",
                state.statistic,
                state.p_value,
                "; accepted parts now go to review/ until `systemctl reload`" if state.holding else "",
            )
        else:
            logger.info(
                "line {}: drift alarm cleared: KS D={:.3f}, p={:.2g}", line, state.statistic, state.p_value
            )

    @property
    def name(self) -> str:
        return self.config.name

    @staticmethod
    def threshold_for(config: LineConfig, model: Model) -> float:
        return config.model.threshold if config.model.threshold is not None else model.card.threshold

    def start(self) -> None:
        if self.heatmaps is not None:
            self.heatmaps.start()
        self.watcher.start()
        self.metrics.set_model(
            self.name, self.model.model_id, self.model.card.teacher, self.pipeline.threshold
        )
        logger.info(
            "line {}: watching {} ({} observer); model {} ({}), threshold {:.4f}, precision {}{}",
            self.name,
            self.config.paths.inbox,
            self.watcher.observer_name,
            self.model.model_id,
            self.model.card.teacher,
            self.pipeline.threshold,
            self.model.precision,
            f" (measured ms/image: {self.model.precision_choice})" if self.model.precision_choice else "",
        )

    def step(self, timeout: float) -> StepResult:
        return self.pipeline.step(timeout=timeout)

    def backlog(self) -> int:
        return self.pipeline.backlog()

    def stop(self) -> None:
        self.watcher.stop()
        self.pipeline.release()
        if self.heatmaps is not None:
            self.heatmaps.stop()
        self.pipeline.claims.tidy()

    def _publish_model(self) -> None:
        model = self.model
        self.metrics.set_model(self.name, model.model_id, model.card.teacher, self.pipeline.threshold)

    # -- model swaps ----------------------------------------------------------------------------------
    def check_model(self) -> None:
        """Periodic: load an export that changed on disk and has settled; keep the old one if broken."""
        stamp = self.model_watch.candidate()
        if stamp is None:
            return
        model = self.try_model(self.config, stamp, self.model.max_pixels)
        if model is None:
            return
        if model.model_id == self.model.model_id:
            logger.debug(
                "line {}: model files at {} changed, same IR ({}); keeping it",
                self.name,
                self.config.model.path,
                model.model_id,
            )
            return
        self.swap_model(model, self.config)

    def try_model(self, config: LineConfig, stamp: Fingerprint, max_pixels: int) -> Model | None:
        """The export at ``config.model.path`` loaded, or None (logged, counted) when it is broken."""
        self._beat()  # compiling a model can take a few seconds
        try:
            model = load_model(config, self.cache_dir, max_pixels)
        except (ModelError, OSError) as exc:
            self.model_watch.refused = stamp
            self.metrics.error(self.name, "reload_refused")
            logger.error(
                "line {}: new model at {} refused: {}; still judging with model {}",
                self.name,
                config.model.path,
                " ".join(str(exc).split()),  # OpenVINO's multi-line text, as one journal line
                self.model.model_id,
            )
            return None
        self.model_watch.loaded = stamp
        return model

    def swap_model(self, model: Model, config: LineConfig) -> None:
        previous = self.model.model_id
        self.model = model
        self.pipeline.scorer = MeteredScorer(model, self.metrics, self.name)
        self.pipeline.ahead.depth = ahead_depth(model)
        self.pipeline.threshold = self.threshold_for(config, model)
        self._publish_model()
        self.metrics.model_loads.labels(self.name).inc()
        self.reset_drift()  # the new model's own good-part scores are the reference now
        logger.info(
            "line {}: model {} ({}) now judging, replacing {}; threshold {:.4f}",
            self.name,
            model.model_id,
            model.card.teacher,
            previous,
            self.pipeline.threshold,
        )

    # -- live settings --------------------------------------------------------------------------------
    def apply(self, config: LineConfig, model: Model | None, max_pixels: int) -> None:
        """New live settings (and perhaps a model loaded for them) go live together; cannot fail."""
        if (config.model.path, config.model.device) != (self.config.model.path, self.config.model.device):
            self.model_watch.retarget(config.model.path)
        recompiled = compiled_as(config) != compiled_as(self.config)
        if model is not None and (recompiled or model.model_id != self.model.model_id):
            self.swap_model(model, config)
        self.pipeline.threshold = self.threshold_for(config, self.model)
        self.model.max_pixels = max_pixels
        self.metrics.set_model(
            self.name, self.model.model_id, self.model.card.teacher, self.pipeline.threshold
        )
        self.model_watch.check_seconds = config.model.check_seconds
        if config.watch != self.config.watch:
            self._apply_watch(config.watch)
        self.config = config
        self.reset_drift()  # a reload is how an operator clears the alarm and a hold

    def _apply_watch(self, watch: WatchConfig) -> None:
        """New watch rules: a fresh watcher (its start-up scan re-finds waiting files); settle is live."""
        self.pipeline.arrivals.settle_s = watch.settle_ms / 1000
        if watch.model_copy(update={"settle_ms": 0}) == self.config.watch.model_copy(update={"settle_ms": 0}):
            return
        self.watcher.stop()
        self.watcher = make_watcher(self.config.model_copy(update={"watch": watch}))
        self.pipeline.events = self.watcher.events
        self.watcher.start()
