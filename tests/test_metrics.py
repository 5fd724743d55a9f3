"""Metrics and health over real HTTP from a running Daemon (real model, watcher, SQLite), compared
with what the database holds."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from daemon.config import Config
from daemon.db.models import Inspection
from daemon.run.service import Daemon
from daemon.web.metrics import Metrics
from inspectd.scorer import Score
from tests.conftest import daemon_running, write_image

pytestmark = pytest.mark.timeout(180)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = get(url + "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def running(config_for: Callable[..., Config]) -> Iterator[Daemon]:
    config = config_for(metrics__port=0, metrics__stall_seconds=2, watch__settle_ms=100)
    with daemon_running(config, join_s=30.0) as daemon:
        yield daemon


LINE = (("line", "default"),)


def db_counts(daemon: Daemon) -> dict[str, int]:
    with daemon.store.session() as s:
        return dict(s.execute(select(Inspection.status, func.count()).group_by(Inspection.status)).all())  # type: ignore[arg-type]


def test_scraped_metrics_match_the_database(running: Daemon, tmp_path: Path) -> None:
    daemon = running
    assert daemon.metrics_server is not None
    url = daemon.metrics_server.url
    inbox = daemon.config.paths.inbox
    for i in range(3):
        write_image(inbox / f"ok{i}.png", seed=i)
    (inbox / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a truncated upload
    wait_until(lambda: daemon.store.count() == 4 and daemon.lines[0].pipeline.backlog() == 0, 90, "4 rows")
    time.sleep(0.6)  # one more loop round updates the backlog gauge

    m = scrape(url)
    counts = db_counts(daemon)
    for status in ("accepted", "rejected", "quarantined"):
        assert m[("inspectd_images_total", (("line", "default"), ("status", status)))] == counts.get(
            status, 0
        )
    assert counts.get("quarantined") == 1
    assert m[("inspectd_errors_total", (("kind", "unreadable_image"), ("line", "default")))] == 1
    assert m[("inspectd_inference_seconds_count", LINE)] == 3  # the torn file never reached the model
    assert m[("inspectd_end_to_end_seconds_count", LINE)] == 4
    with daemon.store.session() as s:
        inference_ms = s.scalar(select(func.sum(Inspection.inference_ms)))
    assert m[("inspectd_inference_seconds_sum", LINE)] == pytest.approx(inference_ms / 1000, rel=1e-6)
    assert m[("inspectd_inbox_backlog", LINE)] == 0
    assert time.time() - 60 < m[("inspectd_last_success_timestamp_seconds", LINE)] <= time.time()
    info = [k for k in m if k[0] == "inspectd_model_info"]
    assert info and ("model_id", daemon.lines[0].model.model_id) in info[0][1]
    assert get(url + "/healthz") == (200, "ok\n")
    assert get(url + "/nothing")[0] == 404


class Hang:
    """A model call that never returns on its own: what a wedged driver or a dead NFS read looks like."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.release = threading.Event()

    def score(self, path: Path) -> Score:
        self.release.wait(30)
        return Score(score=0.0, inference_ms=1.0, decode_ms=0.0)


def test_healthz_fails_while_the_loop_is_stuck_and_recovers(running: Daemon) -> None:
    daemon = running
    assert daemon.metrics_server is not None
    url = daemon.metrics_server.url
    wait_until(lambda: get(url + "/healthz")[0] == 200, 10, "healthy")
    hang = Hang(daemon.lines[0].model.model_id)
    daemon.lines[0].pipeline.scorer = hang
    write_image(daemon.config.paths.inbox / "stuck.png", seed=5)
    try:
        wait_until(lambda: get(url + "/healthz")[0] == 503, 20, "503 while stuck")
        assert "stalled" in get(url + "/healthz")[1]
    finally:
        hang.release.set()
    wait_until(lambda: get(url + "/healthz")[0] == 200, 10, "healthy again")


def test_each_daemon_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.add_line("default")
    b.add_line("default")
    a.images.labels("default", "accepted").inc()
    labels = {"line": "default", "status": "accepted"}
    assert b.registry.get_sample_value("inspectd_images_total", labels) == 0
    assert a.registry.get_sample_value("inspectd_images_total", labels) == 1


def test_a_taken_port_is_a_start_up_error(config_for: Callable[..., Config]) -> None:
    import socket

    from daemon.errors import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics: cannot listen on 127.0.0.1:{port}"):
            Daemon.start(config_for(metrics__port=port))
