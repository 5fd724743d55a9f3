"""anomalib's validation step on a sample of the held-out images: the batches the map's quantiles
are taken on.

The validation step scores held-out images so that anomalib's post-processor can set the score
scale that goes into the export (the minimum, maximum and threshold its normalisation maps each
raw score with, ``training.score_scale``). That scale only places the scores on (0, 1) and keeps
their order; the threshold the daemon applies is calibrated afterwards on every held-out image,
through the export itself (``training.held_out``). So the step needs no more images than the map's
quantiles take (``MAP_QUANTILE_IMAGES`` good ones): on ELPV poly (138 held out) 32 images instead
of 138, about a minute and a half of a slow CPU's budget that go to training steps instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from lightning.pytorch import Callback, LightningModule, Trainer

from training.settings import MAP_QUANTILE_IMAGES

Batch = TypeVar("Batch")


def until_good_images(batches: Iterable[Batch], wanted: int, good: Callable[[Batch], int]) -> Iterator[Batch]:
    """``batches`` up to and including the one that brings the good images seen (``good`` counts a
    batch's) to ``wanted``: all of them when there are fewer."""
    seen = 0
    for batch in batches:
        yield batch
        seen += good(batch)
        if seen >= wanted:
            return


def sample_batches(labels: Sequence[int], batch_size: int, wanted: int = MAP_QUANTILE_IMAGES) -> int:
    """How many eval batches of ``batch_size`` the sample takes from held-out images labelled
    ``labels`` (0 good, 1 defective) in the order the loader reads them."""
    chunks = (labels[start : start + batch_size] for start in range(0, len(labels), batch_size))
    return sum(1 for _ in until_good_images(chunks, wanted, lambda chunk: chunk.count(0)))


def sample_images(datamodule: Any, wanted: int = MAP_QUANTILE_IMAGES) -> int:
    """How many held-out images of an anomalib datamodule (set up) the sample takes."""
    labels = held_out_labels(datamodule)
    batch_size = datamodule.eval_batch_size
    return min(len(labels), batch_size * sample_batches(labels, batch_size, wanted))


def held_out_labels(datamodule: Any) -> list[int]:
    """The held-out images' labels, in the order anomalib's validation loader reads them."""
    return [int(label) for label in datamodule.val_data.samples.label_index]


class ValidationSample(Callback):
    """Limits Lightning's validation loop to the sample's batches (``limit_val_batches``), set once
    the datamodule has made its split, for the fit's validation and for a later ``validate``."""

    def __init__(self, wanted: int = MAP_QUANTILE_IMAGES) -> None:
        self.wanted = wanted
        self.images = 0  # held-out images the validation step scores, once set up

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        data = trainer.datamodule  # type: ignore[attr-defined]
        labels = held_out_labels(data)
        if labels:
            trainer.limit_val_batches = sample_batches(labels, data.eval_batch_size, self.wanted)
            self.images = sample_images(data, self.wanted)
