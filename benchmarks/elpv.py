"""Accuracy of ``inspectd train`` defaults on real images: the ELPV solar-cell EL data set.

ELPV (Deitsch et al., ``pip install elpv-dataset``; CC BY-NC-SA 4.0, so its images are exported
to ``--out`` at run time and never committed) holds 2,624 300x300 grayscale cells labelled with a
defect probability. Probability 0 is taken as normal and 1 as abnormal; 1/3 and 2/3 are left out
because their label is an annotator's doubt. One cell type per run (mono and poly look different).

Split, deterministic for a given ``--seed``: ``--test-normal-share`` of the normals plus every
abnormal cell go to ``test/``; the other normals to ``train/normal`` (``train()`` holds out 20 % of
those for its own calibration). The model never sees an abnormal cell before the test.

    python benchmarks/elpv.py --cell-type mono --out /tmp/elpv-mono [--max-steps N]

prints the figures and writes ``OUT/result.json``. ``--split-only`` stops after writing the images
(for ``benchmarks/teacher_features.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from inspectd.scorer import Model
from training.fit import train
from training.metrics import auroc, eer, evaluate_scores, rates_at
from training.options import TrainOptions
from training.score_scale import anomalib_clipped
from training.settings import (
    ANOMALY_MAPS,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MAX_MINUTES,
    DEFAULT_MAX_STEPS,
    MAP_SCALES,
    MODEL_SIZES,
    PENALTY_CROPS,
    STUDENT_WIDTHS,
)

NORMAL_PROB, ABNORMAL_PROB = 0.0, 1.0


def export_split(out: Path, cell_type: str, test_normal_share: float, seed: int) -> dict[str, int]:
    """Write train/normal, test/normal and test/abnormal PNG folders; return their sizes."""
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        sys.exit("this benchmark needs the ELPV images: pip install elpv-dataset")
    images, probs, types = load_dataset()
    chosen = types == cell_type
    normal = np.flatnonzero(chosen & (probs == NORMAL_PROB))
    abnormal = np.flatnonzero(chosen & (probs == ABNORMAL_PROB))
    order = np.random.default_rng(seed).permutation(normal)
    n_test = round(len(order) * test_normal_share)
    folders = {
        "train/normal": sorted(order[n_test:]),
        "test/normal": sorted(order[:n_test]),
        "test/abnormal": sorted(abnormal),
    }
    for name, indices in folders.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in indices:
            Image.fromarray(images[i]).save(folder / f"cell{i:04d}.png")
    return {name: len(indices) for name, indices in folders.items()}


def score_folder(model: Model, folder: Path) -> list[float]:
    return [model.score(path).score for path in sorted(folder.glob("*.png"))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} is not empty; choose a new --out folder")
    sizes = export_split(out, args.cell_type, args.test_normal_share, args.seed)
    print(f"split: {sizes}", flush=True)
    if args.split_only:
        return {"split": sizes}

    started = time.monotonic()
    card = train(
        TrainOptions(
            out / "train" / "normal",
            out / "model",
            max_steps=args.max_steps,
            teacher=args.teacher,
            seed=args.seed,
            max_minutes=args.max_minutes,
            image_size=args.image_size,
            model_size=args.model_size,
            student_width=args.student_width,
            learning_rate=args.learning_rate,
            anomaly_map=args.anomaly_map,
            map_scale=args.map_scale,
            penalty_crop=args.penalty_crop,
            imagenet_dir=args.imagenet_dir,
            keep_checkpoint=args.keep_checkpoint,
        )
    )
    train_minutes = (time.monotonic() - started) / 60

    with tempfile.TemporaryDirectory(prefix="inspectd-ov-cache-") as cache:
        model = Model(out / "model", Path(cache))
        started = time.monotonic()
        normal = score_folder(model, out / "test" / "normal")
        abnormal = score_folder(model, out / "test" / "abnormal")
        score_minutes = (time.monotonic() - started) / 60
    result = evaluate_scores(normal, abnormal, model.card.threshold)
    if args.report:
        _write_report(out, normal, abnormal)
    # same-run baseline: the same model's scores on anomalib's clipped scale
    clipped_normal = [anomalib_clipped(x) for x in normal]
    clipped_abnormal = [anomalib_clipped(x) for x in abnormal]
    eer_threshold = _eer_threshold(normal, abnormal)
    far_eer, frr_eer = rates_at(normal, abnormal, eer_threshold)
    figures: dict[str, Any] = {
        "data_set": f"ELPV {args.cell_type} cells (prob 0 normal, prob 1 abnormal)",
        "split": sizes,
        **result.to_dict(),
        "threshold_policy": getattr(model.card, "threshold_policy", "unknown"),
        "eer_threshold": eer_threshold,
        "far_at_eer_threshold": far_eer,
        "baseline_anomalib_clipped": {
            "auroc": auroc(clipped_normal, clipped_abnormal),
            "eer": eer(clipped_normal, clipped_abnormal),
            "zero_scores": sum(x == 0.0 for x in [*clipped_normal, *clipped_abnormal]),
        },
        "frr_at_eer_threshold": frr_eer,
        "teacher": model.card.teacher,
        "steps": card.steps,
        "image_size": args.image_size,
        "model_size": args.model_size,
        "student_width": args.student_width,
        "learning_rate": args.learning_rate,
        "anomaly_map": model.card.extra.get("anomaly_map"),
        "map_scale": model.card.extra.get("map_scale"),
        "penalty_crop": model.card.extra.get("penalty_crop"),
        "penalty_set": str(args.imagenet_dir) if args.imagenet_dir else "scikit-image photographs",
        "stopped_by": card.extra.get("stopped_by", "max-steps"),
        "train_images": card.train_images,
        "train_minutes": round(train_minutes, 1),
        "card_train_seconds": card.extra.get("train_seconds"),
        "score_minutes": round(score_minutes, 1),
        "normal_scores": normal,
        "abnormal_scores": abnormal,
    }
    (out / "result.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def _write_report(out: Path, normal: list[float], abnormal: list[float]) -> None:
    """The ``inspectd evaluate --report`` page for these scores, without scoring twice."""
    from training.evaluate import score_folders
    from training.report import write_report

    scores = dict(
        zip(
            [
                *sorted((out / "test" / "normal").glob("*.png")),
                *sorted((out / "test" / "abnormal").glob("*.png")),
            ],
            [*normal, *abnormal],
            strict=True,
        )
    )
    scored = score_folders(
        out / "model",
        out / "test" / "normal",
        out / "test" / "abnormal",
        scorer=lambda _xml, paths: [scores[p] for p in paths],
    )
    print(f"report: {write_report(out / 'report', scored)}")


def _eer_threshold(normal: list[float], abnormal: list[float]) -> float:
    """The candidate threshold where FAR and FRR are closest (a real cut, unlike the interpolated EER)."""
    candidates = np.unique(np.concatenate([normal, abnormal]))
    gaps = [abs(np.subtract(*rates_at(normal, abnormal, float(t)))) for t in candidates]
    return float(candidates[int(np.argmin(gaps))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cell-type", choices=("mono", "poly"), default="mono")
    parser.add_argument("--out", type=Path, required=True, help="empty folder for images, model, result.json")
    parser.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS)
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=DEFAULT_MAX_MINUTES,
        help="wall-clock cap on training, as for `inspectd train` (default %(default)s)",
    )
    parser.add_argument("--model-size", choices=MODEL_SIZES, default="small")
    parser.add_argument(
        "--student-width", choices=STUDENT_WIDTHS, default=STUDENT_WIDTHS[0], help="as inspectd train"
    )
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="side in pixels")
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument("--teacher", default="auto", help="as inspectd train --teacher")
    parser.add_argument(
        "--anomaly-map", choices=ANOMALY_MAPS, default=ANOMALY_MAPS[0], help="as inspectd train --anomaly-map"
    )
    parser.add_argument(
        "--map-scale", choices=MAP_SCALES, default=MAP_SCALES[0], help="as inspectd train --map-scale"
    )
    parser.add_argument(
        "--penalty-crop",
        choices=PENALTY_CROPS,
        default=PENALTY_CROPS[0],
        help="as inspectd train --penalty-crop",
    )
    parser.add_argument(
        "--imagenet-dir", type=Path, help="as inspectd train --imagenet-dir (the penalty image set)"
    )
    parser.add_argument("--test-normal-share", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true", help="also write OUT/report/index.html")
    parser.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep OUT/model/checkpoints/last.ckpt (for benchmarks/residual_screen.py)",
    )
    parser.add_argument("--split-only", action="store_true", help="write the image folders and stop")
    args = parser.parse_args(argv)
    f = run(args)
    if args.split_only:
        return 0
    base = f["baseline_anomalib_clipped"]
    print(
        "\n".join(
            [
                f"ELPV {args.cell_type}: {f['split']}",
                f"teacher {f['teacher']}, {f['steps']} steps ({f['stopped_by']}), "
                f"{f['train_minutes']} min training",
                f"AUROC {f['auroc']:.3f}  EER {f['eer']:.3f}",
                f"baseline, same model on anomalib's clipped score scale: AUROC {base['auroc']:.3f} "
                f"EER {base['eer']:.3f} ({base['zero_scores']} images score exactly 0); "
                f"AUROC ratio ours/baseline {f['auroc'] / base['auroc']:.2f}",
                f"at model threshold {f['threshold']:.3f} ({f['threshold_policy']}): "
                f"FAR {f['far']:.3f}  FRR {f['frr']:.3f}",
                f"at EER threshold {f['eer_threshold']:.3f}: "
                f"FAR {f['far_at_eer_threshold']:.3f}  FRR {f['frr_at_eer_threshold']:.3f}",
            ]
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
