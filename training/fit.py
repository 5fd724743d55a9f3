"""``train()``: fit EfficientAD on a folder of normal images and export it for the daemon.

The result is anomalib's export layout (``OUTPUT/weights/openvino/model.xml|bin``, with resize,
normalisation and the 0.5 threshold inside the graph) plus ``OUTPUT/model.json``.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import anomalib
import torch
from anomalib.data import Folder
from anomalib.deploy import ExportType
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from daemon.model_card import XML_IN_EXPORT, ModelCard, compute_model_id, write_card
from training.errors import TrainingError
from training.images import EXTENSIONS, checked_images
from training.model import InspectdEfficientAd
from training.penalty import build_penalty_set, check_penalty_dir
from training.progress import TrainingProgress, quiet_libraries
from training.settings import DEFAULT_IMAGE_SIZE, DEFAULT_MAX_STEPS, MODEL_SIZES
from training.teacher import Teacher, resolve_teacher

# anomalib holds out 20 % of the normal images to calibrate scores; below 5 that is no image.
MIN_NORMAL_IMAGES = 5
HELD_OUT_RATIO = 0.2
ONNX_OPSET = 18
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 256, 1024  # below 256 the autoencoder's 8x8 bottleneck conv fails
PRECISIONS = ("bf16-mixed", "32-true")


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
class _Recipe:
    """Everything a fit depends on, checked."""

    normal_dir: Path
    abnormal_dir: Path | None
    teacher: Teacher
    penalty_dir: Path | None
    max_steps: int
    model_size: str
    image_size: int
    precision: str
    seed: int


@dataclass(frozen=True)
class _Run:
    """What one fit + export produced, for the model card."""

    xml: Path
    steps: int
    train_images: int
    held_out_images: int
    train_seconds: float
    export_seconds: float


def train(
    normal_dir: Path,
    output: Path,
    *,
    abnormal_dir: Path | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    model_size: str = "small",
    teacher: str = "auto",
    seed: int = 0,
    imagenet_dir: Path | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    precision: str | None = None,
    overwrite: bool = False,
) -> ModelCard:
    """Train, export to OpenVINO and write the model card; every check runs before training.

    ``precision`` is a Lightning precision string; ``None`` picks bf16 where the CPU has it.
    """
    normal_dir, output = Path(normal_dir), Path(output)
    abnormal_dir = Path(abnormal_dir) if abnormal_dir else None
    precision = precision or cpu_precision()
    _check_options(max_steps, model_size, image_size, precision)
    normals = checked_images(normal_dir, "normal")
    if len(normals) < MIN_NORMAL_IMAGES:
        raise TrainingError(
            f"the normal folder {normal_dir} holds {len(normals)} images; at least "
            f"{MIN_NORMAL_IMAGES} are needed (a few hundred give a usable model)"
        )
    abnormals = checked_images(abnormal_dir, "abnormal") if abnormal_dir else []
    penalty_dir = check_penalty_dir(Path(imagenet_dir)) if imagenet_dir else None
    _check_output(output, overwrite, [normal_dir, *([abnormal_dir] if abnormal_dir else [])])
    recipe = _Recipe(
        normal_dir=normal_dir,
        abnormal_dir=abnormal_dir,
        teacher=resolve_teacher(teacher, model_size, seed),
        penalty_dir=penalty_dir,
        max_steps=max_steps,
        model_size=model_size,
        image_size=image_size,
        precision=precision,
        seed=seed,
    )
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    try:
        run = _fit_and_export(recipe, output)
    except BaseException:
        if created and not any(output.iterdir()):
            output.rmdir()
        raise
    card = ModelCard(
        model_id=compute_model_id(run.xml),
        anomalib_version=anomalib.__version__,
        model="EfficientAd",
        model_size=model_size,
        image_size=(image_size, image_size),
        train_images=run.train_images,
        steps=run.steps,
        teacher=recipe.teacher.source,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra={
            "seed": seed,
            "precision": precision,
            "normal_dir": str(normal_dir.resolve()),
            "abnormal_images": len(abnormals),
            "held_out_images": run.held_out_images,
            "penalty_set": str(penalty_dir.resolve()) if penalty_dir else "scikit-image sample photos",
            "train_seconds": round(run.train_seconds, 1),
            "export_seconds": round(run.export_seconds, 1),
        },
    )
    write_card(output, card)
    return card


def _fit_and_export(recipe: _Recipe, output: Path) -> _Run:
    """All of Lightning's and anomalib's files go to a scratch folder inside ``output``, which is
    removed afterwards; only the OpenVINO IR is moved into place."""
    with tempfile.TemporaryDirectory(prefix=".inspectd-train-", dir=output) as tmp:
        work = Path(tmp)
        seed_everything(recipe.seed, verbose=False)
        datamodule = Folder(
            name="inspectd",
            normal_dir=recipe.normal_dir,
            abnormal_dir=recipe.abnormal_dir,
            extensions=EXTENSIONS,  # type: ignore[arg-type]  # anomalib annotates tuple[str]
            train_batch_size=1,  # EfficientAD trains on single images
            eval_batch_size=8,
            num_workers=0,
            test_split_ratio=HELD_OUT_RATIO,
            val_split_mode="same_as_test",  # calibrate on every held-out image
            seed=recipe.seed,
        )
        penalty = recipe.penalty_dir or build_penalty_set(work / "penalty", seed=recipe.seed)
        model = InspectdEfficientAd(recipe.teacher, penalty, recipe.model_size, recipe.image_size)
        engine = Engine(
            max_steps=recipe.max_steps,
            accelerator="cpu",
            devices=1,
            precision=recipe.precision,
            default_root_dir=work / "lightning",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            check_val_every_n_epoch=None,
            val_check_interval=recipe.max_steps,  # calibrate once, on the final weights
            callbacks=[TrainingProgress(recipe.max_steps)],
        )
        started = time.monotonic()
        with quiet_libraries(), _ctrl_c_raises():
            engine.fit(model, datamodule=datamodule)
        train_s = time.monotonic() - started
        if not _calibrated(model):
            raise TrainingError("calibration on the held-out images did not run; nothing exported")

        started = time.monotonic()
        with quiet_libraries():
            engine.export(
                model,
                ExportType.OPENVINO,
                export_root=work / "export",
                onnx_kwargs={"opset_version": ONNX_OPSET, "verbose": False},
            )
        export_s = time.monotonic() - started
        return _Run(
            xml=_install_export(work / "export", output),
            steps=engine.trainer.global_step,
            train_images=len(datamodule.train_data),
            held_out_images=len(datamodule.val_data),
            train_seconds=train_s,
            export_seconds=export_s,
        )


def _calibrated(model: InspectdEfficientAd) -> bool:
    threshold = getattr(model.post_processor, "image_threshold", None)
    return isinstance(threshold, torch.Tensor) and not bool(torch.isnan(threshold).item())


def _check_options(max_steps: int, model_size: str, image_size: int, precision: str) -> None:
    if max_steps < 1:
        raise TrainingError(f"--max-steps must be at least 1, got {max_steps}")
    if model_size not in MODEL_SIZES:
        raise TrainingError(f"--model-size must be one of {', '.join(MODEL_SIZES)}, got {model_size!r}")
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise TrainingError(
            f"--image-size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} pixels, got {image_size} "
            f"(EfficientAD's autoencoder needs at least {MIN_IMAGE_SIZE})"
        )
    if precision not in PRECISIONS:
        raise TrainingError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _check_output(output: Path, overwrite: bool, inputs: list[Path]) -> None:
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


def _install_export(export_root: Path, output: Path) -> Path:
    """Move the new IR into place; the old card goes first so that it never describes the new IR."""
    (output / "model.json").unlink(missing_ok=True)
    target = output / XML_IN_EXPORT.parent
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    (export_root / XML_IN_EXPORT.parent).replace(target)
    return output / XML_IN_EXPORT


@contextmanager
def _ctrl_c_raises() -> Iterator[None]:
    """Lightning answers Ctrl+C with ``sys.exit(1)`` and leaves SIGINT ignored; undo both."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    except SystemExit as exc:
        raise KeyboardInterrupt from exc
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)
