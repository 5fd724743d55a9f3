"""Can a few hundred steps of quantisation-aware training win back what INT8 costs the verdicts?

``inspectd quantize`` (NNCF's post-training quantisation of the whole exported IR, the map left in
float) loses more AUROC on the frozen-Lite2 models than its guard's default allows: the map is the
squared difference of the teacher's and the student's 384 channels, and rounding either network
adds noise in every channel that buries faint defects (benchmarks/RESULTS.md, Speed). This screen
measures the levers left: each network quantised on its own, and the student then fine-tuned with
NNCF's fake quantisation in place, so that it learns to copy the INT8 teacher's output with INT8
arithmetic of its own.

On a trained model's checkpoint (``inspectd train --keep-checkpoint``) it scores the test images
with the map's maximum (as residual_screen.py does; the export's normalisation is a monotone map
of it), the map divided by its mean per position on training normals (``--map-scale position``),
and prints image AUROC, EER and the ms per image of teacher and student. Every score and time comes
from OpenVINO on the CPU (each network converted with ``ov.convert_model``, one image per request
as in the daemon's latency mode), i.e. the deployed INT8 arithmetic, not PyTorch's simulation:

    float       the checkpoint as trained
    int8 ptq    teacher and student quantised by ``nncf.quantize`` (statistics from training
                normals)
    int8 qat N  after N steps of the student's training loss (hard-feature term and the penalty
                on a half-size crop of a penalty-set photo, as ``inspectd train``) against the
                quantised teacher, NNCF's fake quantisation in place and its scales learning too

Each line also gives the figures with the float model's own map scale (measured in training):
what an INT8 copy scores when nothing is measured again. ``--ptq openvino --steps 0`` runs NNCF on
each network's OpenVINO IR instead, as ``inspectd quantize`` does on the whole export.

    python benchmarks/int8_screen.py --data /tmp/elpv-mono \\
        --checkpoint /tmp/elpv-mono/model/checkpoints/last.ckpt --steps 300 --eval-every 100

``--data`` is any folder with ``train/normal``, ``test/normal`` and ``test/abnormal``. Frozen Lite
teachers only (the offline default). The teacher's outputs are computed once per image (it is
frozen), so a screen costs mostly the student's training steps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import nncf
import numpy as np
import torch
from PIL import Image
from residual_screen import checkpoint_parser, load_model  # this folder: run as a script
from teacher_features import load_images

from training.images import list_images
from training.metrics import auroc, eer
from training.model import StudentTeacherScoring
from training.penalty import build_penalty_set
from training.position_scale import FLOOR

CHANNELS = 384
GRAYSCALE_P = 0.3
LUMA = torch.tensor([0.299, 0.587, 0.114])


class StandardisedTeacher(torch.nn.Module):
    """The teacher's output standardised per channel, as the student learns and the map takes it."""

    def __init__(self, model: StudentTeacherScoring) -> None:
        super().__init__()
        self.teacher = model.teacher
        self.register_buffer("mean", model.mean_std["mean"].detach().clone())
        self.register_buffer("std", model.mean_std["std"].detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.teacher(x) - self.mean) / self.std


def converted(network: torch.nn.Module, example: torch.Tensor) -> Any:
    import openvino as ov

    return ov.convert_model(network.eval(), example_input=example)


def on_openvino(network: Any, images: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``network``'s outputs for ``images`` from OpenVINO on the CPU (f32 where not quantised, one
    image per request), and the median ms per image. ``network``: a PyTorch module or an
    ``ov.Model``."""
    import openvino as ov

    if isinstance(network, torch.nn.Module):
        network = converted(network, images[:1])
    compiled = ov.compile_model(
        network,
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
    )
    out, times = [], []
    for i in range(len(images)):
        begun = time.perf_counter()
        out.append(torch.from_numpy(compiled(images[i : i + 1].numpy())[0].copy()))
        times.append(time.perf_counter() - begun)
    return torch.cat(out), 1000 * float(np.median(times))


def penalty_crops(size: int, seed: int) -> list[torch.Tensor]:
    """The built-in penalty set's photos at twice the input side, as ``inspectd train`` loads them."""
    with tempfile.TemporaryDirectory(prefix="inspectd-int8-") as tmp:
        folder = build_penalty_set(Path(tmp), seed=seed) / "natural"
        photos = []
        for path in list_images(folder):
            with Image.open(path) as opened:
                image = opened.convert("RGB").resize((2 * size, 2 * size), Image.Resampling.BILINEAR)
            photos.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255)
    return photos


class Screen:
    """The images, the teacher's outputs on them and the student being rated."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.model = load_model(args.checkpoint)
        self.student: torch.nn.Module = self.model.student
        self.images = {
            "train": load_images(args.data / "train" / "normal", args.image_size),
            "good": load_images(args.data / "test" / "normal", args.image_size),
            "bad": load_images(args.data / "test" / "abnormal", args.image_size),
        }
        self.targets: dict[str, torch.Tensor] = {}
        self.teacher_ir: Any = None  # the quantised teacher's IR with --ptq openvino
        self.teacher_ms = 0.0
        sizes = {kind: len(images) for kind, images in self.images.items()}
        print(f"training normals, test good and defective: {sizes}", flush=True)

    def teach(self) -> None:
        """The (standardised) teacher's output for every image, through OpenVINO."""
        teacher = self.teacher_ir if self.teacher_ir is not None else StandardisedTeacher(self.model)
        for kind, images in self.images.items():
            self.targets[kind], ms = on_openvino(teacher, images)
            self.teacher_ms = ms if kind == "good" else self.teacher_ms

    def quantize(self, rng: np.random.Generator) -> None:
        """Teacher and student through ``nncf.quantize``; the teacher's outputs computed again."""
        n = self.args.calibration
        normals = self.images["train"]
        chosen = [normals[i : i + 1] for i in rng.permutation(len(normals))[:n]]
        if self.args.ptq == "openvino":  # as inspectd quantize does it, on each network's IR
            teacher = converted(StandardisedTeacher(self.model), chosen[0])
            self.teacher_ir = nncf.quantize(teacher, nncf.Dataset([c.numpy() for c in chosen]), subset_size=n)
            student = converted(self.student, chosen[0])
            self.student = nncf.quantize(student, nncf.Dataset([c.numpy() for c in chosen]), subset_size=n)
        else:
            calibration = nncf.Dataset(chosen)
            self.model.teacher = nncf.quantize(self.model.teacher, calibration, subset_size=n)
            # a quantised copy, put in the model so that the model's own training loss trains it
            self.model.student = nncf.quantize(self.model.student, calibration, subset_size=n)
            self.student = self.model.student
        self.teach()

    def rate(self, name: str) -> float:
        """Print AUROC and EER of the map's maximum; return teacher plus student ms per image."""
        n = min(self.args.scale_images, len(self.images["train"]))
        maps, student_ms = {}, 0.0
        for kind in ("train", "good", "bad"):
            images = self.images[kind][:n] if kind == "train" else self.images[kind]
            out, ms = on_openvino(self.student, images)
            maps[kind] = (self.targets[kind][: len(images)] - out[:, :CHANNELS]).pow(2).mean(1)
            student_ms = ms if kind == "good" else student_ms
        level = maps["train"].mean(0)
        scale = (level / level.mean()).clamp_min(FLOOR)
        normal = (maps["good"] / scale).amax((-2, -1)).tolist()
        abnormal = (maps["bad"] / scale).amax((-2, -1)).tolist()
        trained = self.model.map_scale[0, 0]  # the float model's, measured in training
        as_trained = [(maps[kind] / trained).amax((-2, -1)).tolist() for kind in ("good", "bad")]
        print(
            f"{name:14s} AUROC {auroc(normal, abnormal):.3f}  EER {eer(normal, abnormal):.3f}  "
            f"(with the trained scale {auroc(*as_trained):.3f} / {eer(*as_trained):.3f})  "
            f"teacher {self.teacher_ms:.0f} + student {student_ms:.0f} ms/image"
            f"  ({time.monotonic() - self.started:.0f} s)",
            flush=True,
        )
        return self.teacher_ms + student_ms

    def train(self, rng: np.random.Generator) -> None:
        """The student's training loss against the quantised teacher, its quantisers learning too."""
        photos = penalty_crops(self.args.image_size, self.args.seed)
        half = self.args.image_size // 2
        normals, targets = self.images["train"], self.targets["train"]
        trainable = [p for p in self.student.parameters() if p.requires_grad and p.is_floating_point()]
        optimizer = torch.optim.Adam(trainable, lr=self.args.lr, weight_decay=1e-5)
        for step in range(1, self.args.steps + 1):
            self.student.train()
            index = int(rng.integers(len(normals)))
            photo = photos[int(rng.integers(len(photos)))]
            top, left = (int(rng.integers(side - half + 1)) for side in photo.shape[1:])
            crop = photo[:, top : top + half, left : left + half][None]
            if rng.random() < GRAYSCALE_P:  # anomalib's RandomGrayscale on the penalty images
                crop = (crop * LUMA[:, None, None]).sum(1, keepdim=True).expand(-1, 3, -1, -1)
            output = self.student(normals[index : index + 1])[:, :CHANNELS]
            distance = (targets[index : index + 1] - output).pow(2)
            loss, *_ = self.model.student_losses(crop, distance)  # hard-feature term and penalty
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % self.args.eval_every == 0 or step == self.args.steps:
                self.rate(f"int8 qat {step}")


def main() -> None:
    parser = checkpoint_parser(__doc__)
    parser.add_argument("--calibration", type=int, default=100, help="training normals for NNCF's statistics")
    parser.add_argument("--steps", type=int, default=300, help="quantisation-aware steps of the student")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=3e-5, help="Adam; inspectd train ends at 3e-5")
    parser.add_argument("--scale-images", type=int, default=100, help="training normals for the map's scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ptq",
        choices=("torch", "openvino"),
        default="torch",
        help="NNCF on the PyTorch networks (then trainable) or on their OpenVINO IRs (no training)",
    )
    args = parser.parse_args()
    if args.ptq == "openvino" and args.steps:
        parser.error("--ptq openvino quantises the IRs, which do not train: pass --steps 0")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    screen = Screen(args)
    screen.teach()
    float_ms = screen.rate("float")
    screen.quantize(rng)
    int8_ms = screen.rate("int8 ptq")
    print(f"INT8 runs at {float_ms / int8_ms:.2f}x the float pair's speed on this CPU", flush=True)
    if args.steps:
        screen.train(rng)


if __name__ == "__main__":
    main()
