"""Heatmaps: a real daemon (in-process, real watchdog, real model, real SQLite) writes an overlay
for each reject into paths.heatmaps and records it in heatmap_path; accepted/ and rejected/ hold
only the captures."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from daemon.config import load_config
from daemon.db.models import Inspection
from daemon.judge.heatmaps import HeatmapWriter, Overlay, render, to_bytes
from tests.conftest import daemon_running, make_config, rows_of, wait_until, write_image


def run_daemon(
    config_path: Path, images: int, tmp_path: Path, overlays_by: float | None = None
) -> list[Inspection]:
    """Judge ``images`` parts; with ``overlays_by``, every row must also have its overlay that many
    seconds after the backlog is done, before the daemon stops (a stop writes what is queued)."""
    with daemon_running(load_config(config_path)) as daemon:
        for i in range(images):
            write_image(tmp_path / "inbox" / f"part{i}.png", seed=i, size=96)
        wait_until(lambda: all_filed(rows_of(daemon), images) and daemon.backlog() == 0, 120)
        if overlays_by is not None:  # the lines are idle: the overlays need not wait any more
            assert daemon.quiet.wait(overlays_by)
            assert wait_until(lambda: all(r.heatmap_path for r in rows_of(daemon)), overlays_by)
        store = daemon.store
    with store.session() as session:
        return list(session.scalars(select(Inspection).order_by(Inspection.id)))


def all_filed(rows: list[Inspection], count: int) -> bool:
    return len(rows) == count and all(r.moved_at for r in rows)


def test_rejects_get_an_overlay_in_the_heatmaps_folder(tmp_path: Path, tiny_model: Path) -> None:
    config = make_config(tmp_path, tiny_model, model__threshold=0.0)  # every part is a reject
    rows = run_daemon(config, 3, tmp_path, overlays_by=3.0)  # well before MAX_DEFER_S
    assert [r.status for r in rows] == ["rejected"] * 3
    for row in rows:
        assert row.heatmap_path is not None
        overlay = Path(row.heatmap_path)
        assert (
            overlay.parent == tmp_path / "heatmaps"
            and overlay.name == f"{row.id}-{Path(row.filename).stem}.png"
        )
        with Image.open(overlay) as image:
            assert image.size == (96, 96) and image.mode == "RGB"
    assert sorted(p.name for p in (tmp_path / "rejected").iterdir()) == [
        "part0.png",
        "part1.png",
        "part2.png",
    ]
    assert not [p for p in (tmp_path / "heatmaps").iterdir() if p.name.startswith(".")]  # no temp left


def test_accepted_parts_get_none_unless_all_and_off_writes_nothing(tmp_path: Path, tiny_model: Path) -> None:
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
    accepted_only = make_config(tmp_path / "a", tiny_model, model__threshold=1.0)
    rows = run_daemon(accepted_only, 2, tmp_path / "a")
    assert {r.status for r in rows} == {"accepted"} and {r.heatmap_path for r in rows} == {None}
    every = make_config(tmp_path / "b", tiny_model, model__threshold=1.0, outputs__heatmaps="all")
    rows = run_daemon(every, 2, tmp_path / "b")
    assert all(r.heatmap_path and Path(r.heatmap_path).is_file() for r in rows)
    off = make_config(tmp_path / "c", tiny_model, model__threshold=0.0, outputs__heatmaps="off")
    rows = run_daemon(off, 2, tmp_path / "c")
    assert {r.heatmap_path for r in rows} == {None} and not (tmp_path / "c" / "heatmaps").exists()


def test_overlay_is_red_where_the_map_is_high() -> None:
    pixels = np.full((64, 64, 3), 0.5, dtype=np.float32)
    heat = np.zeros((16, 16), dtype=np.float32)
    heat[:8, :8] = 1.0
    out = np.asarray(render(to_bytes(pixels), to_bytes(heat)), dtype=np.float32) / 255
    hot, cold = out[:16, :16].mean(axis=(0, 1)), out[-16:, -16:].mean(axis=(0, 1))
    assert hot[0] > 0.6 and hot[0] > hot[2]  # red where the part looks wrong
    assert np.allclose(cold, 0.5, atol=0.02)  # untouched where it looks normal


def overlay(tmp_path: Path, row_id: int, size: int = 32) -> Overlay:
    pixels, heat = np.full((size, size, 3), 0.5, np.float32), np.ones((size, size), np.float32)
    return Overlay.of(row_id, "default", tmp_path / f"{row_id}-part.png", pixels, heat)


class Recorded:
    def __init__(self) -> None:
        self.rows: list[int] = []

    def __call__(self, row_id: int, path: Path) -> None:
        assert path.is_file()  # recorded only once the PNG is in place
        self.rows.append(row_id)


def test_overlays_wait_while_the_lines_judge_and_are_written_once_they_pause(tmp_path: Path) -> None:
    quiet, recorded = threading.Event(), Recorded()
    writer = HeatmapWriter(recorded, quiet, max_defer_s=60.0)
    writer.start()
    try:
        assert writer.submit(overlay(tmp_path, 1)) and writer.submit(overlay(tmp_path, 2))
        time.sleep(0.6)  # the lines are busy: nothing drawn yet
        assert recorded.rows == [] and not list(tmp_path.glob("*.png"))
        quiet.set()
        assert wait_until(lambda: recorded.rows == [1, 2])
        with Image.open(tmp_path / "1-part.png") as image:
            red, green, blue = image.getpixel((0, 0))
            assert image.size == (32, 32) and red > 150 > green >= blue  # the map is 1: red
    finally:
        writer.stop()


def test_a_busy_spell_delays_an_overlay_at_most_max_defer_s(tmp_path: Path) -> None:
    recorded = Recorded()
    writer = HeatmapWriter(recorded, threading.Event(), max_defer_s=0.3)  # never quiet
    writer.start()
    try:
        writer.submit(overlay(tmp_path, 1))
        assert wait_until(lambda: recorded.rows == [1], timeout=5.0)
    finally:
        writer.stop()


def test_more_than_half_a_budget_waiting_is_written_without_a_pause_and_a_full_one_skips(
    tmp_path: Path,
) -> None:
    one = overlay(tmp_path, 0).nbytes
    quiet, recorded = threading.Event(), Recorded()
    writer = HeatmapWriter(recorded, quiet, budget_bytes=2 * one, max_defer_s=60.0)
    assert writer.submit(overlay(tmp_path, 1)) and writer.submit(overlay(tmp_path, 2))
    assert not writer.submit(overlay(tmp_path, 3)) and writer.skipped == 1  # over the budget
    writer.start()
    try:
        assert wait_until(lambda: recorded.rows == [1], timeout=5.0)  # more than half was waiting
        time.sleep(0.6)
        assert recorded.rows == [1]  # half is left: it waits for a pause
        assert writer.submit(overlay(tmp_path, 4))  # more than half again
        assert wait_until(lambda: recorded.rows == [1, 2], timeout=5.0)
        time.sleep(0.6)
        assert recorded.rows == [1, 2]
    finally:
        writer.stop()  # a stop writes what is queued at once
    assert recorded.rows == [1, 2, 4] and not (tmp_path / "3-part.png").exists()
