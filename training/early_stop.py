"""Early stopping on held-out image AUROC, for runs that have defective examples to measure with.

EfficientAD's loss keeps falling long after the separation of good from defective parts stops
improving; the held-out AUROC is the number a line engineer cares about. The held-out set is
scored with the torch model in eval mode (anomalib's validation loop would also re-fit the score
normalisation), and the best weights are put back before the final calibration.

Lightning's ``EarlyStopping`` needs the metric logged by a validation loop (anomalib's would
re-fit the map quantiles and the threshold every time) and stops at the last weights, not the
best; keeping the best needs ``ModelCheckpoint(monitor=...)`` and a reload from disk. This one
callback measures, counts patience and restores the best weights from memory.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from training.eval_mode import evaluating
from training.metrics import auroc


class Patience:
    """Tracks the best value and how many evaluations have passed without beating it."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = -math.inf
        self.best_step: int | None = None
        self.waited = 0
        self.history: list[tuple[int, float]] = []

    def update(self, step: int, value: float) -> bool:
        """Record ``value`` at ``step``; True when it is a new best."""
        self.history.append((step, value))
        if value > self.best:
            self.best, self.best_step, self.waited = value, step, 0
            return True
        self.waited += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.waited >= self.patience


class AurocEarlyStopping(Callback):
    """Every ``every`` steps (and at the last step) measure held-out AUROC; stop after
    ``patience`` evaluations without improvement; end with the best weights."""

    def __init__(self, every: int, patience: int) -> None:
        self.every = every
        self.tracker = Patience(patience)
        self.restored_step: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        network: torch.nn.Module = pl_module.model  # type: ignore[assignment]
        step = trainer.global_step
        last = trainer.should_stop or (trainer.max_steps > 0 and step >= trainer.max_steps)
        if step % self.every and not last:
            return
        if self.tracker.update(step, held_out_auroc(trainer, pl_module)):
            self._best_state = copy.deepcopy(network.state_dict())
        if self.tracker.exhausted:
            trainer.should_stop = True
            last = True
        if last and self._best_state is not None and self.tracker.best_step != step:
            network.load_state_dict(self._best_state)
            self.restored_step = self.tracker.best_step

    def summary(self) -> dict[str, Any]:
        """For the model card."""
        return {
            "every": self.every,
            "patience": self.tracker.patience,
            "auroc_by_step": [[step, round(value, 4)] for step, value in self.tracker.history],
            "best_step": self.tracker.best_step,
            "restored_best": self.restored_step is not None,
        }


@torch.no_grad()
def held_out_auroc(trainer: Trainer, pl_module: Any) -> float:
    """Image AUROC of the current weights on the held-out images (normal and abnormal)."""
    network = pl_module.model
    with evaluating(network):
        loader = trainer.datamodule.val_dataloader()  # type: ignore[attr-defined]
        network.quantiles.update(pl_module.map_norm_quantiles(loader))
        normal: list[float] = []
        abnormal: list[float] = []
        for batch in loader:
            images = pl_module.pre_processor(batch.image) if pl_module.pre_processor else batch.image
            scores = network(images.to(pl_module.device)).pred_score.reshape(-1).tolist()
            for score, label in zip(scores, batch.gt_label.reshape(-1).tolist(), strict=True):
                (abnormal if label else normal).append(float(score))
    if not normal or not abnormal:
        return math.nan
    return auroc(normal, abnormal)
