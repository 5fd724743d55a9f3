"""The fit's own statistics take a bounded sample of the images, not every one (``training.settings``):
the teacher's channel statistics, and the map's quantiles and anomalib's validation step on the
held-out good images (``training.validation_sample``)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.data import Folder
from anomalib.models import EfficientAd
from lightning.pytorch import LightningModule, Trainer

import training.model
from training.model import InspectdEfficientAd
from training.synthetic import make_surface_set
from training.teacher import Teacher
from training.validation_sample import ValidationSample, held_out_labels, sample_batches, sample_images

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


def test_the_sample_ends_with_the_batch_that_brings_enough_good_images() -> None:
    assert sample_batches([0] * 100, batch_size=8, wanted=32) == 4
    assert sample_batches([1] * 20 + [0] * 80, batch_size=8, wanted=32) == 7  # defects read first
    assert sample_batches([0, 1, 1, 1, 0, 0], batch_size=2, wanted=3) == 3
    assert sample_batches([0] * 10, batch_size=8, wanted=32) == 2  # fewer: all of them
    assert sample_batches([], batch_size=8, wanted=32) == 0


class CountingModule(LightningModule):
    """Counts the validation loop's batches; trains nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.validated: list[int] = []

    def training_step(self, batch: object, batch_idx: int) -> torch.Tensor:
        return self.weight.sum()

    def validation_step(self, batch: SimpleNamespace, batch_idx: int) -> None:
        self.validated.append(len(batch.gt_label))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightnings_validation_reads_only_the_sample(tmp_path: Path) -> None:
    """A real anomalib datamodule and Lightning loop: the fit's validation and a later ``validate``
    both stop after the sample's batches, the same ones the map's quantiles read."""
    normal, abnormal = make_surface_set(tmp_path / "data", 40, 6, size=32, seed=1)
    data = Folder(
        name="sample",
        normal_dir=normal,
        abnormal_dir=abnormal,
        train_batch_size=1,
        eval_batch_size=2,
        num_workers=0,
        test_split_ratio=0.5,  # 20 good and 6 defective parts held out
        val_split_mode="same_as_test",
        seed=0,
    )
    module = CountingModule()
    sample = ValidationSample(wanted=5)
    trainer = Trainer(
        max_steps=2,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        callbacks=[sample],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    labels = held_out_labels(data)
    assert (labels.count(0), labels.count(1)) == (20, 6)
    batches = sample_batches(labels, 2, wanted=5)
    taken = list(islice(label_batches(data), batches))
    assert sum(chunk.count(0) for chunk in taken) >= 5 > sum(chunk.count(0) for chunk in taken[:-1])
    assert module.validated == [len(chunk) for chunk in taken] and len(module.validated) < 13
    assert sample.images == sum(module.validated) == sample_images(data, wanted=5)
    module.validated.clear()
    trainer.validate(module, datamodule=data)
    assert len(module.validated) == batches


def label_batches(data: Folder) -> Iterator[list[int]]:
    for batch in data.val_dataloader():
        yield [int(label) for label in batch.gt_label]
