"""The long-running process: start-up, the loop that takes turns over the lines, and signals.

Signal handlers only set an event. On SIGTERM/SIGINT the current image is finished (recorded and
moved), then ``run`` returns 0. SIGHUP asks the loop to re-read the config and the models between
two images (``daemon.run.reload``). The loop, not a timer, feeds systemd's watchdog and the health
check, so a loop that hangs is noticed and restarted.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from loguru import logger

from daemon.config import Config, is_loopback
from daemon.db.connect import migrate_when_ready, open_engine
from daemon.db.store import Store
from daemon.run.line import Line
from daemon.run.notify import Notifier
from daemon.run.reload import LiveChanges
from daemon.run.retention import Retention
from daemon.run.startup import check_models, instance_id, prepare_folders
from daemon.web.metrics import Metrics, metrics_routes
from daemon.web.review import ReviewPage
from daemon.web.server import WebServer


class StoppedWhileWaiting(Exception):
    """SIGTERM arrived while the daemon waited for its database at start-up."""


IDLE_WAIT_S = 0.5  # per round when every line is idle, shared among the lines


@dataclass
class Daemon(LiveChanges):
    """Everything ``run`` wires together; kept so tests and the demo can drive it."""

    config: Config
    lines: list[Line]
    store: Store
    metrics: Metrics = field(default_factory=Metrics)
    metrics_server: WebServer | None = None  # the web server: /metrics, /healthz and pages
    retention: Retention | None = None
    notifier: Notifier = field(default_factory=Notifier.from_environment)
    reload_requested: threading.Event = field(default_factory=threading.Event)
    # Set while every line is idle: heatmap overlays wait for it (daemon.judge.heatmaps).
    quiet: threading.Event = field(default_factory=threading.Event)
    _busy: bool = True

    @classmethod
    def start(
        cls,
        config: Config,
        reload_requested: threading.Event | None = None,
        stop: threading.Event | None = None,
    ) -> Daemon:
        """Everything checked, loaded and watching. Raises StoppedWhileWaiting when ``stop`` was
        set while it waited for the database."""
        check_models(config)
        prepare_folders(config)
        engine = open_engine(config.database.url)
        notifier = Notifier.from_environment()
        migrated = migrate_when_ready(engine, stop=stop, status=notifier.waiting)
        if migrated is None:
            raise StoppedWhileWaiting
        before, after = migrated
        if before != after:
            logger.info("database schema upgraded from {} to {}", before or "empty", after)
        metrics = Metrics()
        store = Store(engine, on_record=metrics.row_recorded)
        instance = instance_id(config.paths.state)
        quiet = threading.Event()
        lines = [
            Line(
                line,
                store=store,
                metrics=metrics,
                cache_dir=config.cache_dir,
                max_pixels=config.limits.max_pixels,
                key=config.key(index, "model"),
                instance=instance,
                beat=notifier.watchdog,
                heatmaps=config.outputs.heatmaps,
                drift=config.drift,
                quiet=quiet,
            )
            for index, line in enumerate(config.lines)
        ]
        for line in lines:
            line.pipeline.while_waiting = functools.partial(claim_others, lines, line)
            recovered = line.pipeline.recover()
            if recovered:
                logger.info("line {}: finished {} move(s) interrupted by the last stop", line.name, recovered)
        server = web_server(config, metrics, store, lines)  # bind first: a taken port stops start-up
        for line in lines:
            line.start()
        logger.info(
            "{} line(s) watching as instance {}; database {}",
            len(lines),
            instance,
            engine.url.render_as_string(hide_password=True),
        )
        if server is not None:
            server.start()
            logger.info("web: {0}/metrics, {0}/healthz, {0}/review", server.url)
        daemon = cls(
            config,
            lines,
            store,
            metrics=metrics,
            metrics_server=server,
            notifier=notifier,
            reload_requested=reload_requested or threading.Event(),
            quiet=quiet,
        )
        if config.retention is not None:
            daemon.retention = daemon.start_retention(config)
        daemon.notifier.ready(daemon.status_line())  # models loaded, database migrated, inboxes watched
        return daemon

    def run_until(self, stop: threading.Event, on_step: Callable[[], None] | None = None) -> None:
        try:
            while not stop.is_set():
                self.step_round()
                self._upkeep()
                if on_step is not None:
                    on_step()
        finally:
            self.notifier.stopping()
            self.close()

    def step_round(self) -> None:
        """One step of every line in turn, so a burst on one line never starves another. While
        all are idle each waits a share of ``IDLE_WAIT_S`` for its own events."""
        wait = 0.0 if self._busy else IDLE_WAIT_S / len(self.lines)
        busy = False
        for line in self.lines:
            claim_others(self.lines, line)
            result = line.step(timeout=wait)
            busy = busy or result.outcome != "idle"
            self.metrics.step_done(line.name, result, line.backlog())
        self._busy = busy
        if busy:
            self.quiet.clear()
        else:
            self.quiet.set()

    def backlog(self) -> int:
        return sum(line.backlog() for line in self.lines)

    def status_line(self) -> str:
        return self.metrics.status_line(
            self.backlog(), "; ".join(f"line {line.name}: model {line.model.model_id}" for line in self.lines)
        )

    def _upkeep(self) -> None:
        """Between two images: reload on request, look for new models, tell systemd we are alive."""
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload()
        else:
            now = time.monotonic()
            for line in self.lines:
                if line.model_watch.due(now):
                    line.check_model()
        self.notifier.watchdog()
        self.notifier.status(self.status_line())

    def close(self) -> None:
        if self.retention is not None:
            self.retention.stop()
        for line in self.lines:
            line.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.notifier.close()
        self.store.engine.dispose()


def claim_others(lines: list[Line], line: Line) -> None:
    """Claims are cheap: the other lines' complete files are claimed before and while ``line``
    judges (its pipeline calls this while it waits for a score), so every inbox name is freed at once."""
    for other in lines:
        if other is not line:
            other.pipeline.intake_if_ready()


def web_server(config: Config, metrics: Metrics, store: Store, lines: list[Line]) -> WebServer | None:
    """/metrics, /healthz and /review on ``metrics: {host, port}``, bound but not serving yet."""
    if config.metrics is None:
        return None
    m = config.metrics
    review = ReviewPage(
        store,
        {line.name: line.config.paths.retraining for line in lines if line.config.paths.retraining},
        token=m.token,
        open_without_token=is_loopback(m.host),
    )
    return WebServer(m.host, m.port, {**metrics_routes(metrics, m.stall_seconds), **review.routes()})


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
    try:
        daemon = Daemon.start(config, reload_requested=reload, stop=stop)
    except StoppedWhileWaiting:
        logger.info("stopped while waiting for the database")
        return 0
    daemon.run_until(stop)
    logger.info("stopped cleanly")
    return 0
