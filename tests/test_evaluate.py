"""Evaluation: metric functions on score sets with known answers, then the command on a real export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.cli import main
from inspectd.card import ModelCard, compute_model_id, write_card
from inspectd.export import XML_IN_EXPORT
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
    card = json.loads((tiny_model / "model.json").read_text())
    assert (data["n_normal"], data["n_abnormal"], data["threshold"]) == (10, 6, card["threshold"])
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


def _fake_export(root: Path, **card: Any) -> Path:
    xml = root / "model" / XML_IN_EXPORT
    xml.parent.mkdir(parents=True)
    xml.write_text("<net/>")
    xml.with_suffix(".bin").write_bytes(b"\0")
    write_card(root / "model", ModelCard(model_id=compute_model_id(xml), **card))
    return root / "model"


def _scored_folders(root: Path) -> tuple[Path, Path, dict[Path, float]]:
    """Spread-out scores with mistakes of both kinds at threshold 0.5."""
    rng = np.random.default_rng(1)
    values = {
        "normal": np.clip(rng.normal(0.35, 0.12, 40), 0, 1),  # a few above 0.5: false rejects
        "abnormal": np.clip(rng.normal(0.65, 0.15, 30), 0, 1),  # a few below 0.5: false accepts
    }
    scores = {}
    for kind, kind_values in values.items():
        (root / kind).mkdir()
        for i, value in enumerate(kind_values):
            path = root / kind / f"{kind}-{i:02d}.png"
            _png(path)
            scores[path] = float(value)
    return root / "normal", root / "abnormal", scores


def _colour_pixels(rgb: np.ndarray, colour: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    target = np.round(np.asarray(to_rgb(colour)) * 255).astype(int)
    return np.all(np.abs(rgb.astype(int) - target) <= 2, axis=-1)


def test_report_shows_both_distributions_the_threshold_and_the_worst_mistakes(tmp_path: Path) -> None:
    """Scorer and anomaly maps are faked (this is about the report); folders, card, PNGs are real."""
    from PIL import Image

    from training.evaluate import score_folders
    from training.report import ABNORMAL_COLOUR, NORMAL_COLOUR, THRESHOLD_COLOUR, write_report

    model = _fake_export(tmp_path, threshold=0.5, teacher="random(seed=0)")
    normal, abnormal, scores = _scored_folders(tmp_path)
    scored = score_folders(model, normal, abnormal, scorer=lambda _xml, paths: [scores[p] for p in paths])
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    index = write_report(
        tmp_path / "report",
        scored,
        maps=lambda _xml, paths: [ramp for _ in paths],
        worst=3,
        warnings=["2 of these images were used to train <the model>"],
    )

    report = tmp_path / "report"
    result = scored.evaluation()
    assert 0 < result.far < 0.5 and 0 < result.frr < 0.5  # the fixture has mistakes of both kinds
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == sorted(
        ["scores.png", "roc.png"] + [f"false_{k}_{i}.png" for k in ("accept", "reject") for i in (1, 2, 3)]
    )

    rgb = np.asarray(Image.open(report / "scores.png").convert("RGB"))
    top, bottom = rgb[: rgb.shape[0] // 2], rgb[rgb.shape[0] // 2 :]
    assert _colour_pixels(top, NORMAL_COLOUR).sum() > 1500  # normal bars, in the upper panel
    assert _colour_pixels(bottom, ABNORMAL_COLOUR).sum() > 1500  # abnormal bars, in the lower panel
    assert _colour_pixels(top, ABNORMAL_COLOUR).sum() == 0
    line = _colour_pixels(rgb, THRESHOLD_COLOUR)
    assert line.sum() > 400
    columns = np.flatnonzero(line.sum(axis=0) > rgb.shape[0] // 4)  # a vertical line through both panels
    assert columns.size > 0

    worst_accept = min(s for p, s in scores.items() if p.parent == abnormal)
    page = index.read_text(encoding="utf-8")
    assert f"score {worst_accept:.3f}" in page.split("Worst false rejects")[0].split("Worst false accepts")[1]
    assert "WARNING" in page and "random teacher" in page
    assert "WARNING: 2 of these images were used to train &lt;the model&gt;" in page
    confusion = (report / "confusion.csv").read_text().splitlines()
    rejected_normals = sum(s >= 0.5 for p, s in scores.items() if p.parent == normal)
    assert confusion[1] == f"normal,{40 - rejected_normals},{rejected_normals}"

    sheet = np.asarray(Image.open(report / "false_accept_1.png").convert("RGB"))
    assert sheet.shape[1] > sheet.shape[0]  # the image beside its overlay
    right = sheet[:, sheet.shape[1] // 2 + 10 :]
    assert right[:, -5, 0].mean() > right[:, 5, 0].mean() + 40  # the hot (red) side of the ramp


def test_report_html_links_every_file_it_wrote(tmp_path: Path) -> None:
    import re

    from training.evaluate import score_folders
    from training.report import write_report

    model = _fake_export(tmp_path, threshold=0.5, teacher="pretrained")
    normal, abnormal, scores = _scored_folders(tmp_path)
    scored = score_folders(model, normal, abnormal, scorer=lambda _xml, paths: [scores[p] for p in paths])
    flat = np.zeros((16, 16), np.float32)
    index = write_report(tmp_path / "report", scored, maps=lambda _xml, paths: [flat for _ in paths])

    page = index.read_text(encoding="utf-8")
    linked = set(re.findall(r'(?:src|href)="([^"]+)"', page))
    written = {p.name for p in index.parent.iterdir()} - {"index.html"}
    assert linked == written
    assert "WARNING" not in page  # a pretrained teacher needs no warning


@pytest.mark.timeout(900)
def test_evaluate_report_on_a_real_export(
    tiny_model: Path, surface_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    normal, abnormal = surface_set
    report = tmp_path / "report"
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
            "--report",
            str(report),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert list(json.loads(captured.out)) == JSON_KEYS  # --report adds nothing to stdout's JSON
    assert "WARNING" in captured.err and "random teacher" in captured.err
    for name in ("index.html", "scores.png", "roc.png", "confusion.csv"):
        assert (report / name).stat().st_size > 0
    mistakes = list(report.glob("false_*.png"))
    page = (report / "index.html").read_text(encoding="utf-8")
    for png in mistakes:
        assert f'src="{png.name}"' in page
    assert not (Path.cwd() / "openvino_cache").exists()


@pytest.mark.timeout(900)
def test_predict_gives_the_daemon_score_and_an_anomaly_map(
    tiny_model: Path, surface_set: tuple[Path, Path], tmp_path: Path
) -> None:
    from inspectd.scorer import Model

    _, abnormal = surface_set
    path = sorted(abnormal.iterdir())[0]
    model = Model(tiny_model, tmp_path / "cache")
    score, heat = model.predict(path)
    assert score.score == model.score(path).score
    assert heat.shape == model.card.image_size and heat.dtype == np.float32
    assert np.isfinite(heat).all()


def test_folders_of_links_train_and_evaluate_alike(
    tiny_model: Path, surface_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Folders of symbolic links (a common way to assemble a data set) are followed by both
    commands; a broken link is named in a one-line error by both, before any work."""
    normal, abnormal = surface_set
    linked = {}
    for kind, folder in (("normal", normal), ("abnormal", abnormal)):
        linked[kind] = tmp_path / f"links-{kind}"
        linked[kind].mkdir()
        for image in sorted(folder.glob("*.png")):
            (linked[kind] / f"link-{image.name}").symlink_to(image)
    args = ["--normal", str(linked["normal"]), "--abnormal", str(linked["abnormal"])]
    assert main(["evaluate", "--model", str(tiny_model), *args, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (figures["n_normal"], figures["n_abnormal"]) == (10, 6)

    (linked["abnormal"] / "gone.png").symlink_to(tmp_path / "missing.png")
    assert main(["evaluate", "--model", str(tiny_model), *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gone.png" in err[0]
    out = tmp_path / "model"
    assert (
        main(["train", "--normal", str(linked["abnormal"]), "--output", str(out), "--teacher", "random"]) == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("inspectd: error:") and "gone.png" in err[-1]
    assert not out.exists()
