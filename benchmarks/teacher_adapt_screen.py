"""Does adapting the frozen Lite teacher to the user's normals help? A screen, in minutes.

The offline teacher is EfficientNet-Lite2 with its ImageNet weights, frozen. Its features, not the
student, bound what the model can tell apart (README, Accuracy: three uses of them land at about
0.95 / 0.13 on ELPV mono). CutPaste (Li et al., CVPR 2021) adapts an ImageNet backbone to one kind
of part with a self-supervised task on the normal images alone: tell an image from the same image
with a patch of itself pasted elsewhere ("cutpaste") or with a thin, long, rotated sliver pasted
("scar", crack-like). This screen fine-tunes the Lite2 backbone (through the stride-16 stage the
teacher reads, batch norms kept at their ImageNet statistics) on that three-way task and rates the
teacher's features before and after with ``teacher_features.knn_auroc`` (the nearest-neighbour
rating used for every teacher screen), at a few points along the way.

    python benchmarks/elpv.py --cell-type mono --seed 1 --out /tmp/elpv-mono --split-only
    python benchmarks/teacher_adapt_screen.py --data /tmp/elpv-mono --steps 150 --rate-every 50
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from teacher_features import knn_auroc, load_split  # this folder: run as a script
from torch import nn
from torch.nn import functional

from training.lite import lite_weights, tf_scale
from training.lite_teacher import LiteFeatures


def cutpaste(image: np.ndarray, rng: np.random.Generator, *, scar: bool) -> np.ndarray:
    """``image`` (H, W, 3) in [0, 1] with a patch of itself pasted elsewhere: a rectangle of 2-15 %
    of the area (aspect 0.3-3.3), or a scar 2-16 px wide and 10-25 % of the side long, rotated."""
    h, w, _ = image.shape
    out = image.copy()
    if scar:
        pw, ph = int(rng.integers(2, 17)), int(rng.integers(h // 10, h // 4))
    else:
        area = rng.uniform(0.02, 0.15) * h * w
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
        pw = max(2, min(w - 1, round(math.sqrt(area * aspect))))
        ph = max(2, min(h - 1, round(math.sqrt(area / aspect))))
    y, x = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    patch = image[y : y + ph, x : x + pw] * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)
    mask = np.ones((ph, pw), dtype=bool)
    if scar:  # rotate patch and mask together by a random angle
        angle = float(rng.uniform(-45, 45))
        patch_t = torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[None].float()
        mask_t = torch.from_numpy(mask)[None, None].float()
        side = math.ceil(math.hypot(ph, pw))
        pad = ((side - pw) // 2, side - pw - (side - pw) // 2, (side - ph) // 2, side - ph - (side - ph) // 2)
        patch_t, mask_t = functional.pad(patch_t, pad), functional.pad(mask_t, pad)
        theta = torch.tensor(
            [
                [math.cos(math.radians(angle)), -math.sin(math.radians(angle)), 0.0],
                [math.sin(math.radians(angle)), math.cos(math.radians(angle)), 0.0],
            ]
        )[None]
        grid = functional.affine_grid(theta, [1, 1, side, side], align_corners=False)
        patch = functional.grid_sample(patch_t, grid, align_corners=False)[0].permute(1, 2, 0).numpy()
        mask = functional.grid_sample(mask_t, grid, align_corners=False)[0, 0].numpy() > 0.5
        ph = pw = min(side, h - 1, w - 1)
        patch, mask = patch[:ph, :pw], mask[:ph, :pw]
    ty, tx = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    region = out[ty : ty + ph, tx : tx + pw]
    region[mask] = np.clip(patch[mask], 0.0, 1.0)
    return out


class Adapter(nn.Module):
    """The teacher's backbone with a three-way head on its stride-16 features, pooled."""

    def __init__(self, teacher: LiteFeatures) -> None:
        super().__init__()
        self.teacher = teacher
        channels = teacher.body.feature_info.channels()[-1]  # type: ignore[union-attr, operator]
        self.head = nn.Sequential(nn.Linear(channels, 128), nn.ReLU(), nn.Linear(128, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = functional.interpolate(tf_scale(images), scale_factor=2.0, mode="bilinear", align_corners=False)
        last = self.teacher.body(x)[-1]
        return self.head(last.mean((2, 3)))


def batch_of(train: torch.Tensor, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` images, a third each of normal, cutpaste and scar (labels 0, 1, 2)."""
    picks = rng.integers(0, len(train), size)
    images, labels = [], []
    for index, pick in enumerate(picks):
        label = index % 3
        image = train[pick].permute(1, 2, 0).numpy()
        if rng.random() < 0.5:
            image = image[:, ::-1]
        if label:
            image = cutpaste(image, rng, scar=label == 2)
        images.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        labels.append(label)
    return torch.stack(images).float(), torch.tensor(labels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="train/normal, test/normal, test/abnormal")
    parser.add_argument("--variant", default="lite2")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--rate-every", type=int, default=50, help="rate the features every N steps")
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train, normal, abnormal = load_split(args.data, args.image_size)
    teacher = LiteFeatures(lite_weights(args.variant))
    model = Adapter(teacher)
    for p in teacher.body.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(
        [
            {"params": teacher.body.parameters(), "lr": args.learning_rate},
            {"params": model.head.parameters(), "lr": 10 * args.learning_rate},
        ],
        weight_decay=1e-5,
    )

    def rate(step: int) -> None:
        started = time.monotonic()
        score, rank = knn_auroc(teacher, train, normal, abnormal)
        took = time.monotonic() - started
        print(f"step {step}: kNN AUROC {score:.3f}, effective rank {rank:.1f}, {took:.0f} s", flush=True)

    rate(0)
    started, correct, seen = time.monotonic(), 0, 0
    for step in range(1, args.steps + 1):
        images, labels = batch_of(train, args.batch, rng)
        model.head.train()  # the backbone stays in eval mode (LiteFeatures.train): ImageNet batch statistics
        logits = model(images)
        loss = functional.cross_entropy(logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
        if step % 10 == 0:
            print(
                f"step {step}: loss {loss.item():.3f}, accuracy {correct / seen:.2f}, "
                f"{(time.monotonic() - started) / step:.2f} s/step",
                flush=True,
            )
            correct = seen = 0
        if step % args.rate_every == 0:
            rate(step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
