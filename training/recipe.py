"""From ``TrainOptions`` to a checked recipe: every option, folder, image and the teacher are
checked before any model is built, so a bad run fails in seconds, not after half an hour."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from training.calibrate import Policy, check_policy, default_policy, parse_policy
from training.checks import check_options, check_output, check_run_options, checkpoint_to_resume
from training.data_checks import drop_abnormal_copies, shape_warnings
from training.errors import TrainingError
from training.images import checked_images
from training.options import TrainOptions
from training.penalty import check_penalty_dir
from training.teacher import Teacher, resolve_teacher

# anomalib holds out 20 % of the normal images to calibrate scores; below 5 that is no image.
MIN_NORMAL_IMAGES = 5


def cpu_precision() -> str:
    """bf16 autocast only where the CPU has AMX tiles; fp32 otherwise.

    With AVX-512 BF16 but no AMX (this project's 2-core box) bf16 autocast measured 1.5x slower
    than fp32 for EfficientAD-S (3.3 vs 2.2 s/step): the convolutions are too small to gain.
    """
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    if amx and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16-mixed"
    return "32-true"


@dataclass(frozen=True)
class Recipe:
    """The options, and what checking them found."""

    options: TrainOptions
    normals: list[Path]  # checked, without copies of abnormal images
    abnormals: list[Path]
    teacher: Teacher
    policy: Policy
    precision: str  # Lightning's name for the training arithmetic
    resume_from: Path | None
    early_stop_every: int  # 0: off; only with abnormal images


def prepare(options: TrainOptions, warn: Callable[[str], None]) -> Recipe:
    o = options
    precision = o.train_precision or cpu_precision()
    check_options(
        o.max_steps,
        o.model_size,
        o.image_size,
        precision,
        o.learning_rate,
        anomaly_map=o.anomaly_map,
        map_scale=o.map_scale,
        penalty_crop=o.penalty_crop,
        student_width=o.student_width,
    )
    check_run_options(o.max_minutes, o.checkpoint_every, o.export_precision, o.opset)
    if o.early_stop_every < 0 or o.patience < 1:
        raise TrainingError(
            f"--early-stop-every must be 0 (off) or more and --patience at least 1, got "
            f"{o.early_stop_every} and {o.patience}"
        )
    policy = parse_policy(o.threshold_policy) if o.threshold_policy else default_policy(bool(o.abnormal_dir))
    check_policy(policy, has_abnormal=bool(o.abnormal_dir))
    resume_from = checkpoint_to_resume(o.output) if o.resume else None
    normals = checked_images(o.normal_dir, "normal")
    abnormals = checked_images(o.abnormal_dir, "abnormal") if o.abnormal_dir else []
    for message in shape_warnings(normals, "normal") + shape_warnings(abnormals, "abnormal"):
        warn(message)
    normals = drop_abnormal_copies(normals, abnormals, warn)
    if len(normals) < MIN_NORMAL_IMAGES:
        raise TrainingError(
            f"the normal folder {o.normal_dir} holds {len(normals)} usable images; at least "
            f"{MIN_NORMAL_IMAGES} are needed (a few hundred give a usable model)"
        )
    if o.imagenet_dir:
        check_penalty_dir(o.imagenet_dir)
    check_output(o.output, o.overwrite, [o.normal_dir, *([o.abnormal_dir] if o.abnormal_dir else [])])
    return Recipe(
        options=o,
        normals=normals,
        abnormals=abnormals,
        teacher=resolve_teacher(o.teacher, o.model_size, o.seed, warn=warn),
        policy=policy,
        precision=precision,
        resume_from=resume_from,
        early_stop_every=o.early_stop_every if o.abnormal_dir else 0,
    )
