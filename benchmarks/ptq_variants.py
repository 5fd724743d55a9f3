"""Which part of an export NNCF's post-training INT8 costs accuracy: a screen of variants.

Each variant quantises the export's IR with ``nncf.quantize`` as ``inspectd quantize`` does (the
map made of the networks' outputs in float, ``training.quantize.map_tail``), changes one thing,
and scores the test images straight through OpenVINO (f32 for what stays in float), so a variant
costs about a minute and a half on a 2-core CPU instead of a full ``inspectd quantize`` run:

    python benchmarks/ptq_variants.py --data /tmp/elpv-mono [--variants fp32 base teacher-float ...]

``--data`` is a ``benchmarks/elpv.py --out`` folder (train/normal, test/normal, test/abnormal,
model). Prints one JSON line per variant: image AUROC, EER and ms per image.

Variants about the activations' ranges (NNCF sets each quantiser's range from the mean over the
calibration images of each image's extremes, so the tails of about half of the good parts, and
what a defect adds beyond them, are clipped):
``calibration-with-defects`` (statistics from the test's good *and* defective cells: a diagnosis,
not a deployable recipe), ``calibration-with-photos`` (the good cells plus the penalty set's
natural photos), ``minmax`` (each range the absolute extremes instead of the mean of every image's
extremes), ``ranges-xK`` (each activation range widened K times after quantisation: fewer levels
per unit, less clipping) and ``overflow-fix-all`` (NNCF's 7-bit weights for every layer, not only
the first: CPUs without VNNI can saturate 16-bit sums of 8-bit products).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from inspectd.export import locate_xml
from training.metrics import auroc, eer
from training.quantize import input_tensor, map_tail, widen_activation_ranges

Tensors = list[NDArray[np.float32]]


def load(folder: Path, size: int) -> Tensors:
    """The folder's PNGs decoded as the daemon feeds them (1x3xHxW, [0, 1])."""
    return [input_tensor(path, (size, size)) for path in sorted(folder.glob("*.png"))]


class Screen:
    def __init__(self, data: Path, size: int) -> None:
        import openvino as ov

        self.core = ov.Core()
        self.size = size
        self.xml = locate_xml(data / "model")
        self.good = load(data / "test" / "normal", size)
        self.bad = load(data / "test" / "abnormal", size)
        self.train = load(data / "train" / "normal", size)
        model = self.core.read_model(self.xml)
        self.tail = map_tail(model)
        convs = [
            op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")
        ]
        self.convs = [op.get_friendly_name() for op in convs]
        self.depthwise = [op.get_friendly_name() for op in convs if op.get_type_name() == "GroupConvolution"]

    def photos(self) -> Tensors:
        """The penalty set's natural photos (scikit-image crops), as ``inspectd train`` builds it."""
        import tempfile

        from training.penalty import build_penalty_set

        with tempfile.TemporaryDirectory() as tmp:
            folder = build_penalty_set(Path(tmp) / "penalty") / "natural"
            return [input_tensor(path, (self.size, self.size)) for path in sorted(folder.glob("*.jpg"))]

    def rate(self, model: Any) -> dict[str, float]:
        compiled = self.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        started = time.perf_counter()
        scores = [float(compiled(x)["pred_score"].reshape(-1)[0]) for x in self.good + self.bad]
        ms = (time.perf_counter() - started) * 1000 / len(scores)
        good, bad = scores[: len(self.good)], scores[len(self.good) :]
        return {"auroc": round(auroc(good, bad), 4), "eer": round(eer(good, bad), 4), "ms": round(ms, 1)}

    def quantized(
        self,
        calibration: Tensors | None = None,
        float_too: list[str] | None = None,
        subset_size: int | None = 300,
        **kw: Any,
    ) -> Any:
        """``subset_size`` None: every calibration image."""
        import nncf

        data = calibration if calibration is not None else self.good
        return nncf.quantize(
            self.core.read_model(self.xml),
            nncf.Dataset(data),
            subset_size=len(data) if subset_size is None else min(subset_size, len(data)),
            ignored_scope=nncf.IgnoredScope(names=self.tail + (float_too or []), validate=False),
            **kw,
        )


def variants(s: Screen) -> dict[str, Callable[[], Any]]:
    """Name -> the model to rate. The student is the last four convolutions (PDN-S), the teacher
    every one before them."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    student, teacher = s.convs[-4:], s.convs[:-4]
    return {
        "calibration-with-defects": lambda: s.quantized(calibration=s.good + s.bad, subset_size=None),
        "calibration-with-photos": lambda: s.quantized(calibration=s.good + s.photos(), subset_size=None),
        "minmax": lambda: s.quantized(
            advanced_parameters=AdvancedQuantizationParameters(
                activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
            )
        ),
        "overflow-fix-all": lambda: s.quantized(
            advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
        ),
        **{f"ranges-x{k}": _widened(s, k) for k in (1.25, 1.5, 2, 3)},
        "fp32": lambda: s.core.read_model(s.xml),
        "base": s.quantized,
        "train-calibration": lambda: s.quantized(calibration=s.train),
        "full-bias-correction": lambda: s.quantized(fast_bias_correction=False),
        "preset-mixed": lambda: s.quantized(preset=nncf.QuantizationPreset.MIXED),
        "student-float": lambda: s.quantized(float_too=student),
        "teacher-float": lambda: s.quantized(float_too=teacher),
        "teacher-and-student-conv1-float": lambda: s.quantized(float_too=[*teacher, student[0]]),
        "first-convs-float": lambda: s.quantized(float_too=[teacher[0], student[0]]),
        "depthwise-float": lambda: s.quantized(float_too=s.depthwise),
        **{f"student-conv{i + 1}-float": _with_float(s, name) for i, name in enumerate(student)},
    }


def _widened(s: Screen, factor: float) -> Callable[[], Any]:
    return lambda: widen_activation_ranges(s.quantized(), factor)


def _with_float(s: Screen, name: str) -> Callable[[], Any]:
    return lambda: s.quantized(float_too=[name])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a benchmarks/elpv.py --out folder")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--variants", nargs="*", default=["fp32", "base", "student-float", "teacher-float"])
    args = parser.parse_args()
    screen = Screen(args.data, args.image_size)
    table = variants(screen)
    unknown = [name for name in args.variants if name not in table]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(table)}")
    for name in args.variants:
        started = time.perf_counter()
        model = table[name]()
        made_s = time.perf_counter() - started
        print(json.dumps({"variant": name, **screen.rate(model), "quantize_s": round(made_s)}), flush=True)


if __name__ == "__main__":
    main()
