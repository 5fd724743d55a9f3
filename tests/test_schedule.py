"""The learning rate's final drop (``training.callbacks.FinalDecay``): EfficientAD lowers the rate
tenfold for the last 5 % of training, which anomalib's per-epoch scheduler never reaches; and the
time budget (``TimeBudget``), which ends training early enough for the work after it."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch

from training.callbacks import (
    MIN_RESERVE_S,
    RETIME_EVERY_S,
    FinalDecay,
    TimeBudget,
    after_training_seconds,
    eval_pass_seconds,
)


def rates(trainer: SimpleNamespace) -> list[float]:
    return [group["lr"] for group in trainer.optimizers[0].param_groups]


def stepper(decay: FinalDecay, trainer: SimpleNamespace):  # type: ignore[no-untyped-def]
    def step(n: int) -> None:
        trainer.global_step = n
        decay.on_train_batch_end(trainer, None, None, None, n)  # type: ignore[arg-type]

    return step


def a_trainer(lr: float = 3e-4) -> SimpleNamespace:
    weights = torch.nn.Parameter(torch.zeros(2))
    return SimpleNamespace(global_step=0, optimizers=[torch.optim.Adam([weights], lr=lr)])


def test_the_rate_drops_once_at_95_percent_of_max_steps() -> None:
    trainer = a_trainer()
    decay = FinalDecay(max_steps=100)
    step = stepper(decay, trainer)
    step(94)
    assert rates(trainer) == [3e-4]
    step(95)
    assert rates(trainer) == [pytest.approx(3e-5)]
    step(96)
    step(100)
    assert rates(trainer) == [pytest.approx(3e-5)] and decay.dropped_at == 95


def test_when_the_budget_ends_the_run_the_rate_drops_by_the_clock() -> None:
    now = [0.0]
    budget = TimeBudget(minutes=10, clock=lambda: now[0])
    trainer = a_trainer()
    budget.on_train_start(trainer, None)  # type: ignore[arg-type]
    decay = FinalDecay(max_steps=70_000, budget=budget)
    step = stepper(decay, trainer)
    now[0] = 0.94 * 600
    step(1000)
    assert rates(trainer) == [3e-4]
    now[0] = 0.95 * 600
    step(1001)
    assert rates(trainer) == [pytest.approx(3e-5)] and decay.dropped_at == 1001


def test_a_resumed_run_does_not_drop_the_rate_twice() -> None:
    first = FinalDecay(max_steps=10)
    trainer = a_trainer()
    stepper(first, trainer)(10)
    resumed = FinalDecay(max_steps=20)  # --resume --max-steps 20: the checkpoint's rate is already low
    resumed.load_state_dict(first.state_dict())
    stepper(resumed, trainer)(19)
    assert rates(trainer) == [pytest.approx(3e-5)] and resumed.dropped_at == 10


def test_the_work_after_training_is_estimated_from_this_cpus_eval_passes() -> None:
    # map scale on 200 images (1.3 passes each), the map's quantiles (1.3) and validation (1.3) on a
    # sample of 32 of the 80 held-out images, calibration (0.8) of all 80, the export (130): 537.2
    # passes, and 40 % to spare
    assert after_training_seconds(0.5, 200, sampled_images=32, held_out_images=80) == pytest.approx(376.04)
    assert after_training_seconds(0.5, 200, 20, 20) == pytest.approx(0.7 * (260 + 2.6 * 20 + 0.8 * 20 + 130))
    assert after_training_seconds(0.001, 200, 32, 80) == MIN_RESERVE_S  # a floor


class Recording(torch.nn.Module):
    """A model that notes the mode and gradient state of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.nn.Conv2d(3, 1, 3)
        self.calls: list[tuple[bool, bool, tuple[int, ...]]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.inner.training, torch.is_grad_enabled(), tuple(x.shape)))
        return self.inner(x)


def test_the_eval_pass_is_timed_as_validation_runs_the_model() -> None:
    """One image, eval mode, no gradients, through the pre-processor; then training mode again."""
    model = Recording().train()
    halve = torch.nn.Upsample(scale_factor=0.5)
    module = SimpleNamespace(pre_processor=halve, device="cpu", model=model)
    trainer = SimpleNamespace(precision_plugin=SimpleNamespace(forward_context=contextlib.nullcontext))
    batch = SimpleNamespace(image=torch.rand(4, 3, 64, 64))
    seconds = eval_pass_seconds(trainer, module, batch, 3)  # type: ignore[arg-type]
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    assert model.calls == [(False, False, (1, 3, 32, 32))] * 4  # an untimed pass builds the kernels
    assert model.training and model.inner.training
    model.calls.clear()
    assert len(eval_pass_seconds(trainer, module, batch, 1, warm_up=False)) == 1  # type: ignore[arg-type]
    assert len(model.calls) == 1


class Passes:
    """Stands in for ``eval_pass_seconds``: hands out the timings it is given, and notes each call."""

    def __init__(self, *timings: float) -> None:
        self.timings = list(timings)
        self.calls: list[tuple[int, bool]] = []

    def __call__(
        self, trainer: object, module: object, batch: object, repeats: int = 1, *, warm_up: bool = True
    ) -> list[float]:
        self.calls.append((repeats, warm_up))
        taken, self.timings = self.timings[:repeats], self.timings[repeats:]
        return taken


class HeldOut(list[None]):
    """Stands in for anomalib's held-out dataset: its length and its images' labels."""

    def __init__(self, good: int, defective: int) -> None:
        super().__init__([None] * (good + defective))
        self.samples = SimpleNamespace(label_index=[1] * defective + [0] * good)  # anomalib's order


def a_budget_trainer(train_images: int = 100) -> SimpleNamespace:
    """100 training images; 25 held out, of which 5 defective: the sample is their 3 batches of 8
    and the one that brings the good images to 16."""
    data = SimpleNamespace(train_data=[None] * train_images, val_data=HeldOut(20, 5), eval_batch_size=8)
    return SimpleNamespace(
        global_step=0, should_stop=False, datamodule=data, optimizers=a_trainer().optimizers
    )


def test_the_budget_counts_from_the_command_and_keeps_time_for_what_follows() -> None:
    """--max-minutes 30 is the whole run: training stops early enough for the map scale,
    calibration and export, as long as this CPU takes for them at its eval pass's speed."""
    now = [60.0]  # the command started at 0; checks and data set-up took a minute
    passes = Passes(0.4, 0.9, 0.4)  # one slow pass of three does not steer the estimate
    budget = TimeBudget(
        minutes=30, clock=lambda: now[0], since=0.0, scale_images=200, sample=16, eval_seconds=passes
    )
    trainer = a_budget_trainer()
    budget.on_train_start(trainer, None)  # type: ignore[arg-type]
    assert budget.left() == pytest.approx(1740.0)  # before the eval pass is timed, nothing is kept
    now[0] += 100 * 0.4  # anomalib's teacher statistics
    budget.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
    budget.on_train_batch_start(trainer, None, None, 1)  # type: ignore[arg-type]
    assert passes.calls == [(3, True)]  # three passes after a warm-up, then none until a minute has passed
    reserve = after_training_seconds(0.4, 100, 24, 25)  # the map scale on all 100, 24 images in the sample
    assert budget.reserve_s == pytest.approx(reserve) and budget.deadline == pytest.approx(1800 - reserve)

    decay = FinalDecay(max_steps=70_000, budget=budget)
    window = budget.deadline - 60.0  # training's own share, from its start to the deadline
    now[0] = 60.0 + 0.96 * window
    stepper(decay, trainer)(800)
    budget.on_train_batch_end(trainer, None, None, None, 800)  # type: ignore[arg-type]
    assert decay.dropped_at == 800 and not trainer.should_stop
    now[0] = budget.deadline
    budget.on_train_batch_end(trainer, None, None, None, 801)  # type: ignore[arg-type]
    assert trainer.should_stop and budget.stopped_at == 800  # the step Lightning reports


def test_the_reserve_follows_the_cpu_through_the_run() -> None:
    """A pass is timed again each minute of training; the reserve is reckoned on the median of the
    latest five, so a CPU that slows down keeps more, and one odd timing moves nothing."""
    now = [0.0]
    passes = Passes(0.4, 0.4, 0.4, 2.0, 0.6, 0.6, 0.6, 0.6, 0.6)
    budget = TimeBudget(minutes=30, clock=lambda: now[0], scale_images=200, eval_seconds=passes)
    trainer = a_budget_trainer()
    budget.on_train_start(trainer, None)  # type: ignore[arg-type]
    budget.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
    reserves = [budget.reserve_s]
    for minute in range(1, 7):
        now[0] = minute * RETIME_EVERY_S - 1
        budget.on_train_batch_start(trainer, None, None, minute)  # type: ignore[arg-type]  # too soon
        now[0] = minute * RETIME_EVERY_S
        budget.on_train_batch_start(trainer, None, None, minute)  # type: ignore[arg-type]
        reserves.append(budget.reserve_s)
    assert passes.calls == [(3, True)] + [(1, False)] * 6 and not passes.timings
    # the median of the latest five: the 2.0 is outvoted; three 0.6 of five say the CPU slowed
    medians = (0.4, 0.4, 0.4, 0.6, 0.6, 0.6, 0.6)
    assert reserves == [pytest.approx(after_training_seconds(m, 100, 25, 25)) for m in medians]


def test_a_resumed_run_keeps_the_checkpoints_reserve_until_it_has_timed_its_own() -> None:
    first = TimeBudget(minutes=30, eval_seconds=Passes(0.4, 0.4, 0.4))
    trainer = a_budget_trainer()
    first.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
    resumed = TimeBudget(minutes=30, eval_seconds=Passes(0.2, 0.2, 0.2))
    resumed.load_state_dict(first.state_dict())  # --resume: the checkpoint keeps the estimate
    assert resumed.reserve_s == pytest.approx(first.reserve_s)
    resumed.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]  # another day's CPU
    assert resumed.reserve_s == pytest.approx(after_training_seconds(0.2, 0, 25, 25))
