"""The fit's own statistics take a bounded sample of the images, not every one (``training.settings``):
the teacher's channel statistics, and the map's quantiles on the held-out good images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.models import EfficientAd

import training.model
from training.model import InspectdEfficientAd
from training.teacher import Teacher

SIZE = 64


def counted(batches: list[SimpleNamespace], taken: list[int]) -> Iterator[SimpleNamespace]:
    for batch in batches:
        taken.append(1)
        yield batch


@pytest.fixture
def module(tmp_path: Path) -> InspectdEfficientAd:
    torch.manual_seed(0)
    return InspectdEfficientAd(Teacher("random(seed=0)", None, 0), tmp_path, "small", SIZE).eval()


def test_the_teachers_statistics_take_the_first_images_of_the_loader(
    module: InspectdEfficientAd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training.model, "TEACHER_STATS_IMAGES", 3)
    batches = [SimpleNamespace(image=torch.rand(1, 3, SIZE, SIZE)) for _ in range(7)]
    taken: list[int] = []
    with torch.no_grad():
        stats = module.teacher_channel_mean_std(counted(batches, taken))
        on_three = EfficientAd.teacher_channel_mean_std(module, batches[:3])  # type: ignore[arg-type]
    assert len(taken) == 3  # the loader is not read past them
    torch.testing.assert_close(stats, on_three)


def test_the_maps_quantiles_stop_at_the_batch_that_brings_enough_good_images(
    module: InspectdEfficientAd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training.model, "MAP_QUANTILE_IMAGES", 3)
    labels = ([0, 1], [1, 1], [0, 0], [0, 0])  # good images: 1, 1, 3 (enough), 5
    batches = [SimpleNamespace(image=torch.rand(2, 3, SIZE, SIZE), gt_label=torch.tensor(g)) for g in labels]
    taken: list[int] = []
    quantiles = module.map_norm_quantiles(counted(batches, taken))
    assert len(taken) == 3
    torch.testing.assert_close(quantiles, EfficientAd.map_norm_quantiles(module, batches[:3]))  # type: ignore[arg-type]
    assert quantiles["qb_st"] > quantiles["qa_st"]
