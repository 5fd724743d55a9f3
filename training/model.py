"""EfficientAd whose teacher is chosen up front instead of downloaded at fit start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anomalib.models import EfficientAd

from training.score_scale import UnclippedPostProcessor
from training.teacher import Teacher, apply_teacher


class InspectdEfficientAd(EfficientAd):
    """anomalib's EfficientAd, except that the teacher weights are loaded at construction.

    anomalib fetches the teacher inside ``on_train_start``, i.e. after data loading has begun,
    and fails there when offline; loading it here surfaces a bad teacher before any work and
    keeps random teachers out of anomalib's cache. Scores are normalised without clipping
    (``training.score_scale``).
    """

    def __init__(self, teacher: Teacher, imagenet_dir: Path, model_size: str, image_size: int) -> None:
        super().__init__(
            imagenet_dir=imagenet_dir,
            model_size=model_size,
            pre_processor=EfficientAd.configure_pre_processor((image_size, image_size)),
            post_processor=UnclippedPostProcessor(),
        )
        apply_teacher(self.model.teacher, teacher)

    def prepare_pretrained_model(self) -> None:
        """The teacher was set in ``__init__``; anomalib's download must not run."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the teacher as its description: Lightning loads checkpoints with
        ``weights_only=True``, which refuses our ``Teacher`` class (the weights are in the
        state dict anyway)."""
        super().on_save_checkpoint(checkpoint)
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict) and isinstance(hparams.get("teacher"), Teacher):
            checkpoint["hyper_parameters"] = {**hparams, "teacher": hparams["teacher"].source}
