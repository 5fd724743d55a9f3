"""The learning rate's final drop (``training.callbacks.FinalDecay``): EfficientAD lowers the rate
tenfold for the last 5 % of training, which anomalib's per-epoch scheduler never reaches."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from training.callbacks import FinalDecay, TimeBudget


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
