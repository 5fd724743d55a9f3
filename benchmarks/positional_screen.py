"""Does knowing *where* on the part a feature sits add to what EfficientAD sees? In minutes.

Aligned parts (solar cells, labels, machined faces shot from a fixture) look different at each
position. EfficientAD's student and the nearest-neighbour screen of ``teacher_features.py`` both
ignore the position. This script fits a Gaussian per position on a teacher's features of the normal
training images (PaDiM-style: the feature map average-pooled to a ``--grid`` x ``--grid`` grid,
``--channels`` random channels, each position's covariance shared with its 3x3 neighbours and
shrunk toward its mean variance), scores a test image by its worst position's Mahalanobis
distance, and prints image AUROC and EER. With ``--model DIR`` it also scores the test images with
that export and prints the mean of the two scores' ranks within the test set (a screen: how much
the two disagree, and whether the disagreement helps), then a sum a daemon could apply to one
image: a second Gaussian fitted without the last ``--held-out`` share of the training normals, and
each score scaled by its median and 99th percentile on that share. ``--term knn`` puts the
position-free nearest-neighbour score of ``teacher_features.py`` (a bank of 10,000 standardised,
2x2-pooled patches) in the Gaussian's place, to ask the same of it.

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
from teacher_features import BANK_SIZE, build_teacher, features, load_images  # this folder: run as a script
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


class NearestPatches:
    """``teacher_features.py``'s nearest-neighbour score: each image's worst patch's distance to a
    bank of patches of the fitted images (standardised, 2x2-pooled)."""

    def __init__(self, fitted: torch.Tensor, grid: int, channels: int, seed: int = 0) -> None:
        del grid, channels  # position-free, every channel
        self.mean = fitted.mean((0, 2, 3), keepdim=True)
        self.std = fitted.std((0, 2, 3), keepdim=True) + 1e-6
        bank = self._rows(fitted).reshape(-1, fitted.shape[1])
        draw = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed + 1))
        self.bank = bank[draw[:BANK_SIZE]]

    def _rows(self, maps: torch.Tensor) -> torch.Tensor:
        pooled = functional.avg_pool2d((maps - self.mean) / self.std, 2)
        return pooled.permute(0, 2, 3, 1).reshape(len(maps), -1, maps.shape[1])

    def scores(self, maps: torch.Tensor) -> NDArray[np.float64]:
        return np.array([float(torch.cdist(rows, self.bank).amin(1).amax()) for rows in self._rows(maps)])


TERMS: dict[str, type[PositionalGaussian] | type[NearestPatches]] = {
    "gaussian": PositionalGaussian,
    "knn": NearestPatches,
}


def model_scores(model: Path, paths: list[Path]) -> NDArray[np.float64]:
    from inspectd.scorer import Model

    with tempfile.TemporaryDirectory(prefix="inspectd-screen-") as cache:
        scorer = Model(model, Path(cache))
        return np.array([scorer.score(path).score for path in paths])


def scaled(held: NDArray[np.float64], scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """Scores on the scale of held-out normals: their median is 0, their 99th percentile 1."""
    median, high = np.median(held), np.quantile(held, 0.99)
    return (scores - median) / (high - median)


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
    parser.add_argument(
        "--term",
        choices=sorted(TERMS),
        default="gaussian",
        help="the per-image score beside the model's: the Gaussian per position, or the nearest-"
        "neighbour patch score (default gaussian)",
    )
    parser.add_argument("--model", type=Path, metavar="DIR", help="an export to score and combine with")
    parser.add_argument(
        "--held-out",
        type=float,
        default=0.2,
        metavar="SHARE",
        help="with --model: the last SHARE of train/normal is kept out of a second Gaussian's fit and "
        "scales both scores for a per-image sum, as a daemon could apply it (default 0.2)",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    folders = [args.data / name for name in ("train/normal", "test/normal", "test/abnormal")]
    train, normal, abnormal = (load_images(folder, args.image_size) for folder in folders)
    network = build_teacher(args.teacher, "small", train)
    fitted, f_normal, f_abnormal = (features(network, images) for images in (train, normal, abnormal))
    term = TERMS[args.term]
    gaussian = term(fitted, args.grid, args.channels)
    g_normal, g_abnormal = gaussian.scores(f_normal), gaussian.scores(f_abnormal)
    report(f"{args.teacher}, {args.term}", g_normal, g_abnormal)
    if args.model is None:
        return 0
    tests = [list_images(folder) for folder in folders[1:]]
    m_normal, m_abnormal = (model_scores(args.model, paths) for paths in tests)
    report("the model", m_normal, m_abnormal)
    together = (rankdata(np.r_[g_normal, g_abnormal]) + rankdata(np.r_[m_normal, m_abnormal])) / 2
    report("mean of the two ranks (a screen)", together[: len(g_normal)], together[len(g_normal) :])
    agree = spearmanr(g_normal, m_normal).statistic
    print(f"rank correlation of the two scores on the good test images: {agree:.2f}")
    cut = len(train) - max(1, round(args.held_out * len(train)))
    part = term(fitted[:cut], args.grid, args.channels)
    g_held = part.scores(fitted[cut:])
    m_held = model_scores(args.model, list_images(folders[0])[cut:])
    report(f"{args.teacher}, {args.term} on {cut} normals", part.scores(f_normal), part.scores(f_abnormal))
    summed = [
        scaled(g_held, part.scores(maps)) + scaled(m_held, scores)
        for maps, scores in ((f_normal, m_normal), (f_abnormal, m_abnormal))
    ]
    report("sum on the held-out normals' scale", *summed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
