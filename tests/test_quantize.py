"""``inspectd quantize`` on the tiny model: a loadable INT8 export that ranks parts like the
original, and nothing written when the guard refuses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from daemon.cli import main
from inspectd.card import compute_model_id, read_card, write_card
from inspectd.export import XML_IN_EXPORT
from inspectd.scorer import Model
from training.quantize import map_tail, spearman


def fake_quantizers(xml: Path, original: Path) -> tuple[int, list[str]]:
    """How many FakeQuantize nodes the INT8 IR has, and the nodes of the original's map tail any
    of them feeds."""
    import openvino as ov

    model = ov.Core().read_model(xml)
    tail = set(map_tail(ov.Core().read_model(original)))
    assert tail, "the original IR has no map tail"
    quantizers = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    fed = {
        target.get_node().get_friendly_name()
        for op in quantizers
        for out in op.outputs()
        for target in out.get_target_inputs()
    }
    return len(quantizers), sorted(fed & tail)


@pytest.mark.timeout(900)
def test_quantize_writes_an_int8_export_the_daemon_loads(
    tiny_model: Path, surface_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    normal, abnormal = surface_set
    out = tmp_path / "int8"
    args = ["quantize", "--model", str(tiny_model), "--calibration", str(normal), "--output", str(out)]
    assert main([*args, "--abnormal", str(abnormal), "--max-auroc-drop", "0.2"]) == 0
    assert "INT8 export written" in capsys.readouterr().out
    card = read_card(out / XML_IN_EXPORT)  # the card's model_id matches the new IR
    original = read_card(tiny_model / XML_IN_EXPORT)
    assert card.model_id != original.model_id
    assert card.extra["export_precision"] == "int8"
    guard = card.extra["quantization"]["guard"]
    assert guard["passed"] and guard["n_normal"] == 10 and guard["n_abnormal"] == 6
    assert 0 < guard["int8_layers"] <= guard["layers"]
    assert card.extra["quantized_from"]["model_id"] == original.model_id
    assert (out / "train_hashes.txt").read_text() == (tiny_model / "train_hashes.txt").read_text()
    # the IR holds INT8 weights
    assert "i8" in (out / XML_IN_EXPORT).read_text() or "u8" in (out / XML_IN_EXPORT).read_text()
    # the networks are quantised, the map made of their outputs is not: no rounding of the
    # teacher's and the student's outputs before their difference is squared
    quantizers, into_tail = fake_quantizers(out / XML_IN_EXPORT, tiny_model / XML_IN_EXPORT)
    assert quantizers and not into_tail, into_tail
    images = sorted(normal.glob("*.png")) + sorted(abnormal.glob("*.png"))
    # f32 for the float parts of both: on a CPU with bf16 the daemon's
    # `auto` may pick bf16, whose rounding would blur this near-flat tiny model's ranks
    fp = [Model(tiny_model, tmp_path / "c1", precision="f32").score(p).score for p in images]
    q = [Model(out, tmp_path / "c2", precision="f32").score(p).score for p in images]
    assert spearman(fp, q) >= 0.8, (fp, q)


@pytest.mark.timeout(900)
def test_a_refused_int8_model_is_not_written(
    tiny_model: Path, surface_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    normal, abnormal = surface_set
    out = tmp_path / "int8"
    args = ["quantize", "--model", str(tiny_model), "--calibration", str(normal), "--output", str(out)]
    assert main([*args, "--min-rank-correlation", "1.01"]) == 1  # impossible: refused
    err = capsys.readouterr().err
    assert "refused, nothing written" in err and "rank correlation" in err
    assert not out.exists()
    assert main([*args, "--abnormal", str(abnormal), "--max-auroc-drop", "-1"]) == 1
    assert "--max-auroc-drop -1" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "few").mkdir()
    assert main([*args[:3], "--calibration", str(tmp_path / "few"), "--output", str(out)]) == 1
    assert "give at least 10 good parts" in capsys.readouterr().err
    assert main([*args, "--activation-range-scale", "0.5"]) == 1
    assert "--activation-range-scale 0.5: give a factor from 1" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.timeout(900)
def test_activation_ranges_are_widened_by_the_scale(
    tiny_model: Path, surface_set: tuple[Path, Path], tmp_path: Path
) -> None:
    """--activation-range-scale K: each activation quantiser's range is K times the one NNCF
    measured (the same statistics either way); the INT8 weights are NNCF's."""
    import numpy as np
    import openvino as ov

    from training.quantize import QuantizeOptions, _quantized_ir

    normal, _ = surface_set
    card = read_card(tiny_model / XML_IN_EXPORT)
    normals = sorted(normal.glob("*.png"))

    def quantized(k: float) -> tuple[dict[str, list[np.ndarray]], list[np.ndarray]]:
        o = QuantizeOptions(tiny_model, normal, tmp_path, activation_range_scale=k)
        xml = _quantized_ir(tiny_model / XML_IN_EXPORT, card, normals, 10, tmp_path / f"x{k}" / "m.xml", o=o)
        ops = ov.Core().read_model(xml).get_ordered_ops()
        ranges = {
            op.get_friendly_name(): [op.input_value(i).get_node().get_data() for i in range(1, 5)]
            for op in ops
            if op.get_type_name() == "FakeQuantize"
        }
        weights = [
            op.get_data()
            for op in ops
            if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
        ]
        return ranges, weights

    (plain, plain_weights), (wide, wide_weights) = quantized(1.0), quantized(2.0)
    assert plain and plain.keys() == wide.keys()
    for name, bounds in plain.items():
        for before, after in zip(bounds, wide[name], strict=True):
            np.testing.assert_allclose(after, 2.0 * before, rtol=1e-6, err_msg=name)
    assert plain_weights and len(plain_weights) == len(wide_weights)
    assert all(np.array_equal(a, b) for a, b in zip(plain_weights, wide_weights, strict=True))


@pytest.mark.timeout(900)
def test_accuracy_control_puts_layers_back_into_float(
    tiny_model: Path, surface_set: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-float-layers N: NNCF's accuracy control reverts layers to float, N rounds at most,
    while the AUROC drop is over the limit; the IR it gives keeps every output of the original
    (anomalib's boolean pred_label and pred_mask too, which NNCF could not rank by) and the
    daemon scores with it. The tiny model keeps its AUROC of 1 in INT8, so the metric NNCF is
    given rates the original 1 and every later model 0: nothing meets the limit."""
    import itertools

    import openvino as ov

    import training.quantize
    from training.quantize import QuantizeOptions, _quantized_ir, int8_layers

    normal, abnormal = surface_set
    card = read_card(tiny_model / XML_IN_EXPORT)
    normals, abnormals = sorted(normal.glob("*.png")), sorted(abnormal.glob("*.png"))

    def quantized(n: int) -> Path:
        rated = itertools.count()
        monkeypatch.setattr(training.quantize, "auroc", lambda _good, _bad: 1.0 if next(rated) == 0 else 0.0)
        o = QuantizeOptions(tiny_model, normal, tmp_path, max_auroc_drop=0.01, max_float_layers=n)
        out = tmp_path / f"float-{n}" / XML_IN_EXPORT
        return _quantized_ir(tiny_model / XML_IN_EXPORT, card, normals, 10, out, o=o, abnormals=abnormals)

    (plain, total), controlled = int8_layers(quantized(0)), quantized(2)
    assert 0 < int8_layers(controlled)[0] < plain <= total, (int8_layers(controlled), plain, total)
    names = [out.get_any_name() for out in ov.Core().read_model(controlled).outputs]
    assert names == [out.get_any_name() for out in ov.Core().read_model(tiny_model / XML_IN_EXPORT).outputs]
    export = controlled.parents[2]
    write_card(export, dataclasses.replace(card, model_id=compute_model_id(controlled)))
    assert Model(export, tmp_path / "cache", precision="f32").score(abnormals[0]).score >= 0


@pytest.mark.timeout(900)
def test_train_precision_int8_exports_through_the_same_guard(
    surface_set: tuple[Path, Path], tmp_path: Path
) -> None:
    from training.fit import train
    from training.options import TrainOptions

    normal, abnormal = surface_set
    warnings: list[str] = []
    card = train(
        TrainOptions(
            normal,
            tmp_path / "m",
            abnormal_dir=abnormal,
            max_steps=2,
            teacher="random",
            export_precision="int8",
        ),
        warn=warnings.append,
    )
    on_disk = read_card(tmp_path / "m" / XML_IN_EXPORT)  # the card matches the IR that is there
    assert on_disk == card
    if card.extra["export_precision"] == "int8":
        assert card.extra["quantization"]["guard"]["passed"] and not warnings
    else:  # the guard refused: the fp32 export stays, and the user is told
        assert "int8_refused" in card.extra and any("fp32 export is kept" in w for w in warnings)
    assert Model(tmp_path / "m", tmp_path / "cache").score(sorted(abnormal.glob("*.png"))[0]).score >= 0


@pytest.mark.timeout(900)
def test_a_frozen_lite_teachers_map_stays_in_float(surface_set: tuple[Path, Path], tmp_path: Path) -> None:
    """With the offline default's kind of teacher NNCF rounded the teacher's and the student's
    outputs to 256 levels right before their difference (ELPV: AUROC 0.939 -> 0.714); the
    networks are quantised, the map is not."""
    from training.fit import train
    from training.options import TrainOptions
    from training.quantize import _quantized_ir

    normal, _abnormal = surface_set
    card = train(TrainOptions(normal, tmp_path / "model", max_steps=2, teacher="lite0", seed=0))
    images = sorted(normal.glob("*.png"))
    original = tmp_path / "model" / XML_IN_EXPORT
    xml = _quantized_ir(original, card, images, len(images), tmp_path / "int8.xml")
    quantizers, into_tail = fake_quantizers(xml, original)
    assert quantizers > 50 and not into_tail, into_tail
