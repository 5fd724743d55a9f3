"""``inspectd bench`` on the tiny model with few images: the promised keys, and sane ratios."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from daemon.bench import (
    BenchResult,
    backlog_batch_for,
    backlog_streams_for,
    drain_rate,
    frame_size,
    overlay_lag,
    settled,
    wait_settled,
)
from daemon.cli import main
from daemon.db.engine import make_engine
from daemon.db.migrate import upgrade
from daemon.db.models import Inspection
from daemon.db.store import Store

KEYS = {
    "seed_loop_ips",
    "raw_ips",
    "raw_config",
    "daemon_ips",
    "overhead_ms_per_image",
    "latency_p50_ms",
    "latency_p95_ms",
    "peak_rss_mb",
}


@pytest.mark.timeout(600)
def test_bench_json_has_the_figures_and_the_daemon_is_not_faster_than_raw(
    tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --baseline: the seed loop on a second export (here the same one), for the INT8-against-FP ratio
    args = ["bench", "--model", str(tiny_model), "--baseline", str(tiny_model), "--images", "12"]
    args += ["--rounds", "2", "--json"]
    assert main(args) == 0
    figures = json.loads(capsys.readouterr().out)
    assert set(figures) >= KEYS
    for key in KEYS - {"raw_config", "overhead_ms_per_image"}:
        assert figures[key] > 0, key
    # the daemon runs the same IR plus hashing, decoding, commits and moves: never beyond the raw ceiling
    assert figures["daemon_ips"] <= figures["raw_ips"] * 1.1, figures
    assert figures["latency_p95_ms"] >= figures["latency_p50_ms"]
    # every low-rate row recorded its inference, and it is part of the latency measured around it
    assert 0 < figures["daemon_inference_p50_ms"] <= figures["latency_p50_ms"]
    assert {"precision", "hint"} <= set(figures["raw_config"])
    # the daemon batched a backlog as the chosen raw configuration did
    assert figures["daemon_backlog_batch"] == backlog_batch_for(figures["raw_config"])
    # ... and on THROUGHPUT streams only when raw's pick ran on them (else the daemon could outrun it)
    assert figures["daemon_backlog_streams"] == (figures["raw_config"]["hint"] == "THROUGHPUT")
    # raw_ips is the chosen configuration timed again around the daemon's drain, not the screen's best
    assert figures["raw_screen_ips"] > 0
    # two drains of fresh copies, each set against the raw timings on either side of it
    assert len(figures["round_ratios"]) == 2
    assert all(ratio > 0 for ratio in figures["round_ratios"])
    assert figures["baseline_seed_loop_ips"] > 0
    # the stricter figure counts from the landing: the wait for the first verdict is in it
    assert figures["daemon_ips_from_landing"] > 0
    assert figures["first_decision_ms"] > 0
    assert figures["ratios"]["daemon_over_baseline_seed_loop"] > 0
    # overlays wait for a pause in judging: counted per drain, the last written after the last verdict
    assert figures["overlays_per_drain"] >= 0
    assert figures["overlays_done_ms"] is None or figures["overlays_done_ms"] > 0


def judged(stem: str, status: str, decided_at: dt.datetime) -> Inspection:
    """A row as the daemon commits it for ``<stem>.png``, filed under ``/<status>/``."""
    return Inspection(
        filename=f"{stem}.png",
        source_path=f"/in/{stem}.png",
        final_path=f"/{status}/{stem}.png",
        status=status,
        score=0.9 if status == "rejected" else 0.1,
        threshold=0.5,
        model_id="m",
        received_at=decided_at,
        decided_at=decided_at,
    )


def test_a_drains_overlays_are_counted_and_timed_from_its_last_verdict(tmp_path: Path) -> None:
    """Overlays wait for a pause in judging, so the bench shows their cost after a drain's verdicts."""
    db = tmp_path / "bench.db"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    store = Store(engine)
    t0 = dt.datetime(2026, 12, 6, 5, 0, tzinfo=dt.timezone.utc)
    (tmp_path / "heatmaps").mkdir()
    drains = (("r0", 0.0, 0.2), ("r0", 1.0, None), ("r0", 1.5, 0.75), ("r1", 9.0, None))
    for i, (prefix, decided_s, overlay_after_s) in enumerate(drains):
        row = store.record(judged(f"{prefix}-frame{i:04d}", "rejected", t0 + dt.timedelta(seconds=decided_s)))
        if overlay_after_s is not None:  # written that long after the drain's last verdict (1.5 s)
            overlay = tmp_path / "heatmaps" / f"{row.id}-{prefix}.png"
            overlay.write_bytes(b"png")
            written = t0.timestamp() + 1.5 + overlay_after_s
            os.utime(overlay, (written, written))
            store.set_heatmap(row.id, overlay.relative_to(tmp_path))
        elif prefix == "r1":  # recorded, but the file is gone (a user cleared the folder)
            store.set_heatmap(row.id, Path("heatmaps/gone.png"))
    assert overlay_lag(db, "r0", tmp_path) == {"overlays": 2, "overlays_done_ms": 750.0}
    assert overlay_lag(db, "r1", tmp_path) == {"overlays": 0, "overlays_done_ms": None}
    assert overlay_lag(db, "r2", tmp_path) == {}
    engine.dispose()


def _result(**changes: object) -> BenchResult:
    figures: dict[str, object] = {
        "images": 10,
        "image_size": (256, 256),
        "seed_loop_ips": 2.0,
        "raw_ips": 4.0,
        "raw_config": {},
        "raw_screen_ips": 4.4,
        "daemon_ips": 3.0,
        "overhead_ms_per_image": 83.3,
        "latency_p50_ms": 300.0,
        "latency_p95_ms": 320.0,
        "inference_ms": 250.0,
        "daemon_inference_p50_ms": 260.0,
        "peak_rss_mb": 500.0,
        "cpu": "test CPU",
        "daemon_ips_from_landing": 2.0,
    }
    return BenchResult(**{**figures, **changes})  # type: ignore[arg-type]


def test_the_daemon_is_benched_with_the_raw_configurations_batch_on_its_streams() -> None:
    throughput = {"precision": "bf16", "hint": "THROUGHPUT", "mode": "async"}
    assert backlog_batch_for({**throughput, "batch": 2}) == 2
    assert backlog_batch_for({**throughput, "batch": 1}) == 1
    # raw's synchronous LATENCY batch has no daemon counterpart: an image alone is never batched
    assert backlog_batch_for({"precision": "f32", "hint": "LATENCY", "mode": "sync", "batch": 2}) == 1
    assert backlog_streams_for({**throughput, "batch": 1}) is True
    assert backlog_streams_for({"precision": "f32", "hint": "LATENCY", "mode": "sync", "batch": 1}) is False


def test_the_goal_ratios_are_defined_once_on_the_result() -> None:
    ratios = _result().ratios()
    assert ratios == {
        "daemon_over_raw": 0.75,
        "daemon_from_landing_over_raw": 0.5,
        "daemon_over_seed_loop": 1.5,
        "overhead_ms_per_image": 83.3,
        "idle_latency_over_raw_inference_ms": 50.0,
        "idle_latency_over_daemon_inference_ms": 40.0,
    }
    # the INT8-against-FP ratio exists only when a baseline export was timed
    assert _result(baseline_seed_loop_ips=1.5).ratios()["daemon_over_baseline_seed_loop"] == 2.0
    assert json.loads(_result().to_json())["ratios"] == ratios


def test_a_drain_is_timed_from_its_first_decision_to_the_last_without_crediting_a_batch() -> None:
    start = dt.datetime(2026, 12, 6, tzinfo=dt.timezone.utc)

    def at(*seconds: float) -> list[dt.datetime]:
        return [start + dt.timedelta(seconds=s) for s in seconds]

    # one image at a time, one verdict every 0.5 s: 2 images/s over the four intervals
    assert drain_rate(at(0, 0.5, 1.0, 1.5, 2.0), batch=1) == pytest.approx(2.0)
    # batches of two, decided together every second: still 2 images/s, not 5 / 2 s
    assert drain_rate(at(0, 0.001, 1.0, 1.001, 2.0, 2.001), batch=2) == pytest.approx(4 / 2.001)
    # nothing after the first batch, or no span: no figure (the bench falls back to the landing)
    assert drain_rate(at(0, 0.001), batch=2) is None
    assert drain_rate(at(1.0, 1.0), batch=1) is None
    assert drain_rate([], batch=1) is None


def test_after_a_drain_the_raw_timing_waits_for_the_last_moves_and_overlays(tmp_path: Path) -> None:
    """The daemon's work after its last verdict (moves, their marks, rejected parts' overlay PNGs)
    must not share the CPU with the raw timing that follows a drain."""
    db, heatmaps = tmp_path / "bench.db", tmp_path / "heatmaps"
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    store = Store(engine)
    now = dt.datetime.now(dt.timezone.utc)
    rows = [store.record(judged(status, status, now)) for status in ("accepted", "rejected")]
    assert not settled(db, heatmaps)  # moves not marked yet
    for row in rows:
        store.mark_moved(row.id, now)
    assert not settled(db, heatmaps)  # the rejected part's overlay is still being written
    heatmaps.mkdir()
    (heatmaps / ".2-rejected.png.tmp").write_bytes(b"partial")
    assert not wait_settled(db, heatmaps, timeout=0.2)  # bounded: a dropped overlay never comes
    (heatmaps / "2-rejected.png").write_bytes(b"png")
    assert settled(db, heatmaps) and wait_settled(db, heatmaps, timeout=0.2)
    engine.dispose()


def test_frame_sizes_are_read_as_width_by_height(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert frame_size("1280x1024") == (1280, 1024) and frame_size("256X256") == (256, 256)
    for text in ("1280", "12x", "axb", "1x2x3"):
        with pytest.raises(ValueError, match="use WIDTHxHEIGHT"):
            frame_size(text)
    assert main(["bench", "--model", str(tmp_path), "--size", "12x"]) == 1
    assert "--size '12x': use WIDTHxHEIGHT, e.g. 1280x1024" in capsys.readouterr().err
