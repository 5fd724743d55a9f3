"""How much an EfficientAD teacher's features can tell good parts from defects, in minutes.

EfficientAD's student learns to copy the teacher on normal images, so the model can only flag what
the teacher's features tell apart. This script skips the 30-minute fit and asks the features
directly: a nearest-neighbour score on the teacher's output (PatchCore-style: a bank of 10,000
patch features from the normal training images, image score = the test image's worst patch), then
image AUROC. The first ``--teacher`` is the same-run baseline; the others are printed as ratios.

Teachers: ``random:SEED`` (what ``inspectd train --teacher random`` uses), ``pca:SEED`` (an
experiment: each layer's filters are the principal components of its input patches on the normal
training images, both signs, so the features span the data instead of a handful of directions),
any other ``inspectd train --teacher`` choice (``lite0``, ``lite2``, ``distilled``, ``pretrained``)
or the PATH of a teacher state dict (``pretrained_teacher_small.pth``). Variants of the frozen Lite
teacher's feature map, to screen before changing ``training.lite_teacher``:

- ``lite2:stages=1,2,3,scale=3``: which timm stages (1, 2, 3: strides 4, 8, 16) and how far the
  image is enlarged before the backbone (today 2, 3); maps finer than the 64x64 grid are
  average-pooled to it, coarser ones upsampled;
- ``lite2:patch=1``: each position described by its own features (``patch=5``: its 5x5
  neighbourhood) instead of its 3x3 neighbourhood, before the channel pooling;
- ``lite2:pca=384``: the 3x3 neighbourhoods of both layers projected on their first principal
  components on the training normals, instead of the paper's channel pooling;
- ``lite3=PATH`` (and ``lite3=PATH:patch=5`` ...): a Lite network from a state dict file instead of
  an installed package, e.g. one ``benchmarks/tflite_lite.py`` converted from a TFLite file.

    python benchmarks/elpv.py --cell-type mono --out /tmp/elpv-mono --split-only
    python benchmarks/teacher_features.py --data /tmp/elpv-mono --teacher random:0 --teacher pca:0

``--data`` is any folder with ``train/normal``, ``test/normal`` and ``test/abnormal``. ``--save DIR``
also writes each teacher as ``DIR/<kind>-<seed>.pth``, for a full run with
``benchmarks/elpv.py --teacher DIR/pca-0.pth``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional

from inspectd.hashing import sha256_of
from training.images import list_images
from training.lite import LiteWeights, lite_features, lite_weights, tf_scale
from training.lite_teacher import FrozenLiteTeacher, LiteFeatures
from training.metrics import auroc
from training.model import teacher_network
from training.settings import DEFAULT_IMAGE_SIZE
from training.teacher import Teacher, apply_teacher, resolve_teacher

BANK_SIZE = 10_000
PCA_IMAGES = 64
PCA_PATCHES = 60_000


def load_images(folder: Path, size: int) -> torch.Tensor:
    arrays = [
        np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        for p in list_images(folder)
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def load_split(data: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``data``'s train/normal, test/normal and test/abnormal images at ``size``; says how many."""
    train, normal, abnormal = (
        load_images(data / name, size) for name in ("train/normal", "test/normal", "test/abnormal")
    )
    print(f"{data}: train {len(train)}, test normal {len(normal)}, test abnormal {len(abnormal)}", flush=True)
    return train, normal, abnormal


def build_teacher(spec: str, model_size: str, normals: torch.Tensor) -> torch.nn.Module:
    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel, EfficientAdModelSize

    size = EfficientAdModelSize(model_size)
    network: torch.nn.Module = EfficientAdModel(teacher_out_channels=384, model_size=size).teacher
    kind, _, seed_text = spec.partition(":")
    if kind in ("random", "pca"):
        seed = int(seed_text or 0)
        apply_teacher(network, Teacher(spec, None, seed))
        if kind == "pca":
            fit_pca_layers(network, normals, seed)
    elif ":" in spec:
        network = lite_variant(spec, normals)
    elif "=" in spec:
        network = FrozenLiteTeacher(weights_of(spec))
    else:
        network = teacher_network(resolve_teacher(spec, model_size), model_size)
    return network.eval()


def lite_variant(spec: str, normals: torch.Tensor) -> torch.nn.Module:
    """``VARIANT:key=value,...`` (see the module doc): the frozen Lite features, changed."""
    variant, _, text = spec.partition(":")
    options: dict[str, str] = {}
    key = ""
    for part in text.split(","):  # "stages=1,2,3,scale=3": a bare number continues the last key
        if "=" in part:
            key, _, value = part.partition("=")
            options[key] = value
        elif key:
            options[key] += "," + part
        else:
            raise SystemExit(f"--teacher {spec}: expected VARIANT:key=value,... (see --help)")
    unknown = set(options) - {"pca", "stages", "scale", "patch"}
    if unknown:
        raise SystemExit(f"--teacher {spec}: unknown option(s) {', '.join(sorted(unknown))}")
    if "pca" in options and len(options) > 1:
        raise SystemExit(f"--teacher {spec}: pca takes today's stages and scale; give it alone")
    weights = weights_of(variant)
    if "pca" in options:
        return LitePca(weights, int(options["pca"]), normals)
    stages = tuple(int(s) for s in options.get("stages", "2,3").split(","))
    return LiteVariant(weights, stages, float(options.get("scale", "2")), int(options.get("patch", "3")))


def weights_of(name: str) -> LiteWeights:
    """``lite2`` (the installed package) or ``lite3=PATH`` (a state dict such as
    ``benchmarks/tflite_lite.py`` writes, under timm's names)."""
    variant, converted, path = name.partition("=")
    if not converted:
        return lite_weights(variant)
    file = Path(path)
    return LiteWeights(variant, "file", "", file, sha256_of(file))


GRID = 64  # the 256-px teacher's output side


class LiteVariant(LiteFeatures):
    def __init__(self, weights: LiteWeights, stages: tuple[int, ...], scale: float, patch: int) -> None:
        super().__init__(weights, stages, patch)
        self.scale = scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(())
        for index, maps in enumerate(_backbone(self.body, images, self.scale)):
            z = functional.conv2d(maps, getattr(self, f"project{index}"), padding=self.padding)
            out = out + _on_grid(z)
        return out


class LitePca(nn.Module):
    """Both layers' 3x3 neighbourhoods (unpooled), projected on their principal components."""

    def __init__(self, weights: LiteWeights, dims: int, normals: torch.Tensor) -> None:
        super().__init__()
        self.body = lite_features(weights, (2, 3))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            rows = []
            for start in range(0, len(normals), 16):
                maps = self.neighbourhoods(normals[start : start + 16])
                flat = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
                rows.append(flat[torch.randperm(len(flat), generator=generator)[:2000]])
            sample = torch.cat(rows).double()
        mean = sample.mean(0)
        _, vectors = torch.linalg.eigh((sample - mean).T @ (sample - mean))
        self.mean = mean.float()
        self.components = vectors.flip(1)[:, :dims].T.float()

    def neighbourhoods(self, images: torch.Tensor) -> torch.Tensor:
        unfolded = [
            _on_grid(functional.unfold(m, 3, padding=1).reshape(len(m), -1, *m.shape[-2:]))
            for m in _backbone(self.body, images, 2.0)
        ]
        return torch.cat(unfolded, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = self.neighbourhoods(images)
        n, k, h, w = maps.shape
        projected = (maps.permute(0, 2, 3, 1).reshape(-1, k) - self.mean) @ self.components.T
        return projected.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def _backbone(body: nn.Module, images: torch.Tensor, scale: float) -> list[torch.Tensor]:
    """The backbone's feature maps of images in [0, 1], enlarged ``scale`` times first."""
    x = functional.interpolate(tf_scale(images), scale_factor=scale, mode="bilinear", align_corners=False)
    return list(body(x))


def _on_grid(maps: torch.Tensor) -> torch.Tensor:
    if maps.shape[-1] > GRID:
        return functional.adaptive_avg_pool2d(maps, GRID)
    if maps.shape[-1] < GRID:
        return functional.interpolate(maps, size=(GRID, GRID), mode="bilinear", align_corners=False)
    return maps


def fit_pca_layers(network: torch.nn.Module, normals: torch.Tensor, seed: int) -> None:
    """Layer by layer: filters = top principal components of the layer's input patches, with both
    signs before a ReLU (so no direction is cut in half), biases centring them on the mean patch."""
    from anomalib.models.image.efficient_ad.torch_model import imagenet_norm_batch

    generator = torch.Generator().manual_seed(seed)
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in network.modules() if isinstance(m, torch.nn.AvgPool2d)]
    pick = torch.randperm(len(normals), generator=generator)[:PCA_IMAGES]
    h = imagenet_norm_batch(normals[pick])
    with torch.no_grad():
        for index, conv in enumerate(convs):
            last = index == len(convs) - 1
            _set_pca_filters(conv, h, signed=not last, generator=generator)
            if not last:
                h = functional.relu(conv(h))
                if index < len(pools):
                    h = pools[index](h)


def _set_pca_filters(
    conv: torch.nn.Conv2d, h: torch.Tensor, *, signed: bool, generator: torch.Generator
) -> None:
    patches = functional.unfold(h, conv.kernel_size, padding=conv.padding)  # type: ignore[arg-type]
    patches = patches.permute(0, 2, 1).reshape(-1, patches.shape[1])
    patches = patches[torch.randperm(len(patches), generator=generator)[:PCA_PATCHES]].double()
    mean = patches.mean(0)
    centred = patches - mean
    eigenvalues, vectors = torch.linalg.eigh(centred.T @ centred / len(centred))
    eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)
    wanted = conv.out_channels // 2 if signed else conv.out_channels
    available = min(wanted, vectors.shape[1])
    filters = vectors[:, :available].T / eigenvalues[0].sqrt()
    if available < wanted:  # fewer input dimensions than filters: random mixtures of the components
        mix = torch.randn(wanted - available, available, generator=generator, dtype=torch.float64)
        filters = torch.cat([filters, (mix / mix.norm(dim=1, keepdim=True)) @ filters])
    if signed:
        filters = torch.cat([filters, -filters])
    conv.weight.data = filters.float().reshape(conv.weight.shape)
    if conv.bias is not None:
        conv.bias.data = -(filters @ mean).float()


def features(network: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([network(images[i : i + 16]) for i in range(0, len(images), 16)])


def effective_rank(maps: torch.Tensor) -> float:
    """exp(entropy) of the standardised channels' spectrum: how many directions the features use."""
    rows = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])[::37]
    rows = (rows - rows.mean(0)) / (rows.std(0) + 1e-8)
    energy = torch.linalg.svdvals(rows) ** 2
    p = energy / energy.sum()
    return float(torch.exp(-(p * torch.log(p + 1e-12)).sum()))


def knn_auroc(
    network: torch.nn.Module, train: torch.Tensor, normal: torch.Tensor, abnormal: torch.Tensor
) -> tuple[float, float]:
    fitted = features(network, train)
    mean = fitted.mean((0, 2, 3), keepdim=True)
    std = fitted.std((0, 2, 3), keepdim=True) + 1e-6

    def patch_rows(maps: torch.Tensor) -> torch.Tensor:  # standardised, 2x2-pooled, one row per patch
        pooled = functional.avg_pool2d((maps - mean) / std, 2)
        return pooled.permute(0, 2, 3, 1).reshape(len(maps), -1, maps.shape[1])

    bank = patch_rows(fitted).reshape(-1, fitted.shape[1])
    bank = bank[torch.randperm(len(bank), generator=torch.Generator().manual_seed(1))[:BANK_SIZE]]

    def scores(images: torch.Tensor) -> list[float]:
        return [
            float(torch.cdist(rows, bank).amin(1).amax()) for rows in patch_rows(features(network, images))
        ]

    return auroc(scores(normal), scores(abnormal)), effective_rank(fitted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="folder with train/normal, test/normal, test/abnormal"
    )
    parser.add_argument(
        "--teacher",
        action="append",
        help="random:SEED | pca:SEED | lite0 | lite2 | lite2:stages=2,3,scale=2 | lite2:pca=384 | "
        "lite3=PATH | distilled | PATH; repeat; the first is the "
        "baseline (default random:0, pca:0)",
    )
    parser.add_argument("--model-size", choices=("small", "medium"), default="small")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--save", type=Path, metavar="DIR", help="also write each teacher's state dict here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    train, normal, abnormal = load_split(args.data, args.image_size)
    specs = args.teacher or ["random:0", "pca:0"]
    baseline = 0.0
    for spec in specs:
        started = time.monotonic()
        network = build_teacher(spec, args.model_size, train)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            torch.save(network.state_dict(), args.save / f"{Path(spec).stem.replace(':', '-')}.pth")
        score, rank = knn_auroc(network, train, normal, abnormal)
        baseline = baseline or score
        print(
            f"{spec}: kNN AUROC {score:.3f} (ratio to {specs[0]}: {score / baseline:.2f}), "
            f"effective rank {rank:.1f} of 384, {time.monotonic() - started:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
