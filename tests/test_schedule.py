"""The learning rate's final drop (``training.callbacks.FinalDecay``): EfficientAD lowers the rate
tenfold for the last 5 % of training, which anomalib's per-epoch scheduler never reaches; and the
time budget (``TimeBudget``), which ends training early enough for the work after it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from training.callbacks import MIN_RESERVE_S, FinalDecay, TimeBudget, after_training_seconds


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


def test_the_work_after_training_is_estimated_from_this_cpus_teacher_passes() -> None:
    # 125 images scored (map scale and validation), 25 calibrated, the export: 915 teacher passes
    assert after_training_seconds(0.2, scored_images=125, held_out_images=25) == pytest.approx(183.0)
    assert after_training_seconds(0.001, scored_images=125, held_out_images=25) == MIN_RESERVE_S  # a floor


def test_the_budget_counts_from_the_command_and_keeps_time_for_what_follows() -> None:
    """--max-minutes 30 is the whole run: training stops early enough for calibration and export,
    as long as this CPU took per teacher pass while computing the statistics."""
    now = [60.0]  # the command started at 0; checks and data set-up took a minute
    budget = TimeBudget(minutes=30, clock=lambda: now[0], since=0.0, scale_images=200)
    data = SimpleNamespace(train_data=[None] * 100, val_data=[None] * 25)
    optimizers = a_trainer().optimizers
    trainer = SimpleNamespace(global_step=0, should_stop=False, datamodule=data, optimizers=optimizers)
    budget.on_train_start(trainer, None)  # type: ignore[arg-type]
    assert budget.left() == pytest.approx(1740.0)  # before the statistics are timed, nothing is kept
    now[0] += 100 * 0.4  # anomalib's teacher statistics: 0.4 s per training image
    budget.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
    reserve = after_training_seconds(0.4, scored_images=100 + 25, held_out_images=25)  # 366 s
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

    resumed = TimeBudget(minutes=30, clock=lambda: now[0], since=now[0], scale_images=200)
    resumed.load_state_dict(budget.state_dict())  # --resume: anomalib skips the statistics
    resumed.on_train_start(trainer, None)  # type: ignore[arg-type]
    resumed.on_train_batch_start(trainer, None, None, 0)  # type: ignore[arg-type]
    assert resumed.reserve_s == pytest.approx(reserve)  # the first run's estimate, not the floor
