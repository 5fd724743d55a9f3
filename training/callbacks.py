"""Lightning callbacks that bound a fit: a wall-clock budget and a resumable checkpoint.

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


class TimeBudget(Callback):
    """Stops training cleanly after ``minutes``; calibration and export then run as usual.

    Lightning runs the held-out validation when ``should_stop`` is set, so the stopped model is
    calibrated on its final weights exactly as a full run would be.
    """

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = minutes * 60.0
        self.clock = clock
        self.started = 0.0
        self.stopped_at: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = self.clock()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.stopped_at is None and self.clock() - self.started >= self.seconds:
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
