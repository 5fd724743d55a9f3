"""--student-crop half: the student learns on a random crop of each training image, against the
teacher's output on the whole image cut to the matching window, and computes exactly the
distances a whole-image step computes there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.errors import TrainingError
from training.fit import train
from training.lite_teacher import student_grid
from training.options import TrainOptions
from training.student_crop import STRIDE, crop_side, random_window


@pytest.mark.parametrize("size", [256, 320, 384])
def test_the_students_output_on_a_crop_is_the_window_of_its_output_on_the_whole_image(size: int) -> None:
    from training.model import StudentTeacherScoring

    torch.manual_seed(0)
    student = StudentTeacherScoring().student.eval()
    image = torch.rand(1, 3, size, size)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        whole = student(image)
        for _ in range(3):
            window = random_window(size, size, size // 2, generator)
            assert window is not None
            on_crop = student(window.of_image(image))
            assert on_crop.shape[-2:] == (student_grid(size // 2),) * 2
            assert torch.equal(on_crop, window.of_grid(whole))


def test_windows_lie_on_the_students_stride_inside_the_image_at_random_places() -> None:
    generator = torch.Generator().manual_seed(0)
    windows = [random_window(256, 256, 128, generator) for _ in range(50)]
    assert all(w is not None for w in windows)
    places = {(w.top, w.left) for w in windows if w is not None}
    assert len(places) > 10
    for top, left in places:
        assert top % STRIDE == 0 and left % STRIDE == 0
        assert 0 <= top <= 128 and 0 <= left <= 128
    assert random_window(256, 256, 0) is None
    assert random_window(256, 256, 256) is None
    assert crop_side("half", 256) == 128 and crop_side("full", 256) == 0


def test_a_cropped_training_step_learns_the_teachers_whole_image_output_on_the_window() -> None:
    from training.model import StudentTeacherScoring

    torch.manual_seed(0)
    model = StudentTeacherScoring(crop_side=128)
    model.teacher = _ShapeRecorder()  # type: ignore[assignment]
    seen = model.teacher.seen
    model.train()
    student_output, distance = model.compute_student_teacher_distance(torch.rand(1, 3, 256, 256))
    assert seen == [(1, 3, 256, 256)]  # the teacher (and its memo) sees the whole image
    assert student_output.shape[-2:] == distance.shape[-2:] == (24, 24)
    loss, _, _ = model(torch.rand(1, 3, 256, 256), torch.rand(1, 3, 128, 128))
    loss.backward()
    assert all(p.grad is not None for p in model.student.parameters())

    model.eval()  # scoring always takes the whole image
    with torch.no_grad():
        assert model.compute_student_teacher_distance(torch.rand(1, 3, 256, 256))[1].shape[-2:] == (56, 56)


class _ShapeRecorder(torch.nn.Module):
    """A teacher that notes the shape of what it is shown and answers the student's 56x56 grid."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(batch.shape))
        return torch.ones(batch.shape[0], 384, 56, 56)


def test_an_unknown_student_crop_or_one_with_the_autoencoders_map_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="--student-crop must be one of full, half"):
        train(TrainOptions(tmp_path / "normal", tmp_path / "out", student_crop="quarter"))
    with pytest.raises(TrainingError, match="--student-crop half needs --anomaly-map student-teacher"):
        train(TrainOptions(tmp_path / "normal", tmp_path / "out", student_crop="half", anomaly_map="both"))
