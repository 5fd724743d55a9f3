"""EfficientAd whose teacher is chosen up front instead of downloaded at fit start."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from anomalib.data import InferenceBatch
from anomalib.models import EfficientAd
from anomalib.models.image.efficient_ad.torch_model import (
    EfficientAdModel,
    EfficientAdModelSize,
    reduce_tensor_elems,
)
from torch import nn
from torch.nn import functional
from torchvision.transforms.v2 import CenterCrop, Compose, RandomCrop

from training.eval_mode import evaluating
from training.lite_teacher import PDN_BORDER, FrozenLiteTeacher
from training.memory_format import CHANNELS_LAST, CONTIGUOUS, StepTimer, faster_memory_format, step_seconds
from training.position_scale import position_scale, resized
from training.score_scale import UnclippedPostProcessor
from training.settings import (
    ANOMALY_MAPS,
    DEFAULT_LEARNING_RATE,
    MAP_QUANTILE_IMAGES,
    MAP_SCALES,
    PENALTY_CROPS,
    TEACHER_STATS_IMAGES,
)
from training.student import FULL, student_network
from training.teacher import Teacher, apply_teacher
from training.teacher_memo import TeacherMemo
from training.validation_sample import until_good_images

BOTH_MAPS = "mean of student-teacher and autoencoder maps"
STUDENT_TEACHER_MAP = "student-teacher map"
# --anomaly-map's choices (training.settings, the first is the default) and the card's names for them
MAP_CHOICES = dict(zip(ANOMALY_MAPS, (STUDENT_TEACHER_MAP, BOTH_MAPS), strict=True))


def anomaly_map_for(requested: str = ANOMALY_MAPS[0]) -> str:
    """The map that scores the images (``--anomaly-map``), as the model card names it.

    By default the student-teacher map alone, whatever the teacher: the model then has no
    autoencoder (``StudentTeacherScoring``), so a step costs at most about 0.6 of a full one (0.6
    measured before the student also lost the autoencoder's half) and more steps fit in the cap. On ELPV
    mono cells (frozen Lite2, 26-minute cap, one core) that gave AUROC 0.903 / EER 0.190 against
    0.852 / 0.204 with both maps (seed 1, 251 against 126 steps; README, Accuracy). At equal steps
    the map choice was neutral with a Lite teacher (0.872 alone, 0.871 mean) and the autoencoder
    map dragged a random teacher's mean down (0.846 / 0.820 alone against 0.775 / 0.796).
    """
    return MAP_CHOICES[requested]


def teacher_network(teacher: Teacher, model_size: str) -> torch.nn.Module:
    """The module that goes into ``EfficientAdModel.teacher``: a PDN with the chosen weights, or
    the frozen EfficientNet-Lite (384 channels on the student's grid, like the PDN)."""
    if teacher.lite is not None:
        return FrozenLiteTeacher(teacher.lite)
    network = EfficientAdModel(teacher_out_channels=384, model_size=EfficientAdModelSize(model_size)).teacher
    apply_teacher(network, teacher)
    return network.eval()


class StudentTeacherScoring(EfficientAdModel):
    """anomalib's EfficientAD network scoring with the student-teacher map alone.

    Nothing of the autoencoder is kept: not the autoencoder (no parameters), nor the half of the
    student's last convolution that only learns to imitate it. anomalib's student puts out twice
    the teacher's channels, the second half for the autoencoder map; each output channel of a
    convolution has its own filters, so dropping that half changes nothing in the first half's
    output or gradients, and it saves about a quarter of the student's work (its last convolution
    is half of it) in every step and every inference. Training computes anomalib's student loss
    (hard-feature quantile plus the penalty on a penalty-set image) and no autoencoder losses.

    ``map_scale`` divides the map at each position before the padding and the resize
    (``training.position_scale``); ones (1x1) until it is measured, i.e. anomalib's map.
    """

    map_scale: torch.Tensor
    # The hard-feature loss averages the student's squared misses at or above this quantile
    # (anomalib and the paper: 0.999). 0 is the plain mean. Measured lower, not kept (RESULTS.md).
    hard_quantile = 0.999

    def __init__(
        self,
        teacher_out_channels: int = 384,
        model_size: EfficientAdModelSize = EfficientAdModelSize.S,
        student_width: str = FULL,
    ) -> None:
        super().__init__(teacher_out_channels=teacher_out_channels, model_size=model_size)
        size = EfficientAdModelSize(model_size).value
        self.student = student_network(size, student_width, teacher_out_channels)
        self.ae = NoAutoencoder()  # type: ignore[assignment]
        self.teacher_memo = TeacherMemo()
        self.register_buffer("map_scale", torch.ones(1, 1, 1, 1))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A measured ``map_scale`` has the student's grid, not the 1x1 a new model starts with;
        a model saved before the scale existed has none (then its map stays anomalib's)."""
        saved = state_dict.setdefault(prefix + "map_scale", torch.ones(1, 1, 1, 1))
        if saved.shape != self.map_scale.shape:
            self.map_scale = torch.ones_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args)

    @torch.no_grad()
    def measure_map_scale(self, images: Iterable[torch.Tensor]) -> int:
        """Set ``map_scale`` from the map's mean per position on ``images`` (training images at the
        model's input size), in eval mode; returns how many images it took."""
        with evaluating(self):  # the distance is taken before any scale, so no reset is needed
            scale, used = position_scale(lambda x: self.compute_student_teacher_distance(x)[1], images)
        self.map_scale = scale.to(self.map_scale.device)
        return used

    def compute_student_teacher_distance(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """anomalib's, except that in training the teacher's output comes from ``teacher_memo``
        when the image was seen before (the teacher is frozen, so it is the same output)."""
        if not self.training or torch.jit.is_tracing():
            return super().compute_student_teacher_distance(batch)
        with torch.no_grad():
            teacher_output = self._normalize_teacher(self.teacher_memo(batch, self.teacher))
        student_output = self.student(batch)
        distance_st = torch.pow(teacher_output - student_output[:, : self.teacher_out_channels, :, :], 2)
        return student_output, distance_st

    def forward(
        self,
        batch: torch.Tensor,
        batch_imagenet: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> Any:
        student_output, distance_st = self.compute_student_teacher_distance(batch)
        if self.training:
            return self.student_losses(batch_imagenet, distance_st)
        map_st, _ = self.compute_maps(batch, student_output, distance_st, normalize)
        return InferenceBatch(pred_score=torch.amax(map_st, dim=(-2, -1)), anomaly_map=map_st)

    def compute_maps(
        self,
        batch: torch.Tensor,
        student_output: torch.Tensor,
        distance_st: torch.Tensor,
        normalize: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """anomalib's student-teacher map (channel mean, padding, resize, quantile normalisation).
        There is no autoencoder map: the second value repeats the first, so that anomalib's
        calibration, which takes quantiles of both, runs unchanged."""
        map_st = torch.mean(distance_st, dim=1, keepdim=True)
        map_st = map_st / resized(self.map_scale, map_st.shape[-2:])
        if self.pad_maps:
            map_st = functional.pad(map_st, (PDN_BORDER,) * 4)
        map_st = functional.interpolate(map_st, size=batch.shape[-2:], mode="bilinear")
        if normalize:
            q = self.quantiles  # unset (zeros) before calibration: then the map stays as it is
            is_set = self._is_set_tensor(q)
            range_st = torch.where(is_set, q["qb_st"] - q["qa_st"], torch.ones_like(q["qa_st"]))
            map_st = torch.where(is_set, 0.1 * (map_st - q["qa_st"]) / range_st, map_st)
        return map_st, map_st

    def student_losses(
        self, batch_imagenet: torch.Tensor | None, distance_st: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """anomalib's ``compute_losses`` student part, as it computes it; the autoencoder's two
        losses are zero (anomalib's training step adds and logs all three)."""
        if batch_imagenet is None:
            raise ValueError("training needs a penalty-set image with every batch")
        distance_st = reduce_tensor_elems(distance_st)
        d_hard = torch.quantile(distance_st, self.hard_quantile)
        loss_hard = torch.mean(distance_st[distance_st >= d_hard])
        penalty = self.student(batch_imagenet)[:, : self.teacher_out_channels, :, :]
        loss_st = loss_hard + torch.mean(penalty**2)
        zero = torch.zeros((), device=loss_st.device)
        return loss_st, zero, zero


class NoAutoencoder(nn.Module):
    """Where anomalib's autoencoder sits in a model that scores without it: no parameters, so
    anomalib's optimiser (student plus autoencoder parameters) holds the student alone."""

    def forward(self, *_: Any) -> torch.Tensor:
        raise RuntimeError("this model scores with the student-teacher map alone; it has no autoencoder")


class InspectdEfficientAd(EfficientAd):
    """anomalib's EfficientAd, except that the teacher weights are loaded at construction.

    anomalib fetches the teacher inside ``on_train_start``, i.e. after data loading has begun,
    and fails there when offline; loading it here surfaces a bad teacher before any work and
    keeps random teachers out of anomalib's cache. Scores are normalised without clipping
    (``training.score_scale``) and come from the map ``anomaly_map_for`` names (with the
    student-teacher map alone, the autoencoder is not trained: ``StudentTeacherScoring``).
    """

    def __init__(
        self,
        teacher: Teacher,
        imagenet_dir: Path,
        model_size: str,
        image_size: int,
        learning_rate: float = DEFAULT_LEARNING_RATE,
        *,
        anomaly_map: str = ANOMALY_MAPS[0],
        map_scale: str = MAP_SCALES[0],
        penalty_crop: str = PENALTY_CROPS[0],
        student_width: str = FULL,
    ) -> None:
        super().__init__(
            imagenet_dir=imagenet_dir,
            model_size=model_size,
            lr=learning_rate,
            pre_processor=EfficientAd.configure_pre_processor((image_size, image_size)),
            post_processor=UnclippedPostProcessor(),
        )
        if anomaly_map_for(anomaly_map) == STUDENT_TEACHER_MAP:
            # anomalib's defaults, as EfficientAd.__init__ passes them
            self.model = StudentTeacherScoring(384, self.model_size, student_width)
        elif student_width != FULL:
            # anomalib's student puts out the teacher's channels and the autoencoder's
            self.model.student = student_network(model_size, student_width, 2 * 384)
        self.model.teacher = teacher_network(teacher, model_size)  # type: ignore[assignment]
        self.scale_positions = map_scale == "position" and isinstance(self.model, StudentTeacherScoring)
        self.map_scale_images = 0  # how many training images the last measured map_scale took
        self.penalty_crop = penalty_crop
        self.image_size = image_size
        self.step_timer: StepTimer = step_seconds  # how on_fit_start times the two memory orders
        self.memory_format = CONTIGUOUS  # the one on_fit_start measures faster
        self.step_seconds: dict[str, float] = {}
        self.student_width = student_width
        self.width_probe_seconds: float | None = None  # the fit's, when --student-width auto timed it

    def prepare_imagenette_data(self, image_size: tuple[int, int] | torch.Size) -> None:
        """anomalib's penalty-set loader; with ``--penalty-crop half`` its centre crop at the input
        size becomes a random crop of half that side, from the same photo resized to twice the
        input side. The student is a convolution without padding, so the penalty (the mean of its
        squared output) means the same on fewer positions, and its pass costs a fifth: 148 against
        770 ms forward and backward at 256 px (f32, 2-core AVX2 CPU)."""
        super().prepare_imagenette_data(image_size)
        if self.penalty_crop == "half":
            half = (image_size[0] // 2, image_size[1] // 2)
            steps = self.data_transforms_imagenet.transforms
            cropped = Compose([RandomCrop(half) if isinstance(t, CenterCrop) else t for t in steps])
            self.data_transforms_imagenet = cropped
            self.imagenet_loader.dataset.transform = cropped  # type: ignore[attr-defined]

    def teacher_channel_mean_std(self, dataloader: Any) -> dict[str, torch.Tensor]:
        """anomalib's, on the first ``TEACHER_STATS_IMAGES`` images of the (shuffled) training
        loader instead of all of them (``training.settings``)."""
        return super().teacher_channel_mean_std(islice(dataloader, TEACHER_STATS_IMAGES))  # type: ignore[arg-type]

    def map_norm_quantiles(self, dataloader: Any) -> dict[str, torch.Tensor]:
        """anomalib's, on the held-out batches up to the one that brings the good images to
        ``MAP_QUANTILE_IMAGES`` instead of all of them (``training.settings``)."""
        sample = until_good_images(dataloader, MAP_QUANTILE_IMAGES, _good_images)
        return super().map_norm_quantiles(sample)  # type: ignore[arg-type]

    def on_validation_start(self) -> None:
        """Before anomalib fits the map's quantiles on the held-out good images (and so before the
        export): measure the map's level per position on the training images, through the same
        resize as training (``--map-scale position``)."""
        if self.scale_positions and isinstance(self.model, StudentTeacherScoring):
            loader = self.trainer.datamodule.train_dataloader()  # type: ignore[attr-defined]
            resize = self.pre_processor if self.pre_processor is not None else (lambda x: x)
            images = (resize(batch.image).to(self.device) for batch in loader)
            with self.trainer.precision_plugin.forward_context():
                self.map_scale_images = self.model.measure_map_scale(images)
        super().on_validation_start()

    def configure_optimizers(self) -> Any:
        """anomalib's Adam without its scheduler, which Lightning would step once per epoch so that
        its drop never comes; ``training.callbacks.FinalDecay`` makes that drop instead."""
        configured = super().configure_optimizers()
        return configured["optimizer"] if isinstance(configured, dict) else configured

    def on_fit_start(self) -> None:
        """The networks' weights in the memory order the student steps faster in on this CPU
        (``training.memory_format``: channels-last gained on an AMX CPU and lost on an AVX2 one),
        timed in the fit's own arithmetic (bf16 autocast where the fit uses it)."""
        super().on_fit_start()
        half = self.image_size // 2 if self.penalty_crop == "half" else self.image_size
        trainer = self._trainer  # None when a test calls this by hand
        context = trainer.precision_plugin.forward_context() if trainer is not None else nullcontext()
        with context:
            self.memory_format, self.step_seconds = faster_memory_format(
                self.model.student, (self.image_size, half), self.step_timer
            )
        if self.memory_format == CHANNELS_LAST:
            self.model.to(memory_format=torch.channels_last)

    def on_train_end(self) -> None:
        """The memoised teacher outputs are not needed once the student stops learning."""
        super().on_train_end()
        memo = getattr(self.model, "teacher_memo", None)
        if isinstance(memo, TeacherMemo):
            memo.clear()

    def prepare_pretrained_model(self) -> None:
        """The teacher was set in ``__init__``; anomalib's download must not run."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the teacher as its description: Lightning loads checkpoints with
        ``weights_only=True``, which refuses our ``Teacher`` class (the weights are in the
        state dict anyway)."""
        super().on_save_checkpoint(checkpoint)
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict) and isinstance(hparams.get("teacher"), Teacher):
            checkpoint["hyper_parameters"] = {**hparams, "teacher": hparams["teacher"].source}


def _good_images(batch: Any) -> int:
    return int((batch.gt_label == 0).sum())
