"""The student network: anomalib's PDN, or PDN-S with its hidden convolutions half as wide.

On a CPU the student is the whole cost of a training step (its forward and backward passes were
98 % of a profiled step) and most of an inference, and PDN-S's 128/256/256 hidden channels put about
15 GMAC into every 256 px pass. With 64/128/128 the same layers take about 5 GMAC: a step on a
2-core AVX2 CPU took 0.45-0.49 s instead of 1.24-1.48 s (forward and backward on a 256 px image and
a 128 px penalty crop, Adam). The output keeps the teacher's 384 channels, so the losses, the map and
the export are anomalib's.

``--student-width auto`` (the default) times one step of the full student in the fit's arithmetic
before the fit: where the budget holds fewer than ``HALF_WIDTH_BELOW_STEPS`` such steps, steps are
what the model lacks and the half-width student trains; on a fast CPU the full one does (README,
Accuracy: on a 2-core AVX2 CPU the half-width student trained 2.1-2.2x the steps and scored
higher on both ELPV cell types).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from anomalib.models.image.efficient_ad.torch_model import (
    MediumPatchDescriptionNetwork,
    SmallPatchDescriptionNetwork,
)
from torch import nn

from training.memory_format import StepTimer, faster_memory_format, step_seconds
from training.settings import HALF_WIDTH_BELOW_STEPS, STUDENT_WIDTHS

AUTO, FULL, HALF = STUDENT_WIDTHS
PROBE_STEPS = 1  # per memory order, timed after one untimed step (oneDNN picks its kernels then)
HALF_FIRST_CHANNELS = 64
STUDENT_CONV1 = "model.student.conv1.weight"  # in a Lightning checkpoint's state_dict


class HalfWidthPatchDescriptionNetwork(SmallPatchDescriptionNetwork):
    """PDN-S (the same kernels, pooling and receptive field) with 64/128/128 hidden channels."""

    def __init__(self, out_channels: int, padding: bool = False) -> None:
        super().__init__(out_channels, padding)
        pad = 1 if padding else 0
        self.conv1 = nn.Conv2d(3, HALF_FIRST_CHANNELS, kernel_size=4, stride=1, padding=3 * pad)
        self.conv2 = nn.Conv2d(HALF_FIRST_CHANNELS, 128, kernel_size=4, stride=1, padding=3 * pad)
        self.conv3 = nn.Conv2d(128, 128, kernel_size=3, stride=1, padding=1 * pad)
        self.conv4 = nn.Conv2d(128, out_channels, kernel_size=4, stride=1, padding=0)


def student_network(
    model_size: str, width: str, out_channels: int
) -> SmallPatchDescriptionNetwork | MediumPatchDescriptionNetwork:
    """The student for ``--model-size`` and a chosen width (``full`` or ``half``; ``half`` is
    PDN-S's alone, ``training.checks`` refuses it with the medium model)."""
    if width not in (FULL, HALF):
        raise ValueError(f"student width must be full or half, got {width!r}")
    if width == HALF:
        return HalfWidthPatchDescriptionNetwork(out_channels=out_channels)
    network = MediumPatchDescriptionNetwork if model_size == "medium" else SmallPatchDescriptionNetwork
    return network(out_channels=out_channels)


def chosen_width(
    requested: str,
    model_size: str,
    max_minutes: float | None,
    max_steps: int,
    sides: tuple[int, int],
    *,
    bf16: bool,
    resume_from: Path | None = None,
    timer: StepTimer = step_seconds,
) -> tuple[str, float | None]:
    """The width to train (``full`` or ``half``) and, when ``auto`` timed it, the full student's
    step in seconds, in the faster of the two memory orders (``training.memory_format``: the fit
    trains in that one, and on an AMX CPU channels-last halved a step). ``half`` where the budget
    holds fewer than
    ``min(max_steps, HALF_WIDTH_BELOW_STEPS)`` such steps: time, not ``--max-steps``, binds, and
    the full student would get too few. ``sides`` are the training image's and the penalty
    crop's. A resumed fit keeps its checkpoint's width; without a time budget, or with the medium
    model, ``auto`` is ``full``."""
    if requested != AUTO:
        return requested, None
    if resume_from is not None:
        return width_in_checkpoint(resume_from), None
    if model_size != "small" or max_minutes is None:
        return FULL, None
    with torch.random.fork_rng():  # the fit's own initialisation stays as seeded
        probe = student_network(model_size, FULL, 384)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            _, seconds = faster_memory_format(probe, sides, timer, rounds=1, steps=PROBE_STEPS)
        step = min(seconds.values())
    fits = max_minutes * 60 / step
    return (HALF if fits < min(max_steps, HALF_WIDTH_BELOW_STEPS) else FULL), step


def width_in_checkpoint(checkpoint: Path) -> str:
    """The width of the student a Lightning checkpoint of ``InspectdEfficientAd`` holds."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False).get("state_dict", {})
    conv1 = state.get(STUDENT_CONV1)
    return HALF if conv1 is not None and conv1.shape[0] == HALF_FIRST_CHANNELS else FULL
