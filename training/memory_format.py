"""Which memory order the student trains faster in on this CPU: measured at the start of a fit.

oneDNN's convolutions run in either order, and which is faster depends on the CPU: with the weights
in channels-last order a step took 0.54 of the time in bf16 and 0.83 in f32 on an AMX CPU, but
1.31 times as long in f32 on a 2-core AVX2 EPYC (1.64 against 1.25 s). A fit is tens of thousands
of identical steps, so a few seconds spent timing both orders on a copy of the student pays for
itself; the order never changes the outputs beyond rounding, nor the export or the checkpoints.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

CONTIGUOUS = "contiguous"
CHANNELS_LAST = "channels_last"
FORMATS = {CONTIGUOUS: torch.contiguous_format, CHANNELS_LAST: torch.channels_last}
ROUNDS = 2  # the orders alternate, so that a drift of the shared CPU hits both alike
STEPS = 2  # timed per round, after one untimed step (oneDNN picks its kernels on the first)

StepTimer = Callable[[nn.Module, Sequence[torch.Tensor]], float]


def step_seconds(student: nn.Module, images: Sequence[torch.Tensor]) -> float:
    """One training step of the student's convolutions as a fit runs them: forward on each image
    (the training image, the penalty crop), backward; gradients dropped. Adam's update is under
    1 % of a step and is left out."""
    started = time.perf_counter()
    loss = sum(student(image).square().mean() for image in images)
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    student.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def faster_memory_format(
    student: nn.Module,
    sides: Sequence[int],
    timer: StepTimer = step_seconds,
    *,
    rounds: int = ROUNDS,
    steps: int = STEPS,
) -> tuple[str, dict[str, float]]:
    """The faster order's name and each order's best time per step, measured on a copy of
    ``student`` with square images of the given sides; ``student`` itself is not touched."""
    probe = copy.deepcopy(student).train()
    for parameter in probe.parameters():
        parameter.requires_grad_(True)
    device = next(probe.parameters()).device
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 3, side, side, generator=generator).to(device) for side in sides]
    best = {name: float("inf") for name in FORMATS}
    for _ in range(rounds):
        for name, memory_format in FORMATS.items():
            probe.to(memory_format=memory_format)
            timer(probe, images)
            for _ in range(steps):
                best[name] = min(best[name], timer(probe, images))
    return min(best, key=best.__getitem__), best
