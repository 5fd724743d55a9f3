"""The student trained on a random crop of each training image (``--student-crop half``).

anomalib's PDN student is a convolution without padding whose output cell ``(i, j)`` sees the
input from pixel ``(4i, 4j)`` onwards (two 2x2 average pools of stride 2). Cut the input at an
offset that is a multiple of 4 and the student's output on the cut is exactly the matching window
of its output on the whole image; the teacher's output on the whole image, cut to the same window,
is the target it would have had there. So a step on a crop computes the same distances as a step
on the whole image, restricted to a random window of positions: the student's pass, most of a step
once the teacher's outputs are memoised, costs about a fifth at half the side. What changes is the
scope of the hard-feature mining (the 0.999 quantile is taken over the window's distances).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.lite_teacher import student_grid

STRIDE = 4  # input pixels per student output cell


@dataclass(frozen=True)
class Window:
    """A crop of the input (``top``, ``left``, ``side`` in pixels) and the output cells it gives."""

    top: int
    left: int
    side: int

    @property
    def cells(self) -> tuple[slice, slice]:
        """The student-grid window (rows, columns) the crop's output covers."""
        n = student_grid(self.side)
        row, column = self.top // STRIDE, self.left // STRIDE
        return slice(row, row + n), slice(column, column + n)

    def of_image(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[..., self.top : self.top + self.side, self.left : self.left + self.side]

    def of_grid(self, grid: torch.Tensor) -> torch.Tensor:
        rows, columns = self.cells
        return grid[..., rows, columns]


def random_window(
    height: int, width: int, side: int, generator: torch.Generator | None = None
) -> Window | None:
    """A ``side`` x ``side`` crop at a random offset on the student's stride, fully inside the image;
    None (the whole image) for a ``side`` of 0 or one not smaller than the image."""
    if side <= 0 or side >= min(height, width):
        return None
    rows = (height - side) // STRIDE + 1
    columns = (width - side) // STRIDE + 1
    top = int(torch.randint(rows, (1,), generator=generator)) * STRIDE
    left = int(torch.randint(columns, (1,), generator=generator)) * STRIDE
    return Window(top, left, side)


def crop_side(student_crop: str, image_size: int) -> int:
    """The crop's side in pixels for ``--student-crop`` (0: the whole image)."""
    return image_size // 2 if student_crop == "half" else 0
