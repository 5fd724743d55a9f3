"""The long-running process: start-up checks, threads, signals, and the loop around Pipeline.step.

Signal handlers only set an event. On SIGTERM/SIGINT the current image is finished (recorded and
moved), then ``run`` returns 0. SIGHUP asks the loop to re-read the config and the model between two
images (see ``daemon.reload``). The loop, not a timer, feeds systemd's watchdog and the health check,
so a loop that hangs is noticed and restarted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from loguru import logger

from daemon.config import Config, load_config
from daemon.db.engine import make_engine
from daemon.db.migrate import upgrade
from daemon.db.store import Store
from daemon.errors import ConfigError
from daemon.intake.settle import Arrivals
from daemon.intake.watcher import InboxWatcher
from daemon.judge.fs import same_filesystem
from daemon.judge.pipeline import Destinations, Pipeline
from daemon.run.logs import apply_log_config
from daemon.run.notify import Notifier
from daemon.run.reload import (
    Fingerprint,
    ModelWatch,
    cache_dir,
    changed_keys,
    fingerprint,
    live_config,
    needs_restart,
)
from daemon.run.retention import Retention
from daemon.web.metrics import MeteredScorer, Metrics, MetricsServer
from inspectd.errors import InspectdError, ModelError
from inspectd.export import locate_xml
from inspectd.scorer import Model


def prepare_folders(config: Config) -> None:
    """Create the configured folders and prove each is writable, naming the key that is wrong."""
    for key in ("inbox", "accepted", "rejected", "quarantine", "state"):
        folder: Path = getattr(config.paths, key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"paths.{key}: cannot create {folder}: {exc.strerror}") from None
        if not folder.is_dir():
            raise ConfigError(f"paths.{key}: {folder} exists but is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(
                f"paths.{key}: {folder} is not writable by this user; fix its permissions "
                "or point the key at another folder"
            )
    for key in ("accepted", "rejected", "quarantine"):
        if not same_filesystem(config.paths.inbox, getattr(config.paths, key)):
            logger.warning(
                "paths.{} is on another file system than paths.inbox: files are copied, "
                "synced and then removed from the inbox (slower than a rename)",
                key,
            )


def threshold_for(config: Config, model: Model) -> float:
    return config.model.threshold if config.model.threshold is not None else model.card.threshold


def make_watcher(config: Config) -> InboxWatcher:
    return InboxWatcher(
        config.paths.inbox,
        extensions=config.watch.extensions,
        ignore=config.watch.ignore,
        rescan_seconds=config.watch.rescan_seconds,
        observer=config.watch.observer,
        recursive=config.watch.recursive,
    )


@dataclass
class Daemon:
    """Everything ``run`` wires together; kept so tests and the demo can drive it."""

    config: Config
    pipeline: Pipeline
    watcher: InboxWatcher
    store: Store
    model: Model
    model_watch: ModelWatch
    metrics: Metrics = field(default_factory=Metrics)
    metrics_server: MetricsServer | None = None
    retention: Retention | None = None
    notifier: Notifier = field(default_factory=Notifier.from_environment)
    reload_requested: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, config: Config, reload_requested: threading.Event | None = None) -> Daemon:
        try:
            locate_xml(config.model.path)  # cheap check first: no folders created for a bad config
        except ModelError as exc:
            raise ConfigError(f"model.path: {exc}") from None
        prepare_folders(config)
        engine = make_engine(config.database.url)
        try:
            before, after = upgrade(engine)
        except Exception as exc:
            raise InspectdError(f"database {config.database.url}: cannot migrate: {exc}") from exc
        if before != after:
            logger.info("database schema upgraded from {} to {}", before or "empty", after)
        metrics = Metrics()
        store = Store(engine, on_record=metrics.row_recorded)
        model_watch = ModelWatch(config.model.path, config.model.check_seconds, time.monotonic())
        try:
            model = Model(config.model.path, cache_dir(config), config.model.device, config.limits.max_pixels)
        except ModelError as exc:
            raise ConfigError(f"model: {exc}") from None
        threshold = threshold_for(config, model)
        watcher = make_watcher(config)
        pipeline = Pipeline(
            events=watcher.events,
            arrivals=Arrivals(config.watch.settle_ms / 1000, expect_close=watcher.reports_close),
            scorer=MeteredScorer(model, metrics),
            store=store,
            destinations=Destinations(config.paths.accepted, config.paths.rejected, config.paths.quarantine),
            threshold=threshold,
            inbox=config.paths.inbox,
        )
        recovered = pipeline.recover()
        if recovered:
            logger.info("finished {} move(s) interrupted by the last stop", recovered)
        server = None
        if config.metrics is not None:  # bind before any thread starts: a taken port is a start-up error
            m = config.metrics
            server = MetricsServer(metrics, m.host, m.port, m.stall_seconds)
        metrics.set_model(model.model_id, model.card.teacher, threshold)
        watcher.start()
        logger.info(
            "watching {} ({} observer); model {} ({}), threshold {:.4f}; database {}",
            config.paths.inbox,
            watcher.observer_name,
            model.model_id,
            model.card.teacher,
            threshold,
            engine.url.render_as_string(hide_password=True),
        )
        if server is not None:
            server.start()
            logger.info("metrics on {}/metrics, health check on {}/healthz", server.url, server.url)
        daemon = cls(
            config,
            pipeline,
            watcher,
            store,
            model,
            model_watch,
            metrics=metrics,
            metrics_server=server,
            reload_requested=reload_requested or threading.Event(),
        )
        if config.retention is not None:
            daemon.retention = daemon._start_retention(config)
        daemon.notifier.ready(daemon.status_line())  # model loaded, database migrated, inbox watched
        return daemon

    def run_until(self, stop: threading.Event, on_step: Callable[[], None] | None = None) -> None:
        try:
            while not stop.is_set():
                result = self.pipeline.step(timeout=0.5)
                self.metrics.step_done(result, self.pipeline.backlog())
                self._upkeep()
                if on_step is not None:
                    on_step()
        finally:
            self.notifier.stopping()
            self.close()

    def status_line(self) -> str:
        return self.metrics.status_line(self.pipeline.backlog(), self.model.model_id)

    def _upkeep(self) -> None:
        """Between two images: reload on request, look for a new model, tell systemd we are alive."""
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload()
        elif self.model_watch.due(time.monotonic()):
            self.check_model()
        self.notifier.watchdog()
        self.notifier.status(self.status_line())

    def close(self) -> None:
        if self.retention is not None:
            self.retention.stop()
        self.watcher.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.notifier.close()
        self.store.engine.dispose()

    # -- live changes ------------------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: apply config.yaml and a changed model, or refuse both and keep running as before."""
        logger.info("reload requested: re-reading {} and checking the model", self.config.source)
        self.notifier.reloading()
        try:
            self._reload()
        finally:
            self.notifier.reloaded(self.status_line())

    def _reload(self) -> None:
        try:
            config = load_config(self.config.source)
        except ConfigError as exc:
            self._refuse(f"configuration not applied: {exc}")
            return
        changed = changed_keys(self.config, config)
        config = live_config(self.config, config)
        model_moved = (config.model.path, config.model.device) != (
            self.config.model.path,
            self.config.model.device,
        )
        model: Model | None = None
        if model_moved:  # the config names another model: unusable means the config is refused
            try:
                model = self._load_model(config, fingerprint(config.model.path))
            except ModelError as exc:
                self._refuse(f"model.path: {exc}")
                return
            if model is None:
                self._refuse("model.path / model.device: that model cannot be used (see above)")
                return
        elif (stamp := self.model_watch.candidate(force=True)) is not None:
            model = self._load_model(config, stamp)  # refused on its own; the config still applies
        if config.log != self.config.log:
            try:
                apply_log_config(config.log)
            except ConfigError as exc:
                apply_log_config(self.config.log)
                self._refuse(str(exc))
                return
        # Nothing below can fail: the new settings go live together.
        if model_moved:
            self.model_watch.retarget(config.model.path)
        if model is not None and (model_moved or model.model_id != self.model.model_id):
            self._swap_model(model, config)
        self.pipeline.threshold = threshold_for(config, self.model)
        self.model.max_pixels = config.limits.max_pixels
        self.metrics.set_model(self.model.model_id, self.model.card.teacher, self.pipeline.threshold)
        self.model_watch.check_seconds = config.model.check_seconds
        if config.watch != self.config.watch:
            self._apply_watch(config)
        if config.retention != self.config.retention:
            self._apply_retention(config)
        self.config = config
        restart = [k for k in changed if needs_restart(k)]
        if restart:
            logger.warning(
                "reload: {} changed; needs restart (systemctl restart inspectd), running values kept",
                ", ".join(restart),
            )
        live = [k for k in changed if not needs_restart(k)]
        logger.info("reload: applied {}", ", ".join(live) if live else "no changed live setting")

    def _refuse(self, why: str) -> None:
        self.metrics.errors.labels("reload_refused").inc()
        logger.error(
            "reload refused: {}; still running with model {} and the previous configuration",
            why,
            self.model.model_id,
        )

    def check_model(self) -> None:
        """Periodic: load an export that changed on disk and has settled; keep the old one if broken."""
        stamp = self.model_watch.candidate()
        if stamp is None:
            return
        model = self._load_model(self.config, stamp)
        if model is None:
            return
        if model.model_id == self.model.model_id:
            logger.debug(
                "model files at {} changed, same IR ({}); keeping it", self.config.model.path, model.model_id
            )
            return
        self._swap_model(model, self.config)

    def _load_model(self, config: Config, stamp: Fingerprint) -> Model | None:
        self.notifier.watchdog()  # compiling a model can take a few seconds
        try:
            model = Model(config.model.path, cache_dir(config), config.model.device, config.limits.max_pixels)
        except (ModelError, OSError) as exc:
            self.model_watch.refused = stamp
            self.metrics.errors.labels("reload_refused").inc()
            logger.error(
                "new model at {} refused: {}; still judging with model {}",
                config.model.path,
                " ".join(str(exc).split()),  # OpenVINO's multi-line text, as one journal line
                self.model.model_id,
            )
            return None
        self.model_watch.loaded = stamp
        return model

    def _swap_model(self, model: Model, config: Config) -> None:
        previous = self.model.model_id
        self.model = model
        self.pipeline.scorer = MeteredScorer(model, self.metrics)
        self.pipeline.threshold = threshold_for(config, model)
        self.metrics.set_model(model.model_id, model.card.teacher, self.pipeline.threshold)
        self.metrics.model_loads.inc()
        logger.info(
            "model {} ({}) now judging, replacing {}; threshold {:.4f}",
            model.model_id,
            model.card.teacher,
            previous,
            self.pipeline.threshold,
        )

    def _apply_watch(self, config: Config) -> None:
        """New watch rules: a fresh watcher (its start-up scan re-finds waiting files); settle is live."""
        self.pipeline.arrivals.settle_s = config.watch.settle_ms / 1000
        if config.watch.model_copy(update={"settle_ms": 0}) == self.config.watch.model_copy(
            update={"settle_ms": 0}
        ):
            return
        self.watcher.stop()
        self.watcher = make_watcher(config)
        self.pipeline.events = self.watcher.events
        self.watcher.start()

    def _start_retention(self, config: Config) -> Retention:
        assert config.retention is not None
        p = config.paths
        retention = Retention(self.store, (p.accepted, p.rejected, p.quarantine), config.retention)
        retention.start()
        return retention

    def _apply_retention(self, config: Config) -> None:
        if config.retention is None:
            if self.retention is not None:
                self.retention.stop()
                self.retention = None
        elif self.retention is None:
            self.retention = self._start_retention(config)
        else:
            self.retention.update(config.retention)


def install_signal_handlers(stop: threading.Event, reload: threading.Event | None = None) -> None:
    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    if reload is not None:

        def request_reload(signum: int, frame: FrameType | None) -> None:
            reload.set()

        signal.signal(signal.SIGHUP, request_reload)


def run(config: Config, stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    reload = threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop, reload)
    daemon = Daemon.start(config, reload_requested=reload)
    daemon.run_until(stop)
    logger.info("stopped cleanly")
    return 0
