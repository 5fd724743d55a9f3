"""What each teacher (and student width) costs the daemon: inference ms/image of the exported model.

A step of training, not the export, decides accuracy; this script answers the other half of the
teacher question: how fast the daemon scores with it. For each ``--teacher`` it trains a throwaway
model for ``--steps`` steps on synthetic surfaces (the weights do not matter for speed, the graph
does), exports it as ``inspectd train`` does, then times every export in turns on the same
pre-decoded images through the daemon's own scorer (``inspectd.scorer.Model``, f32 and, where the
CPU has it, bf16). With ``--student-width`` given more than once each teacher is exported with
each width. The first teacher (with the first width) is the baseline; the others are printed as
ratios to it.

    python benchmarks/teacher_speed.py --teacher random --teacher lite0 --teacher lite2
    python benchmarks/teacher_speed.py --teacher lite2 --student-width full --student-width half
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from inspectd.scorer import Model, cpu_precisions
from training.fit import train
from training.options import TrainOptions
from training.settings import DEFAULT_IMAGE_SIZE, STUDENT_WIDTHS
from training.synthetic import make_surface_set


def export_for(variant: tuple[str, str], data: Path, root: Path, args: argparse.Namespace) -> Path:
    teacher, width = variant
    steps, image_size, map_ = args.steps, args.image_size, args.anomaly_map
    out = root / f"model-{teacher}-{width}-{map_}"
    train(
        TrainOptions(
            data,
            out,
            max_steps=steps,
            teacher=teacher,
            student_width=width,
            image_size=image_size,
            anomaly_map=map_,
            checkpoint_every=0,
        )
    )
    return out


def timed(model: Model, paths: list[Path]) -> float:
    """Median inference ms/image as the daemon's scorer records it (decoding excluded)."""
    return statistics.median(model.score(path).inference_ms for path in paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--teacher", action="append", help="as inspectd train --teacher; the first is the baseline"
    )
    parser.add_argument(
        "--student-width", action="append", choices=STUDENT_WIDTHS, help="as inspectd train (default: full)"
    )
    parser.add_argument("--steps", type=int, default=2, help="training steps of each throwaway model")
    parser.add_argument("--images", type=int, default=12, help="images timed per model and round")
    parser.add_argument("--rounds", type=int, default=3, help="turns through all models (noise evens out)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--anomaly-map", default="student-teacher", choices=("student-teacher", "both"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    widths = args.student_width or [STUDENT_WIDTHS[0]]
    variants = {
        f"{t}/{w}" if len(widths) > 1 else t: (t, w)
        for t in args.teacher or ["random", "lite2"]
        for w in widths
    }
    teachers = list(variants)
    with tempfile.TemporaryDirectory(prefix="inspectd-teacher-speed-") as tmp:
        root = Path(tmp)
        normal, _ = make_surface_set(root / "data", max(args.images, 8), 1, size=args.image_size, seed=0)
        paths = sorted(normal.glob("*.png"))[: args.images]
        exports = {t: export_for(variants[t], normal, root, args) for t in teachers}
        figures: dict[str, dict[str, float]] = {}
        for precision in cpu_precisions():  # f32, and bf16 where the CPU has it
            models = {
                t: Model(e, root / "ov-cache" / precision / t, precision=precision)
                for t, e in exports.items()
            }
            samples: dict[str, list[float]] = {t: [] for t in teachers}
            for _ in range(args.rounds):
                for teacher, model in models.items():
                    timed(model, paths[:2])  # warm-up after the other models ran
                    samples[teacher].append(timed(model, paths))
            figures[precision] = {t: statistics.median(v) for t, v in samples.items()}
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    base = teachers[0]
    for precision, by_teacher in figures.items():
        for teacher, ms in by_teacher.items():
            ratio = ms / by_teacher[base]
            print(f"{precision}  {teacher:>8}: {ms:7.1f} ms/image  {ratio:.2f}x {base}")
    print(f"({args.image_size} px, {args.anomaly_map} map; {time.strftime('%Y-%m-%d')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
