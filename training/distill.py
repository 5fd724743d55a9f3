"""Distil anomalib's PDN teacher from pretrained EfficientNet-Lite features, offline.

EfficientAD's teacher is a small patch description network (PDN) trained once to reproduce the
features of an ImageNet network on ImageNet images; anomalib downloads the result. This does the
same with ``training.lite_teacher.LiteFeatures`` as the source network and whatever natural images
are at hand (scikit-image's photographs, wallpaper and texture packages, the user's own images),
following the paper's recipe: the source network sees the image at twice the PDN's input size,
targets are standardised per channel, the loss is the mean squared error, Adam at 1e-4 with weight
decay 1e-5. The paper runs 60,000 steps of 16 images on a GPU; a CPU affords a fraction of that
(README, Accuracy says what it buys), so random crops at random scales, mirrored, with one image in
ten in grey, make the most of few photographs.

    python -m training.distill --images DIR [--images DIR ...] --steps N --output FILE.pth

``--device cuda`` runs it on a GPU (the paper's budget in minutes; a one-off run, never tests or
CI), ``--init FILE.pth`` goes on from an earlier run's weights. It writes the PDN state dict (the
format anomalib's ``pretrained_teacher_small.pth`` has, loadable by ``--teacher PATH``) and
``FILE.json`` with its provenance: source network and weights package, image folders and counts,
steps, batch, crop size, the final loss, seed and the file's sha256.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from inspectd.hashing import sha256_of
from training.errors import TrainingError
from training.images import list_images
from training.lite import VARIANTS, lite_weights
from training.lite_teacher import OUT_CHANNELS, LiteFeatures
from training.penalty import source_photos
from training.teacher import STATE_DICT_ERRORS, without_subnormals

MIN_SIDE = 64  # smaller images teach nothing at the PDN's 33-pixel receptive field
KEEP_SIDE = 384  # images are kept in memory with at most this short side (thousands fit in 2 GB)
GRAY_SHARE = 0.1  # the paper's RandomGrayscale(0.1), applied to both networks' input
STATS_IMAGES = 64  # images for the target channels' mean and std


@dataclass(frozen=True)
class DistillOptions:
    image_dirs: tuple[Path, ...]
    steps: int
    output: Path
    variant: str = "lite2"
    model_size: str = "small"
    batch: int = 16
    crop: int = 256  # PDN input side; the source network sees twice that
    lr: float = 1e-4
    weight_decay: float = 1e-5
    seed: int = 0
    max_minutes: float | None = None
    threads: int | None = None
    init: Path | None = None  # a PDN state dict to go on from (a run cut short by its time)
    device: str = "cpu"  # "cuda" for the paper's budget: the run is one-off, never in tests or CI


def natural_images(folders: Sequence[Path]) -> list[Path]:
    """Every image in the folders (recursively) plus scikit-image's photographs."""
    found = [*source_photos()]
    for folder in folders:
        if not folder.is_dir():
            raise TrainingError(f"--images {folder} is not a folder")
        found += list_images(folder)
    return sorted(set(found))


def load_rgb(path: Path) -> Image.Image | None:
    """The image in RGB, its short side brought down to ``KEEP_SIDE``; None when unusable."""
    try:
        with Image.open(path) as opened:
            opened.draft("RGB", (KEEP_SIDE, KEEP_SIDE))  # JPEG: decode at a reduced scale
            image = opened.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if min(image.size) < MIN_SIDE:
        return None
    scale = KEEP_SIDE / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BOX)
    return image


def random_crops(images: list[Image.Image], side: int, rng: np.random.Generator) -> Iterator[torch.Tensor]:
    """Endless square crops of random position and scale (a quarter to all of the short side),
    resized to ``side``, mirrored half the time, grey one time in ten."""
    while True:
        image = images[int(rng.integers(len(images)))]
        short = min(image.size)
        crop = max(MIN_SIDE, int(short * rng.uniform(0.25, 1.0)))
        left, top = (
            int(rng.integers(0, image.width - crop + 1)),
            int(rng.integers(0, image.height - crop + 1)),
        )
        patch = image.crop((left, top, left + crop, top + crop))
        if rng.random() < 0.5:
            patch = ImageOps.mirror(patch)
        if rng.random() < GRAY_SHARE:
            patch = ImageOps.grayscale(patch).convert("RGB")
        patch = patch.resize((side, side), Image.Resampling.BILINEAR)
        yield torch.from_numpy(np.asarray(patch, dtype=np.float32) / 255.0).permute(2, 0, 1)


def batches(crops: Iterator[torch.Tensor], batch: int) -> Iterator[torch.Tensor]:
    while True:
        yield torch.stack([next(crops) for _ in range(batch)])


def prefetched(stream: Iterator[torch.Tensor], device: torch.device) -> Iterator[torch.Tensor]:
    """``stream``'s batches on ``device``, the next one cut on a worker thread meanwhile (on a
    GPU the crops, not the networks, would otherwise set the pace)."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        pending = worker.submit(next, stream)
        while True:
            batch = pending.result()
            pending = worker.submit(next, stream)
            yield batch.to(device, non_blocking=True)


@torch.no_grad()
def target_stats(
    source: LiteFeatures, stream: Iterator[torch.Tensor], n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the source features over ``n`` images, for standardised targets.

    ``LiteFeatures`` upsamples its input by 2 itself, exactly as the frozen teacher does at
    inference, so the PDN learns the features the same 256-pixel image gets there."""
    device = next(source.buffers()).device
    sums = torch.zeros(OUT_CHANNELS, dtype=torch.float64, device=device)
    squares = torch.zeros(OUT_CHANNELS, dtype=torch.float64, device=device)
    cells = 0
    while cells == 0 or cells < n * 64 * 64:
        y = source(next(stream)).double()
        sums += y.sum((0, 2, 3))
        squares += (y**2).sum((0, 2, 3))
        cells += y.shape[0] * y.shape[2] * y.shape[3]
    mean = sums / cells
    std = (squares / cells - mean**2).clamp_min(1e-12).sqrt()
    return mean.float()[None, :, None, None], std.float()[None, :, None, None]


def checked_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise TrainingError(f"--device {name}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"--device {name}: this PyTorch sees no CUDA GPU; use --device cpu")
    return device


def initial_weights(options: DistillOptions) -> dict[str, torch.Tensor] | None:
    """The ``--init`` state dict, checked against the PDN it is meant for."""
    if options.init is None:
        return None
    try:
        state = torch.load(options.init, map_location="cpu", weights_only=True)
        pdn(options.model_size).load_state_dict(state)
    except STATE_DICT_ERRORS as exc:
        first = str(exc).strip().splitlines()[0]
        raise TrainingError(
            f"--init {options.init} is not a PDN-{options.model_size} state dict: {first}"
        ) from exc
    return dict(state)


def pdn(model_size: str) -> torch.nn.Module:
    from anomalib.models.image.efficient_ad.torch_model import (
        MediumPatchDescriptionNetwork,
        SmallPatchDescriptionNetwork,
    )

    network = SmallPatchDescriptionNetwork if model_size == "small" else MediumPatchDescriptionNetwork
    return network(out_channels=OUT_CHANNELS, padding=True)  # 64x64 at 256 px, like the targets


def distill(options: DistillOptions, log: Any = print) -> dict[str, Any]:
    if options.variant not in VARIANTS:
        raise TrainingError(f"--variant must be one of {', '.join(VARIANTS)}")
    device = checked_device(options.device)
    start = initial_weights(options)  # both checked before minutes go into loading images
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    paths = natural_images(options.image_dirs)
    images = [image for path in paths if (image := load_rgb(path)) is not None]
    if len(images) < 5:
        raise TrainingError(f"only {len(images)} usable natural images; pass --images DIR with more")
    weights = lite_weights(options.variant)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick its kernels
    source = LiteFeatures(weights).to(device)
    stream = prefetched(batches(random_crops(images, options.crop, rng), options.batch), device)
    mean, std = target_stats(source, stream, STATS_IMAGES)
    network = pdn(options.model_size)
    if start is not None:
        network.load_state_dict(start)
    network = network.to(device).train()
    optimizer = torch.optim.Adam(network.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    log(f"distill: {len(images)} images, {options.steps} steps of {options.batch}, crop {options.crop}")
    started = time.monotonic()
    losses: list[float] = []
    step = 0
    for step in range(1, options.steps + 1):
        small = next(stream)
        with torch.no_grad():
            target = (source(small) - mean) / std
        loss = torch.mean((network(small) - target) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        elapsed = time.monotonic() - started
        if step % 25 == 0 or step == options.steps:
            recent = sum(losses[-25:]) / len(losses[-25:])
            log(f"distill: step {step}/{options.steps}  loss {recent:.4f}  {elapsed / step:.2f} s/step")
        if options.max_minutes is not None and elapsed > options.max_minutes * 60:
            log(f"distill: --max-minutes reached after {step} steps")
            break
    options.output.parent.mkdir(parents=True, exist_ok=True)
    state, subnormals = without_subnormals({k: v.cpu() for k, v in network.state_dict().items()})
    torch.save(state, options.output)
    provenance = {
        "kind": "distilled",
        "network": f"anomalib PDN ({options.model_size}, {OUT_CHANNELS} channels)",
        "source_network": weights.provenance(),
        "target": "LiteFeatures: strides 8+16 at 2x input, 3x3 patches pooled to 384 (training.lite_teacher)",
        "images": {
            "count": len(images),
            "folders": [str(p) for p in options.image_dirs],
            "scikit_image_photos": len(source_photos()),
        },
        "steps": step,
        "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 5),
        "first_loss": round(sum(losses[:10]) / len(losses[:10]), 5),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "subnormal_weights_zeroed": subnormals,
        "options": {k: _plain(v) for k, v in asdict(options).items()},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "file": options.output.name,
        "sha256": sha256_of(options.output, follow_links=True),
    }
    options.output.with_suffix(".json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    return provenance


def _plain(value: Any) -> Any:
    """An option as JSON has it: paths as text, folders as a list of text."""
    if isinstance(value, tuple):
        return [str(item) for item in value]
    return str(value) if isinstance(value, Path) else value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.distill",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--images", type=Path, action="append", default=[], metavar="DIR")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True, metavar="FILE.pth")
    parser.add_argument("--variant", choices=VARIANTS, default="lite2")
    parser.add_argument("--model-size", choices=("small", "medium"), default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate (the paper: 1e-4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--init", type=Path, metavar="FILE.pth", help="go on from this PDN state dict")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args(argv)
    options = DistillOptions(
        image_dirs=tuple(args.images),
        steps=args.steps,
        output=args.output,
        variant=args.variant,
        model_size=args.model_size,
        batch=args.batch,
        crop=args.crop,
        lr=args.lr,
        seed=args.seed,
        max_minutes=args.max_minutes,
        threads=args.threads,
        init=args.init,
        device=args.device,
    )
    try:
        result = distill(options, log=lambda text: print(text, file=sys.stderr, flush=True))
    except TrainingError as exc:
        print(f"distill: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: result[k] for k in ("steps", "final_loss", "sha256")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
