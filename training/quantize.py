"""``inspectd quantize``: an INT8 copy of an existing export, written only if it scores like the
original.

NNCF's post-training quantisation on the OpenVINO IR, with activation statistics from the user's
good parts decoded the way the daemon decodes them; the convolutions run in INT8, the map made of
the networks' outputs stays in float (``map_tail``), and each activation's range is widened
``activation_range_scale`` times (``widen_activation_ranges``: NNCF's ranges clip; on the ELPV mono
export INT8 lost 0.041 AUROC with them and 0.007 with them 1.5 times as wide). With defective parts and
``max_float_layers`` > 0, NNCF's accuracy control (``nncf.quantize_with_accuracy_control``) may
hand up to that many layers back to float, one ranking round each, until the AUROC drop is within
the limit; it is off by default: on the ELPV mono export it ranked by how far each layer moves the
outputs, put two of the teacher's convolutions back into float and made the drop worse (0.042 ->
0.113 -> 0.143), at about 7 minutes a round on 2 cores (benchmarks/RESULTS.md, Speed). Then the
guard scores a validation set with both models through the daemon's own scorer:

- with ``--abnormal``: the image AUROC may drop by at most ``--max-auroc-drop``;
- without: the INT8 scores must rank the good parts like the original (Spearman's rho at least
  ``--min-rank-correlation``) and reject at most ``--max-frr-rise`` more of them at the original
  threshold.

A refused model is never written. An accepted one gets its threshold re-calibrated on its own
scores with the original card's policy, and the card records ``extra.export_precision = int8``
and the guard's figures. The daemon loads it like any other export.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from inspectd.card import ModelCard, compute_model_id, read_card, write_card
from inspectd.errors import InspectdError
from inspectd.export import HASHES_NAME, XML_IN_EXPORT, locate_xml
from inspectd.imaging import decode_rgb
from inspectd.scorer import Model
from training.calibrate import choose_threshold, default_policy, parse_policy, validation_figures
from training.errors import TrainingError
from training.images import list_images, readable
from training.metrics import auroc
from training.settings import ACTIVATION_RANGE_SCALE

MIN_CALIBRATION_IMAGES = 10


@dataclass(frozen=True)
class QuantizeOptions:
    model: Path
    calibration: Path  # good parts: NNCF's statistics and the guard's normals
    output: Path
    abnormal: Path | None = None
    max_auroc_drop: float = 0.01
    min_rank_correlation: float = 0.95
    max_frr_rise: float = 0.02
    subset_size: int = 300  # NNCF's statistics sample
    max_float_layers: int = 0  # with abnormal parts: NNCF's accuracy control may revert this many
    activation_range_scale: float = ACTIVATION_RANGE_SCALE  # each activation quantiser's range x this
    overwrite: bool = False


# NNCF ranks the layers by how far their rounding moves the outputs of this many validation images
RANKING_IMAGES = 100
MAX_RANGE_SCALE = 16.0  # 16 times the range leaves 16 of 256 levels for what NNCF measured


def quantize(o: QuantizeOptions, say: Callable[[str], None] = lambda _: None) -> ModelCard:
    """Write the INT8 export to ``o.output`` and return its card, or raise TrainingError."""
    xml = locate_xml(o.model)
    card = read_card(xml)
    normals = _images(o.calibration, "--calibration")
    abnormals = _images(o.abnormal, "--abnormal") if o.abnormal else []
    if len(normals) < MIN_CALIBRATION_IMAGES:
        raise TrainingError(
            f"--calibration {o.calibration}: {len(normals)} image(s); give at least "
            f"{MIN_CALIBRATION_IMAGES} good parts (a few hundred is better)"
        )
    if o.max_float_layers < 0:
        raise TrainingError(f"--max-float-layers {o.max_float_layers}: give 0 or more")
    if not 1.0 <= o.activation_range_scale <= MAX_RANGE_SCALE:
        raise TrainingError(
            f"--activation-range-scale {o.activation_range_scale}: give a factor from 1 (NNCF's ranges) "
            f"to {MAX_RANGE_SCALE:g}"
        )
    _check_output(o)
    say(f"quantize: statistics from {min(len(normals), o.subset_size)} of {len(normals)} good parts")
    with tempfile.TemporaryDirectory(prefix="inspectd-quantize-") as tmp:
        work = Path(tmp)
        staged = work / "export"
        if abnormals and o.max_float_layers > 0:
            say(
                f"quantize: NNCF's accuracy control: up to {o.max_float_layers} layer(s) may go back "
                f"to float to keep the AUROC drop within {o.max_auroc_drop}"
            )
        target = staged / XML_IN_EXPORT
        int8_xml = _quantized_ir(xml, card, normals, o.subset_size, target, o=o, abnormals=abnormals)
        layers = int8_layers(int8_xml)
        say(f"quantize: {layers[0]} of {layers[1]} layers in INT8")
        _copy_side_files(xml, staged)
        provisional = dataclasses.replace(card, model_id=compute_model_id(int8_xml))
        write_card(staged, provisional)
        say(f"quantize: guard: scoring {len(normals)} good and {len(abnormals)} defective parts twice")
        fp, fp_ms = _scores(xml, [*normals, *abnormals], work / "cache-fp")
        q, q_ms = _scores(int8_xml, [*normals, *abnormals], work / "cache-int8")
        n = len(normals)
        guard = guard_figures(o, card.threshold, Scored(fp[:n], fp[n:]), Scored(q[:n], q[n:]))
        guard.update(
            fp_ms_per_image=round(fp_ms, 1),
            int8_ms_per_image=round(q_ms, 1),
            int8_layers=layers[0],
            layers=layers[1],
            activation_range_scale=o.activation_range_scale,
        )
        if not guard["passed"]:
            raise TrainingError(
                f"quantize: the INT8 model is refused, nothing written: {guard['reason']} (inference "
                f"{guard['fp_ms_per_image']} ms/image original, {guard['int8_ms_per_image']} ms INT8)"
            )
        policy = _policy(card, bool(abnormals))
        threshold = choose_threshold(policy, q[:n], q[n:])
        final = dataclasses.replace(
            provisional,
            threshold=threshold,
            threshold_policy=str(policy),
            validation=validation_figures(policy, threshold, q[:n], q[n:]),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            extra={
                **card.extra,
                "export_precision": "int8",
                "quantized_from": {"model_id": card.model_id, "threshold": card.threshold},
                "quantization": {"tool": f"nncf {_nncf_version()}", "guard": guard},
            },
        )
        write_card(staged, final)
        _publish(staged, o.output, o.overwrite)
    return final


@dataclass(frozen=True)
class Scored:
    """One model's scores of the guard's good and defective parts."""

    normal: Sequence[float]
    abnormal: Sequence[float]


def guard_figures(o: QuantizeOptions, threshold: float, fp: Scored, q: Scored) -> dict[str, Any]:
    """How far the INT8 scores moved from the original ones, and whether that is acceptable."""
    fp_normal, fp_abnormal, q_normal, q_abnormal = fp.normal, fp.abnormal, q.normal, q.abnormal
    rho = spearman(fp_normal, q_normal)
    frr_fp = float(np.mean(np.asarray(fp_normal) >= threshold))
    frr_q = float(np.mean(np.asarray(q_normal) >= threshold))
    figures: dict[str, Any] = {
        "n_normal": len(fp_normal),
        "n_abnormal": len(fp_abnormal),
        "rank_correlation_normal": round(rho, 4),
        "frr_at_original_threshold": {"fp": frr_fp, "int8": frr_q},
    }
    if fp_abnormal:
        before, after = auroc(fp_normal, fp_abnormal), auroc(q_normal, q_abnormal)
        drop = before - after
        figures.update(auroc_fp=round(before, 4), auroc_int8=round(after, 4), auroc_drop=round(drop, 4))
        ok = drop <= o.max_auroc_drop
        why = (
            f"image AUROC {before:.4f} -> {after:.4f}, a drop of {drop:.4f} > --max-auroc-drop "
            f"{o.max_auroc_drop}"
        )
    else:
        ok = rho >= o.min_rank_correlation and frr_q - frr_fp <= o.max_frr_rise
        why = (
            f"rank correlation with the original scores {rho:.4f} (--min-rank-correlation "
            f"{o.min_rank_correlation}), false rejects at the original threshold {frr_fp:.3f} -> "
            f"{frr_q:.3f} (--max-frr-rise {o.max_frr_rise})"
        )
    figures.update(passed=bool(ok), reason=None if ok else why)
    return figures


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank)."""
    from scipy.stats import spearmanr

    if len(a) < 2 or np.ptp(np.asarray(a)) == 0 or np.ptp(np.asarray(b)) == 0:
        return 1.0 if list(a) == list(b) else 0.0
    return float(spearmanr(a, b).statistic)


def _images(folder: Path, flag: str) -> list[Path]:
    if not folder.is_dir():
        raise TrainingError(f"{flag} {folder} is not a folder")
    return [readable(p) for p in list_images(folder)]


def _check_output(o: QuantizeOptions) -> None:
    if o.output.exists() and not o.output.is_dir():
        raise TrainingError(f"--output {o.output} exists and is not a folder")
    if o.output.resolve() == Path(o.model).resolve():
        raise TrainingError("--output must be a new folder, not the export being quantised")
    if o.output.is_dir() and any(o.output.iterdir()) and not o.overwrite:
        raise TrainingError(f"--output {o.output} is not empty; choose a new folder (or pass --overwrite)")


def _quantized_ir(
    xml: Path,
    card: ModelCard,
    images: list[Path],
    subset: int,
    out: Path,
    *,
    o: QuantizeOptions | None = None,
    abnormals: Sequence[Path] = (),
) -> Path:
    """The INT8 IR at ``out``: plain post-training quantisation, or with ``abnormals`` (and
    ``o.max_float_layers``) NNCF's accuracy control against the image AUROC of ``images`` and
    ``abnormals``."""
    import nncf
    import openvino as ov

    height, width = card.image_size

    def tensor(path: Path) -> np.ndarray:
        try:
            return input_tensor(path, (width, height))
        except InspectdError as exc:
            raise TrainingError(f"{path}: {exc}") from exc

    calibration = [tensor(path) for path in images[:subset]]
    model = ov.Core().read_model(xml)
    float_tail = nncf.IgnoredScope(names=map_tail(model), validate=False)
    if o is not None and abnormals and o.max_float_layers > 0:
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

        labelled = [(path, 0) for path in images] + [(path, 1) for path in abnormals]
        quantized = nncf.quantize_with_accuracy_control(
            _float_outputs(model),
            nncf.Dataset(calibration),
            nncf.Dataset(labelled, lambda item: tensor(item[0])),
            _auroc_of(tensor),
            max_drop=o.max_auroc_drop,
            subset_size=len(calibration),
            ignored_scope=float_tail,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                max_num_iterations=o.max_float_layers,
                ranking_subset_size=min(RANKING_IMAGES, len(labelled)),
                num_ranking_workers=1,
            ),
        )
        quantized = _with_outputs_of(model, quantized)
    else:
        quantized = nncf.quantize(
            model, nncf.Dataset(calibration), subset_size=len(calibration), ignored_scope=float_tail
        )
    if o is not None and o.activation_range_scale != 1.0:
        widen_activation_ranges(quantized, o.activation_range_scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, out, compress_to_fp16=False)
    return out


def input_tensor(path: Path, size: tuple[int, int]) -> np.ndarray:
    """One image as the daemon's scorer hands it to the IR (OpenVINOInferencer's input): decoded,
    shrunk to ``size`` (width, height), 1x3xHxW float in [0, 1]."""
    return np.ascontiguousarray(decode_rgb(path, shrink_to=size).transpose(2, 0, 1)[None])


def widen_activation_ranges(model: Any, factor: float) -> Any:
    """Every activation quantiser's input and output range times ``factor``, in place (a
    quantiser of weights, whose input is a constant, is left alone); a symmetric or unsigned
    range stays aligned on zero.

    NNCF sets an activation's range from the mean over the calibration images of each one's
    minimum and maximum, so the extremes of about half of the good parts, and whatever a defect
    adds beyond them, are clipped; a wider range clips less at the price of coarser steps. On the
    ELPV mono export (AVX2 CPU) INT8 lost 0.041 AUROC with NNCF's ranges and 0.007 with them 1.5
    times as wide, 0.009 at twice and 0.015 at three times (benchmarks/RESULTS.md, Speed).
    """
    import openvino as ov

    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize" or _is_constant(op.input_value(0).get_node()):
            continue
        for index in range(1, 5):  # input low, input high, output low, output high
            value = op.input_value(index).get_node().get_data() * np.float32(factor)
            op.input(index).replace_source_output(ov.opset13.constant(value).output(0))
    return model


def _is_constant(node: Any) -> bool:
    """A constant, or a constant converted (weights stored in another precision)."""
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return bool(node.get_type_name() == "Constant")


def _auroc_of(tensor: Callable[[Path], np.ndarray]) -> Callable[[Any, Any], tuple[float | None, list[Any]]]:
    """NNCF's validation function: the image AUROC of (path, label) items, and each item's
    outputs, which NNCF compares between the original and the INT8 model to rank the layers
    (its "logits" mode; a lone item has no AUROC, which tells NNCF to rank by outputs)."""

    def validate(compiled: Any, items: Any) -> tuple[float | None, list[Any]]:
        scores: dict[int, list[float]] = {0: [], 1: []}
        outputs = []
        score = next((out for out in compiled.outputs if "pred_score" in out.get_names()), compiled.output(0))
        for path, label in items:
            result = compiled(tensor(path))
            outputs.append(list(result.values()))
            scores[label].append(float(np.asarray(result[score]).reshape(-1)[0]))
        if not scores[0] or not scores[1]:
            return None, outputs
        return auroc(scores[0], scores[1]), outputs

    return validate


def _float_outputs(model: Any) -> Any:
    """A copy of the model without its boolean outputs (anomalib's pred_label and pred_mask, the
    score and map compared with the exported threshold): NNCF ranks layers by the squared change
    of every output, which a boolean output cannot give."""
    view = model.clone()
    for result in list(view.get_results()):
        if not result.get_output_element_type(0).is_real():
            view.remove_result(result)
    return view


def _with_outputs_of(original: Any, quantized: Any) -> Any:
    """``quantized`` (made from ``_float_outputs(original)``) with the original's other outputs put
    back, in the original's order: their last nodes are moved over to read the quantized model's
    nodes of the same names (``original`` is not usable afterwards)."""
    import openvino as ov

    ops = {op.get_friendly_name(): op for op in quantized.get_ordered_ops()}
    kept = {out.get_any_name(): out.get_node() for out in quantized.outputs}
    results = []
    for out in original.outputs:
        if out.get_any_name() in kept:
            results.append(kept[out.get_any_name()])
            continue
        for port in out.get_node().input_value(0).get_node().inputs():
            source = port.get_source_output()
            if source.get_node().get_type_name() != "Constant":
                port.replace_source_output(
                    ops[source.get_node().get_friendly_name()].output(source.get_index())
                )
        results.append(out.get_node())
    return ov.Model(results, quantized.get_parameters(), original.get_friendly_name())


def int8_layers(xml: Path) -> tuple[int, int]:
    """How many of the IR's convolutions and matrix products read an INT8 (fake-quantised)
    input, and how many there are."""
    import openvino as ov

    kinds = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul"}
    layers = [op for op in ov.Core().read_model(xml).get_ordered_ops() if op.get_type_name() in kinds]
    int8 = [op for op in layers if op.input_value(0).get_node().get_type_name() == "FakeQuantize"]
    return len(int8), len(layers)


def map_tail(model: Any) -> list[str]:
    """The names of the nodes that make the anomaly map out of the networks' outputs, for NNCF to
    leave in float: each difference that is squared (teacher minus student; student minus
    autoencoder) and everything after it (the map, its scale, resize and normalisation, the score).

    Quantised, the difference's inputs were the teacher's and the student's 384-channel outputs
    rounded to 256 levels per tensor, which buried the faint differences a defect makes: ELPV
    mono export on a 2-core AVX2 CPU, image AUROC 0.939 -> 0.714 with them in INT8, 0.892 with
    them in float, both at about twice the speed (benchmarks/RESULTS.md, Speed).
    """
    tail: set[str] = set()
    todo = [
        op.input_value(0).get_node()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Power" and op.input_value(0).get_node().get_type_name() == "Subtract"
    ]
    while todo:
        op = todo.pop()
        if op.get_friendly_name() not in tail:
            tail.add(op.get_friendly_name())
            todo.extend(target.get_node() for out in op.outputs() for target in out.get_target_inputs())
    return sorted(tail)


def _copy_side_files(xml: Path, staged: Path) -> None:
    for folder in (xml.parent, *xml.parents[:3]):
        if (folder / HASHES_NAME).is_file():
            shutil.copy2(folder / HASHES_NAME, staged / HASHES_NAME)
            return


def _scores(xml: Path, paths: list[Path], cache: Path) -> tuple[list[float], float]:
    """Scores through the daemon's scorer, and the mean inference ms per image."""
    try:
        model = Model(xml, cache)
    except InspectdError as exc:
        raise TrainingError(f"cannot load {xml}: {exc}") from exc
    scores, ms = [], []
    for path in paths:
        try:
            result = model.score(path)
        except InspectdError as exc:
            raise TrainingError(f"{path.name}: {exc}") from exc
        scores.append(result.score)
        ms.append(result.inference_ms)
    return scores, float(np.median(ms)) if ms else 0.0


def _policy(card: ModelCard, has_abnormal: bool) -> Any:
    try:
        policy = parse_policy(card.threshold_policy)
    except TrainingError:
        return default_policy(has_abnormal)
    return policy if has_abnormal or policy.name != "f1" else default_policy(False)


def _publish(staged: Path, output: Path, overwrite: bool) -> None:
    """Move the finished export into place; an old one is replaced only with ``overwrite``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists():
        if not overwrite and any(output.iterdir()):
            raise TrainingError(f"--output {output} is not empty")
        old = output.with_name(f".{output.name}.old-{time.time_ns()}")
        output.rename(old)
        shutil.copytree(staged, output)
        shutil.rmtree(old)
    else:
        shutil.copytree(staged, output)


def _nncf_version() -> str:
    import nncf

    return str(nncf.__version__)
