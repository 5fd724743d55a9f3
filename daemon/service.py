"""The long-running process: start-up checks, threads, signals, and the loop around Pipeline.step.

Signal handlers only set an event. On SIGTERM/SIGINT the current image is finished (recorded and
moved), then ``run`` returns 0.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from loguru import logger

from daemon.arrivals import Arrivals
from daemon.config import Config
from daemon.errors import ConfigError, InspectdError, ModelError
from daemon.files import same_filesystem
from daemon.inference import Model
from daemon.migrate import upgrade
from daemon.model_card import locate_xml
from daemon.pipeline import Destinations, Pipeline
from daemon.store import Store, make_engine
from daemon.watcher import InboxWatcher


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


@dataclass
class Daemon:
    """Everything ``run`` wires together; kept so tests and the demo can drive it."""

    config: Config
    pipeline: Pipeline
    watcher: InboxWatcher
    store: Store
    model: Model

    @classmethod
    def start(cls, config: Config) -> Daemon:
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
        store = Store(engine)
        try:
            model = Model(
                config.model.path,
                config.paths.state / "openvino_cache",
                config.model.device,
                config.limits.max_pixels,
            )
        except ModelError as exc:
            raise ConfigError(f"model: {exc}") from None
        threshold = config.model.threshold if config.model.threshold is not None else model.card.threshold
        watcher = InboxWatcher(
            config.paths.inbox,
            extensions=config.watch.extensions,
            ignore=config.watch.ignore,
            rescan_seconds=config.watch.rescan_seconds,
            observer=config.watch.observer,
            recursive=config.watch.recursive,
        )
        pipeline = Pipeline(
            events=watcher.events,
            arrivals=Arrivals(config.watch.settle_ms / 1000, expect_close=watcher.reports_close),
            scorer=model,
            store=store,
            destinations=Destinations(config.paths.accepted, config.paths.rejected, config.paths.quarantine),
            threshold=threshold,
            inbox=config.paths.inbox,
        )
        recovered = pipeline.recover()
        if recovered:
            logger.info("finished {} move(s) interrupted by the last stop", recovered)
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
        return cls(config, pipeline, watcher, store, model)

    def run_until(self, stop: threading.Event, on_step: Callable[[], None] | None = None) -> None:
        try:
            while not stop.is_set():
                self.pipeline.step(timeout=0.5)
                if on_step is not None:
                    on_step()
        finally:
            self.close()

    def close(self) -> None:
        self.watcher.stop()
        self.store.engine.dispose()


def install_signal_handlers(stop: threading.Event) -> None:
    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def run(config: Config, stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop)
    daemon = Daemon.start(config)
    daemon.run_until(stop)
    logger.info("stopped cleanly")
    return 0
