"""What a person watching ``inspectd train`` sees: one overall bar with an ETA on a terminal,
a sparse line log (every ~30 s and every 5 %) when the output goes to a file or the journal."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

import tqdm  # type: ignore[import-untyped]  # no types-tqdm in the dev extras
from lightning.pytorch import Callback, LightningModule, Trainer

from training.settings import HALF_WIDTH_BELOW_STEPS, TEACHER_STATS_IMAGES
from training.validation_sample import sample_images

if TYPE_CHECKING:
    from training.callbacks import TimeBudget

# Warnings that every EfficientAD run on CPU triggers and that a user can do nothing about.
_NOISE = (
    r".*but have no logger configured.*",
    r".*module\(s\) in eval mode.*",
    r".*'pin_memory' argument is set as true.*",
    r".*The transform `ToTensor\(\)` is deprecated.*",
    r".*infer the `batch_size` from an ambiguous collection.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*does not have many workers.*",
)


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainingProgress(Callback):
    """Reports training steps with speed and ETA without flooding a non-interactive log."""

    def __init__(
        self,
        total_steps: int,
        *,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        budget: TimeBudget | None = None,
    ) -> None:
        self.total = total_steps
        self.budget = budget  # --max-minutes: whichever of it and total_steps comes first
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.every_s = every_s
        self.every_steps = max(1, total_steps // 20)
        self.clock = clock
        self._started = 0.0
        self._first_step_at: float | None = None
        self._first_step = 1  # later than 1 when resuming from a checkpoint
        self._last_line_at = 0.0
        self._bar: tqdm.tqdm[Any] | None = None

    def say(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = self.clock()
        limit = (
            f" or until {format_duration(self.budget.seconds)} less the time kept for calibration and "
            "export, whichever comes first"
            if self.budget
            else ""
        )
        self.say(
            f"train: up to {self.total} steps{limit}; first computing teacher feature statistics over "
            f"{_stats_images(trainer.num_training_batches)} training images"
        )
        for line in (student_width_line(pl_module), memory_order_line(pl_module)):
            if line:
                self.say(line)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, now = trainer.global_step, self.clock()
        loss = _loss(outputs)
        if self._first_step_at is None:
            self._first_step_at, self._first_step = now, step
        if self.interactive:
            self._update_bar(step, loss)
        elif (
            step in (self._first_step, self.total)
            or step % self.every_steps == 0
            or now - self._last_line_at >= self.every_s
        ):
            self._last_line_at = now
            self.say(self.status_line(step, now, loss))

    def status_line(self, step: int, now: float, loss: float | None) -> str:
        parts = [f"train: step {step}/{self.total} ({100 * step // max(self.total, 1)}%)"]
        if loss is not None:
            parts.append(f"loss {loss:.3f}")
        if self._first_step_at is not None and step > self._first_step:
            per_step = (now - self._first_step_at) / (step - self._first_step)
            left = per_step * (self.total - step)
            if self.budget is not None:
                left = min(left, self.budget.left())
            parts += [f"{per_step:.2f} s/step", f"ETA {format_duration(left)}"]
        parts.append(f"elapsed {format_duration(now - self._started)}")
        return "  ".join(parts)

    def _update_bar(self, step: int, loss: float | None) -> None:
        if self._bar is None:
            self._bar = tqdm.tqdm(total=self.total, unit="step", desc="train", file=self.stream)
        self._bar.update(step - self._bar.n)
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close_bar()
        data: Any = getattr(trainer, "datamodule", None)
        if getattr(data, "val_data", None) is None:
            self.say(
                f"train: scoring {_count(trainer.num_val_batches)} held-out batches to set the score scale"
            )
            return
        self.say(
            f"train: scoring {sample_images(data)} of the {len(data.val_data)} held-out images to set the "
            "score scale (the threshold is calibrated on all of them after the export)"
        )

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close_bar()
        self.say(
            f"train: {trainer.global_step} steps done in {format_duration(self.clock() - self._started)}"
        )

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def student_width_line(pl_module: LightningModule) -> str | None:
    """Which student ``--student-width auto`` picked, and on what (``training.student``)."""
    width = getattr(pl_module, "student_width", None)
    probe = getattr(pl_module, "width_probe_seconds", None)
    if not width or probe is None:
        return None
    why = f", too slow for {HALF_WIDTH_BELOW_STEPS} steps in the time budget" if width == "half" else ""
    timed = f"a full-width step took {probe:.2f} s here"
    return f"train: the {width}-width student (--student-width auto: {timed}{why})"


def memory_order_line(pl_module: LightningModule) -> str | None:
    """What ``training.memory_format`` measured at the fit's start, when the module measured it."""
    chosen = getattr(pl_module, "memory_format", None)
    timed = getattr(pl_module, "step_seconds", None)
    if not chosen or not timed:
        return None
    times = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in timed.items())
    return f"train: the student steps in {chosen} memory order, the faster here (one probe step: {times})"


def _loss(outputs: Any) -> float | None:
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    return float(loss) if loss is not None else None


def _batches(batches: Any) -> float:
    """Lightning's batch count: a number, a list of them (one per loader), or inf."""
    return float(sum(batches) if isinstance(batches, list) else batches)


def _count(batches: Any) -> str:
    total = _batches(batches)
    return str(int(total)) if total != float("inf") else "all"


def _stats_images(batches: Any) -> str:
    """How many training images the teacher's statistics take: at most ``TEACHER_STATS_IMAGES``."""
    return str(int(min(_batches(batches), TEACHER_STATS_IMAGES)))


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence what Lightning and anomalib print on every run, for the duration of a fit.

    anomalib's EfficientAD draws its own tqdm bars even into log files; ``disable=None`` makes
    tqdm draw only on a terminal.
    """
    from anomalib.models.image.efficient_ad import lightning_model

    # Lightning's rank-zero messages go to whichever of these packages was imported last.
    names = ("lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    original_tqdm = lightning_model.tqdm
    shim = type("QuietTqdm", (), {"tqdm": staticmethod(partial(tqdm.tqdm, disable=None))})
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        lightning_model.tqdm = shim
        try:
            yield
        finally:
            lightning_model.tqdm = original_tqdm
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
