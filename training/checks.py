"""Checks on train()'s options and output folder, run before any image is read or model built."""

from __future__ import annotations

from pathlib import Path

from inspectd.export import CHECKPOINTS, LAST_CHECKPOINT, XML_IN_EXPORT
from training.errors import TrainingError
from training.settings import (
    ANOMALY_MAPS,
    EXPORT_PRECISIONS,
    MAP_SCALES,
    MODEL_SIZES,
    PENALTY_CROPS,
    STUDENT_WIDTHS,
)

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 256, 1024  # below 256 the autoencoder's 8x8 bottleneck conv fails
PRECISIONS = ("bf16-mixed", "32-true")  # Lightning's names for --train-precision bf16 | fp32
OPSETS = range(14, 21)  # what torch's ONNX exporter and OpenVINO's reader both handle here


def checkpoint_to_resume(output: Path) -> Path:
    checkpoint = output / CHECKPOINTS / LAST_CHECKPOINT
    if not checkpoint.is_file():
        raise TrainingError(
            f"--resume: no checkpoint at {checkpoint}; checkpoints are written every "
            "--checkpoint-every steps and kept when a run stops early or is interrupted"
        )
    return checkpoint


def check_run_options(
    max_minutes: float | None, checkpoint_every: int, export_precision: str, opset: int
) -> None:
    if max_minutes is not None and not max_minutes > 0:
        raise TrainingError(f"--max-minutes must be more than 0, got {max_minutes}")
    if checkpoint_every < 0:
        raise TrainingError(f"--checkpoint-every must be 0 (off) or more, got {checkpoint_every}")
    if export_precision not in EXPORT_PRECISIONS:
        raise TrainingError(
            f"--precision must be one of {', '.join(EXPORT_PRECISIONS)}, got {export_precision!r}"
        )
    if opset not in OPSETS:
        raise TrainingError(f"--opset must be between {OPSETS[0]} and {OPSETS[-1]}, got {opset}")


def check_options(
    max_steps: int,
    model_size: str,
    image_size: int,
    precision: str,
    learning_rate: float,
    *,
    anomaly_map: str = ANOMALY_MAPS[0],
    map_scale: str = MAP_SCALES[0],
    penalty_crop: str = PENALTY_CROPS[0],
    student_width: str = STUDENT_WIDTHS[0],
) -> None:
    choices = {
        "--anomaly-map": (anomaly_map, ANOMALY_MAPS),
        "--map-scale": (map_scale, MAP_SCALES),
        "--penalty-crop": (penalty_crop, PENALTY_CROPS),
        "--model-size": (model_size, MODEL_SIZES),
        "--student-width": (student_width, STUDENT_WIDTHS),
    }
    for flag, (value, allowed) in choices.items():
        if value not in allowed:
            raise TrainingError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
    if student_width == "half" and model_size != "small":
        raise TrainingError(
            f"--student-width half narrows the small model's student; with --model-size {model_size} "
            "use --student-width full"
        )
    if max_steps < 1:
        raise TrainingError(f"--max-steps must be at least 1, got {max_steps}")
    if not 0 < learning_rate < 1:
        raise TrainingError(f"--learning-rate must be between 0 and 1, got {learning_rate}")
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise TrainingError(
            f"--image-size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels, got {image_size} "
            f"(EfficientAD's autoencoder needs at least {MIN_IMAGE_SIZE})"
        )
    if precision not in PRECISIONS:
        raise TrainingError(f"--train-precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def check_output(output: Path, overwrite: bool, inputs: list[Path]) -> None:
    if output.exists() and not output.is_dir():
        raise TrainingError(f"--output {output} exists and is not a folder")
    for folder in inputs:
        if output.resolve().is_relative_to(folder.resolve()):
            raise TrainingError(
                f"--output {output} is inside the image folder {folder}: the export and the "
                "scratch files would be read as training images; choose a folder outside it"
            )
    if (output / XML_IN_EXPORT).exists() and not overwrite:
        raise TrainingError(
            f"{output} already holds an exported model; choose a new --output folder "
            "(or pass --overwrite to replace it)"
        )
