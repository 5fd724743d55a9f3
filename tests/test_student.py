"""--student-width half: the small model's student with its hidden convolutions half as wide, on the
same grid as anomalib's, trained and exported like it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from anomalib.models.image.efficient_ad.torch_model import SmallPatchDescriptionNetwork
from torch import nn

from inspectd.scorer import Model
from tests.test_teachers import torch_scores
from training.errors import TrainingError
from training.fit import train
from training.options import TrainOptions
from training.student import (
    HalfWidthPatchDescriptionNetwork,
    chosen_width,
    student_network,
    width_in_checkpoint,
)
from training.teacher import Teacher


def _macs(network: nn.Module, side: int) -> int:
    """Multiply-adds of the network's convolutions on one ``side`` px image."""
    total = 0

    def count(module: nn.Module, _: object, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        per_output = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        total += per_output * output.numel()

    hooks = [m.register_forward_hook(count) for m in network.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        network(torch.zeros(1, 3, side, side))
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize("side", [64, 128, 256, 320])
def test_the_half_width_student_puts_out_anomalibs_grid_for_a_third_of_the_work(side: int) -> None:
    full, half = SmallPatchDescriptionNetwork(out_channels=384), HalfWidthPatchDescriptionNetwork(384)
    with torch.no_grad():
        image = torch.rand(1, 3, side, side)
        assert half(image).shape == full(image).shape  # same kernels and pooling: same positions
    assert [half.conv1.out_channels, half.conv2.out_channels, half.conv3.out_channels] == [64, 128, 128]
    assert 0.28 < _macs(half, side) / _macs(full, side) < 0.36


def test_the_student_follows_the_model_size_and_width() -> None:
    assert type(student_network("small", "full", 384)) is SmallPatchDescriptionNetwork
    assert type(student_network("small", "half", 384)) is HalfWidthPatchDescriptionNetwork
    assert type(student_network("medium", "full", 384)).__name__ == "MediumPatchDescriptionNetwork"
    with pytest.raises(ValueError, match="student width must be full or half, got 'auto'"):
        student_network("small", "auto", 384)  # the fit decides auto first (chosen_width)
    with pytest.raises(ValueError, match="student width must be full or half"):
        student_network("small", "third", 384)


def test_both_maps_keep_the_autoencoders_half_of_the_narrow_student(tmp_path: Path) -> None:
    from training.model import InspectdEfficientAd, StudentTeacherScoring

    teacher = Teacher("random(seed=0)", None, 0)
    alone = InspectdEfficientAd(teacher, tmp_path, "small", 256, student_width="half")
    assert isinstance(alone.model, StudentTeacherScoring)
    assert isinstance(alone.model.student, HalfWidthPatchDescriptionNetwork)
    assert alone.model.student.conv4.out_channels == 384
    both = InspectdEfficientAd(teacher, tmp_path, "small", 256, anomaly_map="both", student_width="half")
    assert isinstance(both.model.student, HalfWidthPatchDescriptionNetwork)
    assert both.model.student.conv4.out_channels == 768  # the teacher's 384 and the autoencoder's


def test_a_wrong_student_width_is_refused_before_any_work(tmp_path: Path) -> None:
    normal = tmp_path / "normal"  # never read: the options are checked first
    with pytest.raises(TrainingError, match="--student-width must be one of auto, full, half, got 'third'"):
        train(TrainOptions(normal, tmp_path / "out", student_width="third"))
    with pytest.raises(TrainingError, match="--student-width half narrows the small model's student"):
        train(TrainOptions(normal, tmp_path / "out", model_size="medium", student_width="half"))


@pytest.mark.timeout(900)
def test_a_half_width_student_trains_and_exports_what_it_scores(
    tmp_path: Path, surface_set: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    normal, abnormal = surface_set
    options = TrainOptions(
        normal, tmp_path / "model", max_steps=2, teacher="random", student_width="half", keep_checkpoint=True
    )
    card = train(options)
    assert card.extra["student_width"] == "half"

    images = sorted(normal.glob("*.png"))[:2] + sorted(abnormal.glob("*.png"))[:2]
    checkpoint = tmp_path / "model" / "checkpoints" / "last.ckpt"  # holds the narrow student
    in_torch = torch_scores(checkpoint, Teacher("random(seed=0)", None, 0), images, student_width="half")
    exported = Model(tmp_path / "model", tmp_path / "ov-cache", precision="f32")
    ov_scores = [exported.score(p).score for p in images]
    assert np.allclose(ov_scores, in_torch, atol=2e-3), (ov_scores, in_torch)


# --- --student-width auto -----------------------------------------------------------------------


def _timer(seconds: float, seen: list[bool] | None = None) -> Any:
    def timer(student: nn.Module, images: Any) -> float:
        assert isinstance(student, SmallPatchDescriptionNetwork) and student.conv1.out_channels == 128
        assert [tuple(i.shape) for i in images] == [(1, 3, 256, 256), (1, 3, 128, 128)]
        if seen is not None:
            seen.append(torch.is_autocast_enabled("cpu"))
        return seconds

    return timer


def _never(*_: Any) -> float:
    raise AssertionError("no step may be timed")


SIDES = (256, 128)


def test_auto_trains_half_width_where_the_budget_holds_too_few_full_steps() -> None:
    # 29 minutes at 1.2 s per full step (a 2-core AVX2 CPU): about 1,450 steps
    assert chosen_width("auto", "small", 29.0, 70_000, SIDES, bf16=False, timer=_timer(1.2)) == ("half", 1.2)
    # at 0.2 s (an AMX CPU in bf16): 8,700 steps, the full student gets enough
    assert chosen_width("auto", "small", 29.0, 70_000, SIDES, bf16=False, timer=_timer(0.2)) == ("full", 0.2)
    # --max-steps binds before the time does: the full student gets every step asked for
    assert chosen_width("auto", "small", 29.0, 500, SIDES, bf16=False, timer=_timer(1.2)) == ("full", 1.2)
    assert chosen_width("auto", "small", 29.0, 2000, SIDES, bf16=False, timer=_timer(1.2))[0] == "half"


def test_auto_decides_on_the_faster_memory_order() -> None:
    def timer(student: nn.Module, images: Any) -> float:
        assert isinstance(student, SmallPatchDescriptionNetwork)
        return 0.4 if student.conv2.weight.is_contiguous(memory_format=torch.channels_last) else 1.2

    assert chosen_width("auto", "small", 29.0, 70_000, SIDES, bf16=True, timer=timer) == ("full", 0.4)


def test_auto_times_in_the_fits_arithmetic_and_leaves_the_seeded_rng_alone() -> None:
    seen: list[bool] = []
    torch.manual_seed(0)
    chosen_width("auto", "small", 29.0, 70_000, SIDES, bf16=True, timer=_timer(0.5, seen))
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))  # the model's initialisation does not depend on the probe
    assert seen == [True] * 4  # per memory order one untimed step and one timed, under bf16 autocast
    chosen_width("auto", "small", 29.0, 70_000, SIDES, bf16=False, timer=_timer(0.5, seen))
    assert seen[4:] == [False] * 4


def test_auto_is_full_without_a_budget_or_with_the_medium_model_and_a_named_width_is_kept() -> None:
    assert chosen_width("auto", "small", None, 70_000, SIDES, bf16=False, timer=_never) == ("full", None)
    assert chosen_width("auto", "medium", 29.0, 70_000, SIDES, bf16=False, timer=_never) == ("full", None)
    for width in ("full", "half"):
        assert chosen_width(width, "small", 29.0, 70_000, SIDES, bf16=False, timer=_never) == (width, None)


def test_a_resumed_auto_fit_keeps_its_checkpoints_width(tmp_path: Path) -> None:
    for width in ("full", "half"):
        student = student_network("small", width, 384)
        state = {f"model.student.{k}": v for k, v in student.state_dict().items()}
        checkpoint = tmp_path / f"{width}.ckpt"
        torch.save({"state_dict": state, "global_step": 7}, checkpoint)
        assert width_in_checkpoint(checkpoint) == width
        resumed = chosen_width("auto", "small", 29.0, 70_000, SIDES, bf16=False, resume_from=checkpoint)
        assert resumed == (width, None)


def test_the_log_says_which_width_auto_picked_and_why() -> None:
    from types import SimpleNamespace

    from training.progress import student_width_line

    half = SimpleNamespace(student_width="half", width_probe_seconds=1.234)
    assert student_width_line(half) == (  # type: ignore[arg-type]
        "train: the half-width student (--student-width auto: a full-width step took 1.23 s here, too "
        "slow for 3000 steps in the time budget)"
    )
    full = SimpleNamespace(student_width="full", width_probe_seconds=0.2)
    assert student_width_line(full) == (  # type: ignore[arg-type]
        "train: the full-width student (--student-width auto: a full-width step took 0.20 s here)"
    )
    assert student_width_line(SimpleNamespace(student_width="half", width_probe_seconds=None)) is None  # type: ignore[arg-type]
