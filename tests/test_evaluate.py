"""Evaluation: metric functions on score sets with known answers, then the command on a real export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from daemon.cli import main
from daemon.model_card import XML_IN_EXPORT, ModelCard, compute_model_id, write_card
from training.evaluate import evaluate, format_report
from training.metrics import auroc, eer, evaluate_scores, rates_at

JSON_KEYS = ["auroc", "eer", "far", "frr", "threshold", "n_normal", "n_abnormal"]
NORMAL = [0.1, 0.2, 0.3, 0.4]
ABNORMAL = [0.35, 0.5, 0.6, 0.7]  # one abnormal (0.35) below one normal (0.4)


@pytest.mark.parametrize(
    ("normal", "abnormal", "expected_auroc", "expected_eer"),
    [
        ([0.0, 0.1], [0.5, 0.9], 1.0, 0.0),  # perfectly separated
        ([0.5, 0.9], [0.0, 0.1], 0.0, 1.0),  # perfectly inverted
        ([0.5] * 3, [0.5] * 3, 0.5, 0.5),  # all tied
        (NORMAL, ABNORMAL, 15 / 16, 0.25),  # 15 of 16 pairs ordered; at 0.4 one mistake of each kind
        ([0.1, 0.3], [0.2, 0.4], 0.75, 0.5),
    ],
)
def test_auroc_and_eer_known_answers(
    normal: list[float], abnormal: list[float], expected_auroc: float, expected_eer: float
) -> None:
    assert auroc(normal, abnormal) == pytest.approx(expected_auroc)
    assert eer(normal, abnormal) == pytest.approx(expected_eer)


def test_eer_of_two_gaussians_matches_theory() -> None:
    """Unit-variance normals at 0 and abnormals at 2 cross at 1: EER = P(N(0,1) > 1) = 0.1587."""
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, 20_000).tolist()
    abnormal = rng.normal(2, 1, 20_000).tolist()
    assert eer(normal, abnormal) == pytest.approx(0.1587, abs=0.006)
    assert auroc(normal, abnormal) == pytest.approx(0.9214, abs=0.006)  # Phi(2 / sqrt 2)


def test_rates_at_threshold_count_the_boundary_as_rejected() -> None:
    far, frr = rates_at([0.1, 0.5, 0.6, 0.2], [0.4, 0.5, 0.9], 0.5)
    assert far == pytest.approx(1 / 3)  # only 0.4 is accepted
    assert frr == pytest.approx(2 / 4)  # 0.5 and 0.6 are rejected


def test_missing_class_is_refused() -> None:
    with pytest.raises(ValueError, match="both"):
        auroc([], [0.3])
    with pytest.raises(ValueError, match="both"):
        rates_at([0.1], [], 0.5)


def test_report_dict_has_exactly_the_promised_keys() -> None:
    result = evaluate_scores(NORMAL, ABNORMAL, 0.5)
    assert list(result.to_dict()) == JSON_KEYS
    assert (result.far, result.frr, result.n_normal, result.n_abnormal) == (0.25, 0.0, 4, 4)
    text = format_report(result, Path("m"))
    assert "AUROC      0.938" in text
    assert "1/4 abnormal images accepted" in text


def test_evaluate_uses_the_threshold_from_the_model_card(tmp_path: Path) -> None:
    """The scorer is faked (this is about reading the card); the folders and card are real."""
    xml = tmp_path / "model" / XML_IN_EXPORT
    xml.parent.mkdir(parents=True)
    xml.write_text("<net/>")
    xml.with_suffix(".bin").write_bytes(b"\0")
    write_card(tmp_path / "model", ModelCard(model_id=compute_model_id(xml), threshold=0.3))
    scores = {}
    for kind, values in (("normal", [0.1, 0.35]), ("abnormal", [0.2, 0.8, 0.9])):
        (tmp_path / kind).mkdir()
        for i, value in enumerate(values):
            path = tmp_path / kind / f"{i}.png"
            _png(path)
            scores[path] = value

    result = evaluate(
        tmp_path / "model",
        tmp_path / "normal",
        tmp_path / "abnormal",
        scorer=lambda _xml, paths: [scores[p] for p in paths],
    )
    assert result.threshold == 0.3
    assert (result.far, result.frr) == (pytest.approx(1 / 3), 0.5)


@pytest.mark.timeout(900)
def test_evaluate_json_on_a_real_export(
    tiny_model: Path, surface_set: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    normal, abnormal = surface_set
    code = main(
        [
            "evaluate",
            "--model",
            str(tiny_model),
            "--normal",
            str(normal),
            "--abnormal",
            str(abnormal),
            "--json",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert list(data) == JSON_KEYS
    assert (data["n_normal"], data["n_abnormal"], data["threshold"]) == (10, 6, 0.5)
    for key in ("auroc", "eer", "far", "frr"):
        assert 0.0 <= data[key] <= 1.0
    assert not (Path.cwd() / "openvino_cache").exists()


@pytest.mark.timeout(900)
def test_evaluate_refuses_an_empty_folder(
    tiny_model: Path, surface_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    normal, _ = surface_set
    code = main(
        ["evaluate", "--model", str(tiny_model), "--normal", str(normal), "--abnormal", str(tmp_path)]
    )
    assert code == 1
    assert "abnormal folder" in capsys.readouterr().err


def _png(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), (120, 120, 120)).save(path)
