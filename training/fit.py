"""``train()``: fit EfficientAD on a folder of normal images and export it for the daemon.

The result is anomalib's export layout (``OUTPUT/weights/openvino/model.xml|bin``, with resize,
normalisation and the score scale inside the graph) plus ``OUTPUT/model.json`` and
``OUTPUT/train_hashes.txt`` (``inspectd.export``).
"""

from __future__ import annotations

import dataclasses
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
from inspectd.export import CARD_NAME, CHECKPOINTS, XML_IN_EXPORT
from training.callbacks import FinalDecay, PeriodicCheckpoint, TimeBudget
from training.data_checks import write_hashes
from training.early_stop import AurocEarlyStopping
from training.errors import TrainingError
from training.held_out import calibrate_export, held_out_images
from training.images import EXTENSIONS
from training.model import InspectdEfficientAd, anomaly_map_for
from training.options import TrainOptions
from training.penalty import build_penalty_set
from training.progress import TrainingProgress, quiet_libraries
from training.recipe import Recipe, prepare
from training.resume import mismatch
from training.settings import MAP_SCALE_IMAGES
from training.student import chosen_width
from training.validation_sample import ValidationSample

HELD_OUT_RATIO = 0.2


@dataclass(frozen=True)
class _Run:
    """What one fit + export produced, for the model card."""

    xml: Path
    steps: int
    train_images: int
    held_out_images: int
    validation_images: int  # of the held-out ones, those anomalib's validation step scored
    train_seconds: float
    export_seconds: float
    threshold: float
    validation: dict[str, Any]
    stopped_by: str
    early_stopping: dict[str, Any] | None
    final_learning_rate: float
    learning_rate_dropped_at: int | None
    map_scale_images: int  # 0: the map is not scaled per position
    time_reserve_s: float | None  # what the time budget kept for the work after training
    eval_pass_s: float | None  # the eval pass that reserve was reckoned on
    memory_format: str  # the student's weights' order, the faster one on this CPU
    step_seconds: dict[str, float]  # what each order's probe step took
    student_width: str  # full or half (training.student)
    width_probe_s: float | None  # the full student's step that --student-width auto was decided on


def train(options: TrainOptions, *, warn: Callable[[str], None] | None = None) -> ModelCard:
    """Train, export to OpenVINO, calibrate the threshold and write the model card; every check
    runs before training (``training.recipe``)."""
    started = time.monotonic()  # --max-minutes counts from here
    recipe = prepare(options, warn or _warn_to_stderr)
    output = options.output
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    try:
        run = _fit_and_export(recipe, output, started)
    except BaseException:
        if created and not any(output.iterdir()):
            output.rmdir()
        raise
    write_hashes(output, [*recipe.normals, *recipe.abnormals])
    if run.stopped_by != "time-budget" and not options.keep_checkpoint:  # finished: keep it small
        shutil.rmtree(output / CHECKPOINTS, ignore_errors=True)
    card = _card(recipe, run)
    write_card(output, card)
    if options.export_precision == "int8":
        card = _to_int8(recipe, card, warn or _warn_to_stderr)
    return card


def _to_int8(recipe: Recipe, card: ModelCard, warn: Callable[[str], None]) -> ModelCard:
    """Quantise the fresh fp32 export in place through ``inspectd quantize``'s guard; when the
    guard refuses, the fp32 export stays (a usable model after a long fit) and the card says so."""
    from training.quantize import QuantizeOptions, quantize

    o = recipe.options
    with tempfile.TemporaryDirectory(prefix="inspectd-int8-", dir=o.output) as tmp:
        staged = Path(tmp) / "int8"
        try:
            int8 = quantize(QuantizeOptions(o.output, o.normal_dir, staged, abnormal=o.abnormal_dir))
        except TrainingError as exc:
            warn(f"{exc}; the fp32 export is kept")
            extra = {**card.extra, "export_precision": "fp32", "int8_refused": str(exc)}
            kept = dataclasses.replace(card, extra=extra)
            write_card(o.output, kept)
            return kept
        for name in (XML_IN_EXPORT, XML_IN_EXPORT.with_suffix(".bin")):
            (staged / name).replace(o.output / name)
        write_card(o.output, int8)
    return int8


def _card(recipe: Recipe, run: _Run) -> ModelCard:
    o = recipe.options
    return ModelCard(
        model_id=compute_model_id(run.xml),
        anomalib_version=anomalib.__version__,
        model="EfficientAd",
        model_size=o.model_size,
        image_size=(o.image_size, o.image_size),
        train_images=run.train_images,
        steps=run.steps,
        teacher=recipe.teacher.source,
        teacher_provenance=recipe.teacher.provenance(),
        threshold=run.threshold,
        threshold_policy=str(recipe.policy),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        validation=run.validation,
        extra={
            "seed": o.seed,
            "precision": recipe.precision,  # training arithmetic (Lightning's name)
            "learning_rate": o.learning_rate,
            "export_precision": o.export_precision,
            "opset": o.opset,
            "stopped_by": run.stopped_by,
            "anomaly_map": anomaly_map_for(o.anomaly_map),
            "map_scale": "position" if run.map_scale_images else "none",
            "map_scale_images": run.map_scale_images,
            "penalty_crop": o.penalty_crop,
            "student_width": run.student_width,
            "full_student_step_seconds": run.width_probe_s,
            "early_stopping": run.early_stopping,
            "final_learning_rate": run.final_learning_rate,
            "learning_rate_dropped_at_step": run.learning_rate_dropped_at,
            "max_minutes": o.max_minutes,
            "time_reserve_seconds": None if run.time_reserve_s is None else round(run.time_reserve_s, 1),
            "eval_pass_seconds": None if run.eval_pass_s is None else round(run.eval_pass_s, 3),
            "memory_format": run.memory_format,
            "memory_format_step_seconds": {k: round(v, 3) for k, v in run.step_seconds.items()},
            "resumed_from": str(recipe.resume_from) if recipe.resume_from else None,
            "normal_dir": str(o.normal_dir.resolve()),
            "abnormal_images": len(recipe.abnormals),
            "held_out_images": run.held_out_images,
            "validation_images": run.validation_images,
            "penalty_set": str(o.imagenet_dir.resolve()) if o.imagenet_dir else "scikit-image sample photos",
            "train_seconds": round(run.train_seconds, 1),
            "export_seconds": round(run.export_seconds, 1),
        },
    )


def _warn_to_stderr(message: str) -> None:
    print(f"train: warning: {message}", file=sys.stderr, flush=True)


def _fit(engine: Engine, model: InspectdEfficientAd, datamodule: Folder, resume_from: Path | None) -> None:
    try:
        engine.fit(model, datamodule=datamodule, ckpt_path=resume_from)
    except RuntimeError as exc:
        if resume_from is not None and (explained := mismatch(exc, resume_from)) is not None:
            raise explained from exc
        raise


def _fit_and_export(recipe: Recipe, output: Path, since: float) -> _Run:
    """All of Lightning's and anomalib's files go to a scratch folder inside ``output``, which is
    removed afterwards; only the OpenVINO IR is moved into place (and checkpoints, if any, are
    written to ``output/checkpoints``). The scratch folder is not hidden: anomalib warns about
    every image under a path with a dot-folder in it."""
    o = recipe.options
    with tempfile.TemporaryDirectory(prefix="inspectd-train-", dir=output) as tmp:
        work = Path(tmp)
        seed_everything(o.seed, verbose=False)
        datamodule = Folder(
            name="inspectd",
            normal_dir=_link_images(recipe.normals, work / "normal"),
            abnormal_dir=o.abnormal_dir,
            extensions=EXTENSIONS,  # type: ignore[arg-type]  # anomalib annotates tuple[str]
            train_batch_size=1,  # EfficientAD trains on single images
            eval_batch_size=8,
            num_workers=0,
            test_split_ratio=HELD_OUT_RATIO,
            val_split_mode="same_as_test",  # calibrate on every held-out image
            seed=o.seed,
        )
        penalty = o.imagenet_dir or build_penalty_set(work / "penalty", seed=o.seed)
        penalty_side = o.image_size // 2 if o.penalty_crop == "half" else o.image_size
        width, width_probe_s = chosen_width(
            o.student_width,
            o.model_size,
            o.max_minutes,
            o.max_steps,
            (o.image_size, penalty_side),
            bf16=recipe.precision.startswith("bf16"),
            resume_from=recipe.resume_from,
        )
        model = InspectdEfficientAd(
            recipe.teacher,
            penalty,
            o.model_size,
            o.image_size,
            o.learning_rate,
            anomaly_map=o.anomaly_map,
            map_scale=o.map_scale,
            penalty_crop=o.penalty_crop,
            student_width=width,
        )
        model.width_probe_seconds = width_probe_s
        scale_images = MAP_SCALE_IMAGES if model.scale_positions else 0
        budget = TimeBudget(o.max_minutes, since=since, scale_images=scale_images) if o.max_minutes else None
        early = AurocEarlyStopping(recipe.early_stop_every, o.patience) if recipe.early_stop_every else None
        decay = FinalDecay(o.max_steps, budget)
        sample = ValidationSample()
        engine = _engine(recipe, output, work, budget=budget, early=early, decay=decay, sample=sample)
        started = time.monotonic()
        with quiet_libraries(), _ctrl_c_raises():
            _fit(engine, model, datamodule, recipe.resume_from)
            if not _calibrated(model):  # a stop before max_steps may skip Lightning's validation
                engine.validate(model, datamodule=datamodule)
        train_s = time.monotonic() - started
        if not _calibrated(model):
            raise TrainingError("calibration on the held-out images did not run; nothing exported")
        started = time.monotonic()
        xml = _export(engine, model, recipe, work / "export", output)
        export_s = time.monotonic() - started
        normal, abnormal = held_out_images(datamodule)
        threshold, validation = calibrate_export(output, normal, abnormal, recipe.policy)
        return _Run(
            xml=xml,
            steps=engine.trainer.global_step,
            train_images=len(datamodule.train_data),
            held_out_images=len(datamodule.val_data),
            validation_images=sample.images,
            train_seconds=train_s,
            export_seconds=export_s,
            threshold=threshold,
            validation=validation,
            stopped_by=_stopped_by(budget, early),
            early_stopping=early.summary() if early else None,
            final_learning_rate=float(engine.trainer.optimizers[0].param_groups[0]["lr"]),
            learning_rate_dropped_at=decay.dropped_at,
            map_scale_images=model.map_scale_images,
            time_reserve_s=budget.reserve_s if budget else None,
            eval_pass_s=budget.pass_s if budget and budget.pass_seconds else None,
            memory_format=model.memory_format,
            step_seconds=model.step_seconds,
            student_width=width,
            width_probe_s=width_probe_s,
        )


def _engine(
    recipe: Recipe,
    output: Path,
    work: Path,
    *,
    budget: TimeBudget | None,
    early: AurocEarlyStopping | None,
    decay: FinalDecay,
    sample: ValidationSample,
) -> Engine:
    o = recipe.options
    callbacks: list[Any] = [TrainingProgress(o.max_steps, budget=budget), sample]
    if o.checkpoint_every:
        callbacks.append(PeriodicCheckpoint(output / CHECKPOINTS, o.checkpoint_every))
    if budget:
        callbacks.append(budget)
    callbacks.append(decay)
    if early:
        callbacks.append(early)  # after the budget, so that it sees a time stop as the last step
    return Engine(
        max_steps=o.max_steps,
        accelerator="cpu",
        devices=1,
        precision=recipe.precision,
        default_root_dir=work / "lightning",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=None,
        val_check_interval=o.max_steps,  # calibrate once, on the final weights
        callbacks=callbacks,
    )


def _export(engine: Engine, model: InspectdEfficientAd, recipe: Recipe, root: Path, output: Path) -> Path:
    o = recipe.options
    with quiet_libraries():
        engine.export(
            model,
            ExportType.OPENVINO,
            export_root=root,
            compression_type=CompressionType.FP16 if o.export_precision == "fp16" else None,
            onnx_kwargs={"opset_version": o.opset, "verbose": False},
        )
    return _install_export(root, output)


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
    (output / CARD_NAME).unlink(missing_ok=True)
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
