"""Lightning callbacks that bound a fit: a wall-clock budget, the learning rate's final drop and a
resumable checkpoint.

Why not Lightning's own (read in lightning 2.x, the version anomalib 2.7 installs):
- ``Trainer(max_time=...)`` is the ``Timer`` callback, whose ``load_state_dict`` restores the time
  already spent from the checkpoint: ``--resume`` with the same ``--max-minutes``, which is what
  ``inspectd train`` tells the user to run after a time stop, would stop again after one step.
- ``ModelCheckpoint(save_last=True, every_n_train_steps=N)`` writes ``last.ckpt`` at train end only
  when it has written nothing before (``on_train_end``: ``if self.save_last and not
  self._last_checkpoint_saved``), so a run stopped by the budget between two saves would resume
  from up to N - 1 steps back; ``PeriodicCheckpoint`` always saves the final step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from inspectd.export import LAST_CHECKPOINT

# What follows the last training step, in passes of the frozen teacher over one training image at
# the speed this CPU showed computing the teacher's statistics before the first step. Measured on
# ELPV mono (353 training and 88 held-out images, 2-core AVX2 CPU, 0.19 s per pass): the map scale
# and the held-out validation took 214 s for 288 images (3.9 passes each), the export 39 s (200
# passes), scoring the held-out images through the export about 30 s (1.8 passes each). With 4 and
# 200 a default run kept 236 s and needed 278 s (train() 29.7 minutes against 29), hence 5 and 240;
# with those, mono kept 268 s and took 28.7 minutes, poly (552 training images) 350 s and 28.0.
PASSES_PER_SCORED_IMAGE = 5.0  # map scale and validation: teacher, student, maps, metrics
PASSES_PER_CALIBRATION_IMAGE = 2.0  # the exported model scoring a held-out image
PASSES_FOR_EXPORT = 240.0  # ONNX trace and OpenVINO conversion
MIN_RESERVE_S = 60.0


def after_training_seconds(pass_s: float, scored_images: int, held_out_images: int) -> float:
    """How long the map scale, validation, export and calibration will take: ``scored_images``
    (map scale plus held-out validation) and ``held_out_images`` at ``pass_s`` per teacher pass."""
    passes = (
        PASSES_PER_SCORED_IMAGE * scored_images
        + PASSES_PER_CALIBRATION_IMAGE * held_out_images
        + PASSES_FOR_EXPORT
    )
    return max(MIN_RESERVE_S, pass_s * passes)


class TimeBudget(Callback):
    """Stops training cleanly so that the run ends within ``minutes`` of ``since`` (the command's
    start; training's start when None); calibration and export then run as usual.

    What comes after training is kept free of the budget (``reserve_s``): it is estimated from how
    long anomalib's teacher statistics, which run between ``on_train_start`` and the first step,
    took per training image (``after_training_seconds``). On a 2-core AVX2 CPU it is about five
    minutes (ELPV), on an AVX-512/AMX one about one. Lightning runs the held-out validation when
    ``should_stop`` is set, so the stopped model is calibrated on its final weights exactly as a full
    run would be.
    """

    def __init__(
        self,
        minutes: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        since: float | None = None,
        scale_images: int = 0,
    ) -> None:
        self.seconds = minutes * 60.0
        self.clock = clock
        self.since = since
        self.scale_images = scale_images  # training images the map scale will be measured on
        self.started = 0.0  # training's start
        self.reserve_s = 0.0
        self._statistics_from: float | None = None
        self.stopped_at: int | None = None

    @property
    def deadline(self) -> float:
        """When training must stop, on ``clock``."""
        return (self.started if self.since is None else self.since) + self.seconds - self.reserve_s

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = self._statistics_from = self.clock()

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._statistics_from is None:
            return
        statistics_s, self._statistics_from = self.clock() - self._statistics_from, None
        data = trainer.datamodule  # type: ignore[attr-defined]
        train_images, held_out = len(data.train_data), len(data.val_data)
        scored = min(self.scale_images, train_images) + held_out
        estimate = after_training_seconds(statistics_s / max(train_images, 1), scored, held_out)
        self.reserve_s = max(self.reserve_s, estimate)  # a resumed run skips the statistics: keep its own

    def state_dict(self) -> dict[str, Any]:
        """The reserve travels in the checkpoint (the time already spent does not: see above)."""
        return {"reserve_s": self.reserve_s}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reserve_s = float(state_dict.get("reserve_s", 0.0))

    def left(self) -> float:
        """Seconds of training left."""
        return self.deadline - self.clock()

    def spent(self, share: float = 1.0) -> bool:
        """Whether ``share`` of training's time (from its start to the deadline) has passed."""
        return self.clock() - self.started >= share * (self.deadline - self.started)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.stopped_at is None and self.spent():
            trainer.should_stop = True
            self.stopped_at = trainer.global_step


class PeriodicCheckpoint(Callback):
    """Writes ``folder/last.ckpt`` every ``every`` steps and when training ends.

    One file, replaced atomically: an interrupted write never spoils the previous checkpoint,
    and ``--resume`` always knows which file to continue from.
    """

    def __init__(self, folder: Path, every: int) -> None:
        self.folder = folder
        self.every = every

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.every > 0 and trainer.global_step % self.every == 0:
            self.save(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.save(trainer)

    def save(self, trainer: Trainer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / (LAST_CHECKPOINT + ".tmp")
        trainer.save_checkpoint(tmp)
        tmp.replace(self.folder / LAST_CHECKPOINT)


DECAY_AT = 0.95  # EfficientAD (paper and anomalib): the rate drops tenfold for the last 5 % of training
DECAY_FACTOR = 0.1


class FinalDecay(Callback):
    """Drops the learning rate tenfold for the last 5 % of the run, as EfficientAD prescribes.

    anomalib means to (``StepLR(step_size=0.95 * max_steps)``) but returns the scheduler without
    ``interval: step``, so Lightning steps it once per epoch and the drop never comes (in anomalib
    2.7 a 353-image run would need 665 epochs for a 700-step fit); ``InspectdEfficientAd`` keeps
    anomalib's Adam and leaves that scheduler out. Here the drop comes at 95 % of ``max_steps`` or
    of the time budget, whichever ends the run first. It is made once per model: the checkpoint
    keeps the lowered rate and this callback's state, so ``--resume`` never drops it twice.
    """

    def __init__(self, max_steps: int, budget: TimeBudget | None = None) -> None:
        self.max_steps = max_steps
        self.budget = budget
        self.dropped_at: int | None = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.dropped_at is None and self._late(trainer.global_step):
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] *= DECAY_FACTOR
            self.dropped_at = trainer.global_step

    def _late(self, step: int) -> bool:
        return step >= DECAY_AT * self.max_steps or (self.budget is not None and self.budget.spent(DECAY_AT))

    def state_dict(self) -> dict[str, Any]:
        return {"dropped_at": self.dropped_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.dropped_at = state_dict.get("dropped_at")
