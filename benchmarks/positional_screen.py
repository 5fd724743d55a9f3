"""Does knowing *where* on the part a feature sits add to what EfficientAD sees? In minutes.

Aligned parts (solar cells, labels, machined faces shot from a fixture) look different at each
position. EfficientAD's student and the nearest-neighbour screen of ``teacher_features.py`` both
ignore the position. This script fits a Gaussian per position on a teacher's features of the normal
training images (PaDiM-style: the feature map average-pooled to a ``--grid`` x ``--grid`` grid,
``--channels`` random channels, each position's covariance shared with its 3x3 neighbours and
shrunk toward its mean variance), scores a test image by its worst position's Mahalanobis
distance, and prints image AUROC and EER. With ``--model DIR`` it also scores the test images with
that export and prints the mean of the two scores' ranks: how much the two disagree, and whether
the disagreement helps.

    python benchmarks/elpv.py --cell-type poly --out /tmp/elpv-poly
    python benchmarks/positional_screen.py --data /tmp/elpv-poly --model /tmp/elpv-poly/model

``--data`` is any folder with ``train/normal``, ``test/normal`` and ``test/abnormal``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.stats import rankdata, spearmanr
from teacher_features import build_teacher, features, load_images  # this folder: run as a script
from torch.nn import functional

from training.images import list_images
from training.metrics import auroc, eer
from training.settings import DEFAULT_IMAGE_SIZE

SHRINK = 0.1  # of the mean variance, added to every covariance's diagonal


class PositionalGaussian:
    """A Gaussian per grid position on ``channels`` random channels of a feature map."""

    def __init__(self, fitted: torch.Tensor, grid: int, channels: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.grid = grid
        self.channels = torch.randperm(fitted.shape[1], generator=generator)[:channels]
        samples = self._pooled(fitted).permute(2, 3, 0, 1)  # grid, grid, images, channels
        self.mean = samples.mean(2)
        centred = samples - self.mean[:, :, None]
        cov = torch.einsum("ijnd,ijne->ijde", centred, centred) / (samples.shape[2] - 1)
        dims = len(self.channels)
        flat = cov.permute(2, 3, 0, 1).reshape(1, dims * dims, grid, grid)
        shared = functional.avg_pool2d(flat, 3, 1, 1, count_include_pad=False)
        cov = shared.reshape(dims, dims, grid, grid).permute(2, 3, 0, 1)
        ridge = SHRINK * cov.diagonal(dim1=-2, dim2=-1).mean() * torch.eye(dims)
        self.precision = torch.linalg.inv(cov + ridge)

    def _pooled(self, maps: torch.Tensor) -> torch.Tensor:
        return functional.adaptive_avg_pool2d(maps[:, self.channels], self.grid)

    def scores(self, maps: torch.Tensor) -> NDArray[np.float64]:
        """Each image's worst position, as a Mahalanobis distance."""
        z = self._pooled(maps).permute(0, 2, 3, 1) - self.mean
        distance = torch.einsum("nijd,ijde,nije->nij", z, self.precision, z)
        return distance.flatten(1).amax(1).sqrt().double().numpy()


def model_scores(model: Path, folder: Path) -> NDArray[np.float64]:
    from inspectd.scorer import Model

    with tempfile.TemporaryDirectory(prefix="inspectd-screen-") as cache:
        scorer = Model(model, Path(cache))
        return np.array([scorer.score(path).score for path in list_images(folder)])


def report(name: str, normal: NDArray[np.float64], abnormal: NDArray[np.float64]) -> None:
    good, bad = [float(v) for v in normal], [float(v) for v in abnormal]
    print(f"{name:36s} AUROC {auroc(good, bad):.3f}  EER {eer(good, bad):.3f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="folder with train/normal, test/normal, test/abnormal"
    )
    parser.add_argument("--teacher", default="lite2", help="as teacher_features.py --teacher (default lite2)")
    parser.add_argument("--grid", type=int, default=16, help="positions per side (default 16)")
    parser.add_argument("--channels", type=int, default=128, help="random channels kept (default 128)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--model", type=Path, metavar="DIR", help="an export to score and combine with")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    folders = [args.data / name for name in ("train/normal", "test/normal", "test/abnormal")]
    train, normal, abnormal = (load_images(folder, args.image_size) for folder in folders)
    network = build_teacher(args.teacher, "small", train)
    gaussian = PositionalGaussian(features(network, train), args.grid, args.channels)
    g_normal, g_abnormal = (
        gaussian.scores(features(network, normal)),
        gaussian.scores(features(network, abnormal)),
    )
    report(f"{args.teacher}, Gaussian per position", g_normal, g_abnormal)
    if args.model is None:
        return 0
    m_normal, m_abnormal = model_scores(args.model, folders[1]), model_scores(args.model, folders[2])
    report("the model", m_normal, m_abnormal)
    together = (rankdata(np.r_[g_normal, g_abnormal]) + rankdata(np.r_[m_normal, m_abnormal])) / 2
    report("mean of the two ranks", together[: len(g_normal)], together[len(g_normal) :])
    agree = spearmanr(g_normal, m_normal).statistic
    print(f"rank correlation of the two scores on the good test images: {agree:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
