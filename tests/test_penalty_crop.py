"""--penalty-crop half: the penalty-set image is a random crop half the input side across, at the
scale of anomalib's centre crop, so the student's pass over it costs a fifth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.errors import TrainingError
from training.fit import train
from training.options import TrainOptions
from training.teacher import Teacher

SIDE = 256


def _ramp_set(root: Path) -> Path:
    """One penalty photo whose value grows left to right by 1/255 per pixel, in ImageFolder layout."""
    (root / "natural").mkdir(parents=True)
    ramp = np.tile(np.arange(SIDE, dtype=np.uint8), (SIDE, 1))
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(root / "natural" / "ramp.png")
    return root


def _draw(crop: str, penalty: Path, n: int) -> list[torch.Tensor]:
    from training.model import InspectdEfficientAd

    module = InspectdEfficientAd(
        Teacher("random(seed=0)", None, 0), penalty, "small", SIDE, penalty_crop=crop
    )
    module.prepare_imagenette_data((SIDE, SIDE))
    return [next(iter(module.imagenet_loader))[0] for _ in range(n)]


def _span(image: torch.Tensor) -> float:
    """How much of the photo's width the crop covers (the ramp's range, 0 to 1)."""
    return float(image[0, 0].max() - image[0, 0].min())


def test_half_crop_is_a_random_quarter_of_the_pixels_at_anomalibs_scale(tmp_path: Path) -> None:
    penalty = _ramp_set(tmp_path / "penalty")
    full = _draw("full", penalty, 1)[0]
    assert full.shape == (1, 3, SIDE, SIDE)  # anomalib's: the photo at twice the side, centre crop
    assert _span(full) == pytest.approx(0.5, abs=0.02)

    halves = _draw("half", penalty, 8)
    assert all(h.shape == (1, 3, SIDE // 2, SIDE // 2) for h in halves)
    assert all(_span(h) == pytest.approx(0.25, abs=0.02) for h in halves)  # same scale, half the width
    assert len({round(float(h[0, 0, 0, 0]), 3) for h in halves}) > 1  # taken at random places

    from training.model import StudentTeacherScoring

    student = StudentTeacherScoring().student
    with torch.no_grad():
        assert student(halves[0]).shape[-2:] == (24, 24)  # the student still has positions to penalise


def test_an_unknown_penalty_crop_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="--penalty-crop must be one of half, full"):
        train(TrainOptions(tmp_path / "normal", tmp_path / "out", penalty_crop="quarter"))
