"""How far the student misses the teacher at each grid position on good parts, to divide the map by.

EfficientAD's student-teacher map is the squared teacher-student difference averaged over the
channels. On good parts that difference is not the same everywhere: some positions (a busbar,
a part's edge, the image border) are copied less closely than others, so a good part's maximum
tends to come from them and a faint defect elsewhere scores below it. Dividing the map by its
mean on the training images at each position puts every position on the same footing. It is a
single grid of numbers (56x56 at 256 px), so a few dozen images fix it: on the ELPV screens
(``benchmarks/residual_screen.py``, README Accuracy) 20 images gave about the gain of all
441 or 690.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from training.settings import MAP_SCALE_IMAGES

BATCH = 16
FLOOR = 1e-3  # of the mean level: a position the student copies perfectly must not divide by ~0

DistanceFn = Callable[[torch.Tensor], torch.Tensor]  # images -> (N, C, h, w) squared differences


@torch.no_grad()
def position_scale(
    distance: DistanceFn, images: Iterable[torch.Tensor], max_images: int = MAP_SCALE_IMAGES
) -> tuple[torch.Tensor, int]:
    """(1, 1, h, w): the channel-mean squared difference at each position, averaged over at most
    ``max_images`` of ``images`` (each (1, 3, H, W) or a batch) and divided by its own mean, so that
    the map keeps its overall level; and how many images that took. Raises ValueError when there
    is no image."""
    sums: list[torch.Tensor] = []  # per batch, so that only BATCH images are held at a time
    pending: list[torch.Tensor] = []
    taken = 0
    for image in images:
        pending.append(image[: max_images - taken])
        taken += len(pending[-1])
        if sum(len(p) for p in pending) >= BATCH or taken >= max_images:
            sums.append(_level_sum(distance, pending))
            pending = []
        if taken >= max_images:
            break
    if taken == 0:
        raise ValueError("no training image to measure the map's level per position on")
    if pending:
        sums.append(_level_sum(distance, pending))
    mean = torch.stack(sums).sum(0) / taken
    scale = mean / mean.mean()
    return scale.clamp_min(FLOOR), taken


def _level_sum(distance: DistanceFn, images: list[torch.Tensor]) -> torch.Tensor:
    return distance(torch.cat(images)).float().mean(1, keepdim=True).sum(0, keepdim=True)


def resized(scale: torch.Tensor, grid: torch.Size) -> torch.Tensor:
    """``scale`` on a ``grid`` (h, w) of another size (images scored at another resolution)."""
    if scale.shape[-2:] == grid or scale.shape[-2:] == (1, 1):
        return scale
    return torch.nn.functional.interpolate(scale, size=tuple(grid), mode="bilinear", align_corners=False)
