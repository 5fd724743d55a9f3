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
from daemon.judge.heatmaps import render
from daemon.run.service import Daemon
from tests.conftest import make_config, write_image


def run_daemon(config_path: Path, images: int, tmp_path: Path) -> list[Inspection]:
    daemon = Daemon.start(load_config(config_path))
    stop = threading.Event()
    loop = threading.Thread(target=daemon.run_until, args=(stop,), name="inspectd-test-loop")
    loop.start()
    try:
        for i in range(images):
            write_image(tmp_path / "inbox" / f"part{i}.png", seed=i, size=96)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with daemon.store.session() as session:
                rows = list(session.scalars(select(Inspection).order_by(Inspection.id)))
            if len(rows) == images and all(r.moved_at for r in rows) and daemon.backlog() == 0:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        loop.join(60)  # a clean stop writes the overlays still queued
    with daemon.store.session() as session:
        return list(session.scalars(select(Inspection).order_by(Inspection.id)))


def test_rejects_get_an_overlay_in_the_heatmaps_folder(tmp_path: Path, tiny_model: Path) -> None:
    config = make_config(tmp_path, tiny_model, model__threshold=0.0)  # every part is a reject
    rows = run_daemon(config, 3, tmp_path)
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
    out = np.asarray(render(pixels, heat), dtype=np.float32) / 255
    hot, cold = out[:16, :16].mean(axis=(0, 1)), out[-16:, -16:].mean(axis=(0, 1))
    assert hot[0] > 0.6 and hot[0] > hot[2]  # red where the part looks wrong
    assert np.allclose(cold, 0.5, atol=0.02)  # untouched where it looks normal
