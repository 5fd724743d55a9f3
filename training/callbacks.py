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

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from inspectd.export import LAST_CHECKPOINT
from training.eval_mode import evaluating
from training.settings import MAP_QUANTILE_IMAGES
from training.validation_sample import sample_images

# What follows the last training step, in eval passes of the whole model (teacher, student and
# maps on one image, no gradients) timed on this CPU at the first training step. The counts were
# fitted on ELPV mono (353 training images, 88 held out, map scale on 200 of them; 2-core AVX2 EPYC):
# an eval pass took 0.40 s, the work after the last step 278 s, i.e. 697 passes where these counts
# give 689 (the map scale's and validation's data loading and metrics, the export's ONNX trace
# and OpenVINO conversion, the calibration through the IR all in it; a first guess of 1, 2, 0.6 and
# 100 kept 242 s there, and that --max-minutes 10 run ended at 10.6). The estimate used to count
# passes of the teacher alone, timed on its statistics before the first step; but the teacher's
# share of the model differs from CPU to CPU, so that proxy kept 268 s for 278 s of work on one
# AVX2 EPYC and 647 s for 324 s on another, which stopped training 5.4 minutes early: that run
# ended at 23.6 of its 29 minutes, with 586 steps.
# Two default ELPV runs of a later session (same kind of CPU) needed 0.73 (mono) and 0.69 (poly)
# of the passes counted: the estimate errs on the safe side, by 1.5-2.5 minutes there. Two of the
# next session (same kind of CPU, slower that day, the student now in the contiguous order it
# measured faster) needed 1.01 (mono) and 1.17 (poly) times the reserve that a margin of 1.15 kept:
# the poly run's train() took 30.4 minutes of its 29. The margin is now 1.4, above the 1.34 times
# the counted passes that poly run needed; on a day like the earlier one a run then ends about 4.5-5
# minutes early instead of about 3.
# Since the map's quantiles and the validation step take a sample of the held-out images
# (training.validation_sample), the 2.6 passes per held-out image first fitted for the two together
# are counted half for each, on the sample, as the map scale's 1.3 per image.
SCALE_PASSES = 1.3  # per training image the map scale is measured on
QUANTILE_PASSES = 1.3  # per held-out image of the sample: anomalib's map quantiles
VALIDATION_PASSES = 1.3  # per held-out image of the sample: the validation step
CALIBRATION_PASSES = 0.8  # per held-out image, all of them: the exported IR scores it for the threshold
EXPORT_PASSES = 130.0  # ONNX trace and OpenVINO conversion
MARGIN = 1.4  # the spread of a shared CPU from run to run and day to day: 0.69-1.34 measured
MIN_RESERVE_S = 60.0
# The reserve used to rest on one eval pass, timed at the first step, for the whole run: one odd
# timing, or a CPU that slowed down later (a shared CPU drifts during a run: one run of the
# twenty-third session took 1.53 to 1.76 s per step), moved it all. The first estimate now takes
# the median of three passes, and one more pass is timed every minute of training (0.6 s of 60 on
# a slow AVX2 CPU); the reserve follows the median of the latest five. Two poly runs of the
# twenty-fourth session (0.61-0.63 s per pass) needed 1.02-1.03 times the passes counted, so the
# 1.4 margin left them 2-3 minutes; with the validation step on the sample, poly and mono runs of
# the twenty-fifth needed 0.89 and 0.99 times and ended 2.3 and 1.4 minutes inside the budget.
FIRST_PASSES = 3
RETIME_EVERY_S = 60.0
RECENT_PASSES = 5


def after_training_seconds(
    pass_s: float, scored_images: int, sampled_images: int, held_out_images: int
) -> float:
    """How long the map scale, validation, export and calibration will take, at ``pass_s`` seconds
    per eval pass of the model: the map scale on ``scored_images`` training images, the map's
    quantiles and the validation step on the ``sampled_images`` of the held-out images
    (``training.validation_sample``), calibration on all ``held_out_images``."""
    passes = (
        SCALE_PASSES * scored_images
        + (QUANTILE_PASSES + VALIDATION_PASSES) * sampled_images
        + CALIBRATION_PASSES * held_out_images
        + EXPORT_PASSES
    )
    return max(MIN_RESERVE_S, MARGIN * pass_s * passes)


def eval_pass_seconds(
    trainer: Trainer, module: Any, batch: Any, repeats: int = 1, *, warm_up: bool = True
) -> list[float]:
    """Seconds one image takes through the whole model in eval mode without gradients, as the map
    scale and validation run it (same precision), for each of ``repeats`` passes; with ``warm_up``
    an untimed pass first builds oneDNN's kernels."""
    resize = module.pre_processor if module.pre_processor is not None else (lambda x: x)
    image = resize(batch.image[:1]).to(module.device)
    timings: list[float] = []
    with torch.no_grad(), evaluating(module.model), trainer.precision_plugin.forward_context():
        if warm_up:
            module.model(image)
        for _ in range(repeats):
            started = time.perf_counter()
            module.model(image)
            timings.append(time.perf_counter() - started)
    return timings


class EvalTimer(Protocol):
    """How ``TimeBudget`` times eval passes (``eval_pass_seconds``; tests pass a stand-in)."""

    def __call__(
        self, trainer: Trainer, module: Any, batch: Any, repeats: int = 1, *, warm_up: bool = True
    ) -> list[float]: ...


class TimeBudget(Callback):
    """Stops training cleanly so that the run ends within ``minutes`` of ``since`` (the command's
    start; training's start when None); calibration and export then run as usual.

    What comes after training is kept free of the budget (``reserve_s``): it is estimated from how
    long one image takes through the whole model in eval mode (``eval_pass_seconds``,
    ``after_training_seconds``), timed a few times at the first training step and once more every
    minute of training, from the median of the latest timings. On a 2-core AVX2 CPU it is about six
    to eight minutes (ELPV), on an AVX-512/AMX one one or two. Lightning runs the held-out validation
    when ``should_stop`` is set, so the stopped model is calibrated on its final weights exactly as a
    full run would be.
    """

    def __init__(
        self,
        minutes: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        since: float | None = None,
        scale_images: int = 0,
        sample: int = MAP_QUANTILE_IMAGES,
        eval_seconds: EvalTimer = eval_pass_seconds,
    ) -> None:
        self.seconds = minutes * 60.0
        self.clock = clock
        self.since = since
        self.scale_images = scale_images  # training images the map scale will be measured on
        self.sample = sample  # good held-out images the map's quantiles and validation take
        self.started = 0.0  # training's start
        self.eval_seconds = eval_seconds
        self.reserve_s = 0.0
        self.pass_seconds: list[float] = []  # this run's timed eval passes, oldest first
        self._timed_at: float | None = None
        self.stopped_at: int | None = None

    @property
    def deadline(self) -> float:
        """When training must stop, on ``clock``."""
        return (self.started if self.since is None else self.since) + self.seconds - self.reserve_s

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.started = self.clock()

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._timed_at is not None and self.clock() - self._timed_at < RETIME_EVERY_S:
            return
        first = self._timed_at is None  # later, the kernels are built and one pass is enough
        self.pass_seconds += self.eval_seconds(
            trainer, pl_module, batch, FIRST_PASSES if first else 1, warm_up=first
        )
        self._timed_at = self.clock()
        data = trainer.datamodule  # type: ignore[attr-defined]
        scored = min(self.scale_images, len(data.train_data))
        sampled = sample_images(data, self.sample)
        self.reserve_s = after_training_seconds(self.pass_s, scored, sampled, len(data.val_data))

    @property
    def pass_s(self) -> float:
        """The eval pass the reserve is reckoned on: the median of the latest timings."""
        return statistics.median(self.pass_seconds[-RECENT_PASSES:]) if self.pass_seconds else 0.0

    def state_dict(self) -> dict[str, Any]:
        """The reserve travels in the checkpoint (the time already spent does not: see above). A
        resumed run keeps it until it has timed passes of its own on the CPU it resumes on."""
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
