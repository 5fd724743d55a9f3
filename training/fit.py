"""``train()``: fit EfficientAD on a folder of normal images and export it for the daemon.

The result is anomalib's export layout (``OUTPUT/weights/openvino/model.xml|bin``, with resize,
normalisation and the 0.5 threshold inside the graph) plus ``OUTPUT/model.json``.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anomalib
import torch
from anomalib.data import Folder
from anomalib.deploy import CompressionType, ExportType
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from inspectd.card import ModelCard, compute_model_id, write_card
from inspectd.export import CHECKPOINTS, XML_IN_EXPORT
from training.calibrate import Policy, check_policy, default_policy, parse_policy
from training.callbacks import PeriodicCheckpoint, TimeBudget
from training.checks import (
    check_options,
    check_output,
    check_run_options,
    checkpoint_to_resume,
)
from training.data_checks import drop_abnormal_copies, shape_warnings, write_hashes
from training.early_stop import AurocEarlyStopping
from training.errors import TrainingError
from training.held_out import calibrate_export, held_out_images
from training.images import EXTENSIONS, checked_images
from training.model import InspectdEfficientAd, anomaly_map_for
from training.penalty import build_penalty_set, check_penalty_dir
from training.progress import TrainingProgress, quiet_libraries
from training.settings import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_EARLY_STOP_EVERY,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MAX_STEPS,
    DEFAULT_OPSET,
    DEFAULT_PATIENCE,
)
from training.teacher import Teacher, resolve_teacher

# anomalib holds out 20 % of the normal images to calibrate scores; below 5 that is no image.
MIN_NORMAL_IMAGES = 5
HELD_OUT_RATIO = 0.2


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

    normals: list[Path]  # checked, without copies of abnormal images
    abnormal_dir: Path | None
    teacher: Teacher
    penalty_dir: Path | None
    max_steps: int
    model_size: str
    image_size: int
    learning_rate: float
    precision: str
    seed: int
    policy: Policy
    max_minutes: float | None
    checkpoint_every: int
    resume_from: Path | None
    export_precision: str
    opset: int
    early_stop_every: int  # 0: off; only used with abnormal images
    patience: int


@dataclass(frozen=True)
class _Run:
    """What one fit + export produced, for the model card."""

    xml: Path
    steps: int
    train_images: int
    held_out_images: int
    train_seconds: float
    export_seconds: float
    threshold: float
    validation: dict[str, Any]
    stopped_by: str
    early_stopping: dict[str, Any] | None


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
    learning_rate: float = DEFAULT_LEARNING_RATE,
    train_precision: str | None = None,
    threshold_policy: str | None = None,
    max_minutes: float | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    resume: bool = False,
    export_precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    early_stop_every: int = DEFAULT_EARLY_STOP_EVERY,
    patience: int = DEFAULT_PATIENCE,
    overwrite: bool = False,
    keep_checkpoint: bool = False,
    warn: Callable[[str], None] | None = None,
) -> ModelCard:
    """Train, export to OpenVINO, calibrate the threshold and write the model card; every check
    runs before training.

    ``train_precision`` is a Lightning precision string; ``None`` picks bf16 where the CPU has it.
    ``threshold_policy`` is ``f1`` / ``target-frr=X`` / ``normal-quantile=Q`` (see
    ``training.calibrate``); ``None`` picks f1 with abnormal images, else normal-quantile=0.99.
    """
    warn = warn or _warn_to_stderr
    normal_dir, output = Path(normal_dir), Path(output)
    abnormal_dir = Path(abnormal_dir) if abnormal_dir else None
    train_precision = train_precision or cpu_precision()
    check_options(max_steps, model_size, image_size, train_precision, learning_rate)
    check_run_options(max_minutes, checkpoint_every, export_precision, opset)
    if early_stop_every < 0 or patience < 1:
        raise TrainingError(
            f"--early-stop-every must be 0 (off) or more and --patience at least 1, got "
            f"{early_stop_every} and {patience}"
        )
    policy = parse_policy(threshold_policy) if threshold_policy else default_policy(bool(abnormal_dir))
    check_policy(policy, has_abnormal=bool(abnormal_dir))
    resume_from = checkpoint_to_resume(output) if resume else None
    normals = checked_images(normal_dir, "normal")
    abnormals = checked_images(abnormal_dir, "abnormal") if abnormal_dir else []
    for message in shape_warnings(normals, "normal") + shape_warnings(abnormals, "abnormal"):
        warn(message)
    normals = drop_abnormal_copies(normals, abnormals, warn)
    if len(normals) < MIN_NORMAL_IMAGES:
        raise TrainingError(
            f"the normal folder {normal_dir} holds {len(normals)} usable images; at least "
            f"{MIN_NORMAL_IMAGES} are needed (a few hundred give a usable model)"
        )
    penalty_dir = check_penalty_dir(Path(imagenet_dir)) if imagenet_dir else None
    check_output(output, overwrite, [normal_dir, *([abnormal_dir] if abnormal_dir else [])])
    recipe = _Recipe(
        normals=normals,
        abnormal_dir=abnormal_dir,
        teacher=resolve_teacher(teacher, model_size, seed, warn=warn),
        penalty_dir=penalty_dir,
        max_steps=max_steps,
        model_size=model_size,
        image_size=image_size,
        learning_rate=learning_rate,
        precision=train_precision,
        seed=seed,
        policy=policy,
        max_minutes=max_minutes,
        checkpoint_every=checkpoint_every,
        resume_from=resume_from,
        export_precision=export_precision,
        opset=opset,
        early_stop_every=early_stop_every if abnormal_dir else 0,
        patience=patience,
    )
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    try:
        run = _fit_and_export(recipe, output)
    except BaseException:
        if created and not any(output.iterdir()):
            output.rmdir()
        raise
    write_hashes(output, [*normals, *abnormals])
    if run.stopped_by != "time-budget" and not keep_checkpoint:  # finished: keep the export small
        shutil.rmtree(output / CHECKPOINTS, ignore_errors=True)
    card = ModelCard(
        model_id=compute_model_id(run.xml),
        anomalib_version=anomalib.__version__,
        model="EfficientAd",
        model_size=model_size,
        image_size=(image_size, image_size),
        train_images=run.train_images,
        steps=run.steps,
        teacher=recipe.teacher.source,
        teacher_provenance=recipe.teacher.provenance(),
        threshold=run.threshold,
        threshold_policy=str(policy),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        validation=run.validation,
        extra={
            "seed": seed,
            "precision": train_precision,  # training arithmetic (Lightning's name)
            "learning_rate": learning_rate,
            "export_precision": export_precision,
            "opset": opset,
            "stopped_by": run.stopped_by,
            "anomaly_map": anomaly_map_for(recipe.teacher),
            "early_stopping": run.early_stopping,
            "max_minutes": max_minutes,
            "resumed_from": str(resume_from) if resume_from else None,
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


def _warn_to_stderr(message: str) -> None:
    print(f"train: warning: {message}", file=sys.stderr, flush=True)


def _fit_and_export(recipe: _Recipe, output: Path) -> _Run:
    """All of Lightning's and anomalib's files go to a scratch folder inside ``output``, which is
    removed afterwards; only the OpenVINO IR is moved into place (and checkpoints, if any, are
    written to ``output/checkpoints``). The scratch folder is not hidden: anomalib warns about
    every image under a path with a dot-folder in it."""
    with tempfile.TemporaryDirectory(prefix="inspectd-train-", dir=output) as tmp:
        work = Path(tmp)
        seed_everything(recipe.seed, verbose=False)
        datamodule = Folder(
            name="inspectd",
            normal_dir=_link_images(recipe.normals, work / "normal"),
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
        model = InspectdEfficientAd(
            recipe.teacher, penalty, recipe.model_size, recipe.image_size, recipe.learning_rate
        )
        budget = TimeBudget(recipe.max_minutes) if recipe.max_minutes else None
        callbacks: list[Any] = [TrainingProgress(recipe.max_steps)]
        if recipe.checkpoint_every:
            callbacks.append(PeriodicCheckpoint(output / CHECKPOINTS, recipe.checkpoint_every))
        if budget:
            callbacks.append(budget)
        early = None
        if recipe.early_stop_every:
            early = AurocEarlyStopping(recipe.early_stop_every, recipe.patience)
            callbacks.append(early)  # after the budget, so that it sees a time stop as the last step
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
            callbacks=callbacks,
        )
        started = time.monotonic()
        with quiet_libraries(), _ctrl_c_raises():
            engine.fit(model, datamodule=datamodule, ckpt_path=recipe.resume_from)
            if not _calibrated(model):  # a stop before max_steps may skip Lightning's validation
                engine.validate(model, datamodule=datamodule)
        train_s = time.monotonic() - started
        if not _calibrated(model):
            raise TrainingError("calibration on the held-out images did not run; nothing exported")

        started = time.monotonic()
        with quiet_libraries():
            engine.export(
                model,
                ExportType.OPENVINO,
                export_root=work / "export",
                compression_type=CompressionType.FP16 if recipe.export_precision == "fp16" else None,
                onnx_kwargs={"opset_version": recipe.opset, "verbose": False},
            )
        export_s = time.monotonic() - started
        xml = _install_export(work / "export", output)
        normal, abnormal = held_out_images(datamodule)
        threshold, validation = calibrate_export(output, normal, abnormal, recipe.policy)
        return _Run(
            xml=xml,
            steps=engine.trainer.global_step,
            train_images=len(datamodule.train_data),
            held_out_images=len(datamodule.val_data),
            train_seconds=train_s,
            export_seconds=export_s,
            threshold=threshold,
            validation=validation,
            stopped_by=_stopped_by(budget, early),
            early_stopping=early.summary() if early else None,
        )


def _stopped_by(budget: TimeBudget | None, early: AurocEarlyStopping | None) -> str:
    if budget and budget.stopped_at is not None:
        return "time-budget"
    if early and early.tracker.exhausted:
        return "early-stopping"
    return "max-steps"


def _link_images(images: list[Path], folder: Path) -> Path:
    """A folder of links to exactly the checked images, for anomalib's Folder to glob.

    Numbered names keep the sorted order of the originals, hence the same seeded split.
    """
    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        (folder / f"{index:06d}{image.suffix.lower()}").symlink_to(image.resolve())
    return folder


def _calibrated(model: InspectdEfficientAd) -> bool:
    threshold = getattr(model.post_processor, "image_threshold", None)
    return isinstance(threshold, torch.Tensor) and not bool(torch.isnan(threshold).item())


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
