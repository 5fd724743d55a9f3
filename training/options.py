"""Everything ``inspectd train`` can be told, as one typed object.

The CLI fills it from its flags, the Python API, the demo and the benchmarks build it directly;
``training.recipe.prepare`` checks it before any image is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.settings import (
    ANOMALY_MAPS,
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_EARLY_STOP_EVERY,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MAX_MINUTES,
    DEFAULT_MAX_STEPS,
    DEFAULT_OPSET,
    DEFAULT_PATIENCE,
    MAP_SCALES,
    PENALTY_CROPS,
    STUDENT_WIDTHS,
)


@dataclass(frozen=True)
class TrainOptions:
    """``train_precision`` is a Lightning precision string (None: bf16 only where the CPU has AMX);
    ``threshold_policy`` is ``f1`` / ``target-frr=X`` / ``normal-quantile=Q`` (None: f1 with
    abnormal images, else normal-quantile=0.99); ``max_minutes`` None means no time budget (then
    ``max_steps``, 70k by default, ends the run)."""

    normal_dir: Path
    output: Path
    abnormal_dir: Path | None = None
    max_steps: int = DEFAULT_MAX_STEPS
    model_size: str = "small"
    student_width: str = STUDENT_WIDTHS[0]  # auto | full | half (training.student)
    teacher: str = "auto"
    seed: int = 0
    imagenet_dir: Path | None = None
    image_size: int = DEFAULT_IMAGE_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    anomaly_map: str = ANOMALY_MAPS[0]  # student-teacher | both (training.model.anomaly_map_for)
    map_scale: str = MAP_SCALES[0]  # position | none (training.position_scale)
    penalty_crop: str = PENALTY_CROPS[0]  # half | full (training.model.InspectdEfficientAd)
    train_precision: str | None = None
    threshold_policy: str | None = None
    max_minutes: float | None = DEFAULT_MAX_MINUTES
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    resume: bool = False
    export_precision: str = "fp32"
    opset: int = DEFAULT_OPSET
    early_stop_every: int = DEFAULT_EARLY_STOP_EVERY
    patience: int = DEFAULT_PATIENCE
    overwrite: bool = False
    keep_checkpoint: bool = False  # keep OUTPUT/checkpoints/last.ckpt after a finished run

    def __post_init__(self) -> None:
        for name in ("normal_dir", "output", "abnormal_dir", "imagenet_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
