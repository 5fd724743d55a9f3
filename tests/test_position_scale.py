"""--map-scale position: the student-teacher map divided by its mean on training images per position."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.errors import TrainingError
from training.fit import train
from training.options import TrainOptions
from training.position_scale import BATCH, FLOOR, position_scale, resized
from training.teacher import Teacher

PATTERN = torch.tensor([[1.0, 2.0], [3.0, 4.0]])


def _images(n: int) -> list[torch.Tensor]:
    """Image k is the pattern times k + 1 in both channels; a batch of one each."""
    return [(PATTERN * (k + 1)).expand(1, 2, 2, 2).clone() for k in range(n)]


def test_scale_is_the_mean_level_per_position_over_at_most_max_images() -> None:
    scale, used = position_scale(lambda x: x, _images(5), max_images=3)
    assert used == 3
    torch.testing.assert_close(scale, (PATTERN / PATTERN.mean())[None, None])  # overall level kept at 1

    seen: list[int] = []

    def counted(x: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return x

    scale, used = position_scale(counted, _images(2 * BATCH + 5), max_images=2 * BATCH + 3)
    assert used == 2 * BATCH + 3 and seen == [BATCH, BATCH, 3]  # batched, and no image past the cap
    torch.testing.assert_close(scale, (PATTERN / PATTERN.mean())[None, None])


def test_a_position_never_divides_by_zero_and_no_image_is_an_error() -> None:
    zero_corner = PATTERN.clone()
    zero_corner[0, 0] = 0.0
    scale, _ = position_scale(lambda x: x, [zero_corner.expand(1, 1, 2, 2)])
    assert scale[0, 0, 0, 0] == FLOOR and bool((scale > 0).all())
    with pytest.raises(ValueError, match="no training image"):
        position_scale(lambda x: x, [])


def test_resized_follows_the_grid_it_is_applied_to() -> None:
    scale = torch.rand(1, 1, 4, 4)
    assert resized(scale, torch.Size((4, 4))) is scale
    assert resized(scale, torch.Size((7, 9))).shape == (1, 1, 7, 9)
    ones = torch.ones(1, 1, 1, 1)
    assert resized(ones, torch.Size((7, 9))) is ones  # not measured: broadcast as it is


def test_measured_scale_levels_the_map_and_travels_with_the_weights(tmp_path: Path) -> None:
    from training.model import InspectdEfficientAd, StudentTeacherScoring

    torch.manual_seed(0)
    teacher = Teacher("random(seed=0)", None, 0)
    module = InspectdEfficientAd(teacher, tmp_path, "small", 128)
    network = module.model.train()
    assert isinstance(network, StudentTeacherScoring) and module.scale_positions
    assert network.map_scale.shape == (1, 1, 1, 1)  # anomalib's map until measured
    images = torch.rand(6, 3, 128, 128)

    assert network.measure_map_scale(images[i : i + 1] for i in range(6)) == 6
    assert network.training and network.student.training  # modes given back
    with torch.no_grad():
        plain = network.compute_student_teacher_distance(images)[1].mean(1, keepdim=True)
    assert network.map_scale.shape == (1, 1, *plain.shape[-2:])
    levelled = (plain / network.map_scale).mean(0)  # the measured images' mean map, scaled
    torch.testing.assert_close(levelled, torch.full_like(levelled, float(plain.mean())), rtol=1e-4, atol=0)
    network.eval()
    with torch.no_grad():
        scaled_map, _ = network.get_maps(images, normalize=False)
        network_plain = StudentTeacherScoring().eval()
        network_plain.load_state_dict({k: v for k, v in network.state_dict().items() if k != "map_scale"})
        plain_map, _ = network_plain.get_maps(images, normalize=False)
    assert network_plain.map_scale.shape == (1, 1, 1, 1)  # weights saved before the scale existed
    assert not torch.allclose(scaled_map, plain_map)

    fresh = StudentTeacherScoring()  # a new model loads a measured scale of any grid
    fresh.load_state_dict(network.state_dict())
    assert torch.equal(fresh.map_scale, network.map_scale)
    old = {k: v for k, v in network_plain.state_dict().items() if k != "map_scale"}
    fresh.load_state_dict(old)  # and a measured one loads weights saved before the scale existed
    assert torch.equal(fresh.map_scale, torch.ones(1, 1, 1, 1))

    both = InspectdEfficientAd(teacher, tmp_path, "small", 128, anomaly_map="both")
    none = InspectdEfficientAd(teacher, tmp_path, "small", 128, map_scale="none")
    assert not both.scale_positions and not none.scale_positions
    with pytest.raises(TrainingError, match="--map-scale must be one of"):
        train(TrainOptions(tmp_path / "normal", tmp_path / "out", map_scale="channel"))
