"""Real tiny training runs for what ``tiny_model`` does not cover: a calibrated f1 threshold with
abnormal images, the data checks, the time budget and --resume, the fp16 export, and that none of
it touches the network."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from inspectd.card import read_card
from inspectd.export import HASHES_NAME, XML_IN_EXPORT
from inspectd.scorer import Model
from training.data_checks import trained_on
from training.errors import TrainingError
from training.fit import train
from training.options import TrainOptions
from training.settings import DEFAULT_LEARNING_RATE
from training.synthetic import make_surface_set


def checkpoint_learning_rate(out: Path) -> float:
    import torch

    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return float(state["optimizer_states"][0]["param_groups"][0]["lr"])


@pytest.fixture
def network_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to reach the network is recorded and fails loudly."""
    calls: list[str] = []

    def refuse(*args: Any, **_: Any) -> Any:
        calls.append(repr(args[-1] if args else ""))
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    """6 good parts (one of another size), 2 defects, and a defect filed among the good parts."""
    normal, abnormal = make_surface_set(tmp_path / "data", 6, 2, size=64, seed=3)
    with Image.open(normal / "0005.png") as image:
        image.resize((80, 80)).save(normal / "0005.png")
    (normal / "misfiled.png").write_bytes((abnormal / "0001.png").read_bytes())
    return normal, abnormal


@pytest.mark.timeout(600)
def test_offline_run_calibrates_stops_on_time_resumes_and_exports_fp16(
    tmp_path: Path,
    dataset: tuple[Path, Path],
    tiny_model: Path,
    network_calls: list[str],
    empty_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    normal, abnormal = dataset
    out = tmp_path / "model"
    warnings: list[str] = []
    card = train(
        TrainOptions(
            normal,
            out,
            abnormal_dir=abnormal,
            max_steps=4,
            max_minutes=1e-6,  # the budget is spent after the first step
            checkpoint_every=1,
            export_precision="fp16",
            teacher="random",
        ),
        warn=warnings.append,
    )
    assert any("different sizes: 64x64 (6), 80x80 (1)" in w for w in warnings)
    assert any("1 normal images are byte-identical" in w for w in warnings)
    assert (card.steps, card.extra["stopped_by"], card.train_images) == (1, "time-budget", 5)
    order = card.extra["memory_format"]  # the log names the order the card records, on a real fit
    assert f"train: the student steps in {order} memory order, the faster here" in capsys.readouterr().err
    assert (card.threshold_policy, card.extra["export_precision"]) == ("f1", "fp16")
    assert read_card(out / XML_IN_EXPORT) == card
    figures = card.validation
    assert (figures["n_normal"], figures["n_abnormal"]) == (1, 2)  # 20 % of 6 held out
    assert 0.0 <= figures["auroc"] <= 1.0 and 0.0 <= figures["far"] <= 1.0

    # the threshold is the one the daemon's own scores give on the held-out defects
    model = Model(out, tmp_path / "cache-ov")
    assert model.card.threshold == card.threshold
    scores = [model.score(p).score for p in sorted(abnormal.iterdir())]
    assert figures["far"] == sum(s < card.threshold for s in scores) / len(scores)

    fp16 = (out / XML_IN_EXPORT).with_suffix(".bin").stat().st_size
    # --student-width auto: a budget that holds no full-width step trains the half-width student
    assert card.extra["student_width"] == "half" and card.extra["full_student_step_seconds"] > 0

    assert trained_on(out, [normal / "0000.png", abnormal / "0000.png", *tiny_model.glob("*.json")]) == [
        normal / "0000.png",
        abnormal / "0000.png",
    ]
    assert len((out / HASHES_NAME).read_text().split()) == 8  # 6 normal + 2 abnormal, the copy once
    assert (out / "checkpoints" / "last.ckpt").is_file()  # stopped early: kept for --resume
    # the budget ended the run, so the learning rate's final tenfold drop came by the clock
    assert checkpoint_learning_rate(out) == pytest.approx(0.1 * DEFAULT_LEARNING_RATE)

    resumed = train(
        TrainOptions(
            normal,
            out,
            abnormal_dir=abnormal,
            max_steps=3,
            checkpoint_every=0,
            early_stop_every=1,
            patience=5,
            teacher="random",
            resume=True,
            overwrite=True,
        ),
        warn=warnings.append,
    )
    assert (resumed.steps, resumed.extra["stopped_by"]) == (3, "max-steps")
    # auto would pick full for 3 steps in 29 minutes; the resumed fit keeps its checkpoint's student
    assert (resumed.extra["student_width"], resumed.extra["full_student_step_seconds"]) == ("half", None)
    fp32 = (out / XML_IN_EXPORT).with_suffix(".bin").stat().st_size  # the same network in fp32
    assert 0.45 < fp16 / fp32 < 0.55
    history = resumed.extra["early_stopping"]["auroc_by_step"]
    assert [step for step, _ in history] == [2, 3]  # measured every step after the resumed one
    assert resumed.extra["early_stopping"]["best_step"] in (2, 3)
    assert resumed.extra["resumed_from"].endswith("last.ckpt")
    assert resumed.extra["final_learning_rate"] == pytest.approx(0.1 * DEFAULT_LEARNING_RATE)  # not twice
    assert not (out / "checkpoints").exists()  # finished: nothing left to resume
    assert network_calls == []


def test_pretrained_teacher_offline_stops_before_fitting(
    tmp_path: Path, dataset: tuple[Path, Path], network_calls: list[str], empty_cache: Path
) -> None:
    with pytest.raises(TrainingError, match="--teacher random") as error:
        train(TrainOptions(dataset[0], tmp_path / "out", max_steps=1, teacher="pretrained"))
    assert "offline" in str(error.value)
    assert network_calls  # it did try, and was refused
    assert not (tmp_path / "out").exists()


def test_run_options_are_checked_before_any_work(tmp_path: Path, dataset: tuple[Path, Path]) -> None:
    normal, _ = dataset
    for kwargs, match in [
        ({"threshold_policy": "f1"}, "needs defective examples"),
        ({"threshold_policy": "target-frr=2"}, "fraction X"),
        ({"max_minutes": 0}, "--max-minutes"),
        ({"export_precision": "int4"}, "--precision"),
        ({"opset": 9}, "--opset"),
        ({"resume": True}, "no checkpoint"),
    ]:
        with pytest.raises(TrainingError, match=match):
            train(TrainOptions(normal, tmp_path / "out", teacher="random", **kwargs))
    assert not (tmp_path / "out").exists()


def test_cli_train_passes_the_new_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import training.fit
    from daemon.cli import main
    from inspectd.card import ModelCard

    seen: dict[str, Any] = {}

    def fake_train(options: TrainOptions) -> ModelCard:
        seen.update(vars(options))
        return ModelCard(model_id="x", threshold=0.42, threshold_policy="target-frr=0.01")

    monkeypatch.setattr(training.fit, "train", fake_train)
    args = ["train", "--normal", str(tmp_path), "--output", str(tmp_path / "o")]
    extra = ["--threshold-policy", "target-frr=0.01", "--precision", "fp16", "--opset", "17"]
    extra += ["--learning-rate", "0.001"]
    assert main([*args, *extra, "--train-precision", "fp32", "--resume", "--max-minutes", "5"]) == 0
    assert (seen["threshold_policy"], seen["learning_rate"]) == ("target-frr=0.01", 0.001)
    assert (seen["export_precision"], seen["opset"], seen["train_precision"]) == ("fp16", 17, "32-true")
    assert (seen["resume"], seen["max_minutes"], seen["early_stop_every"], seen["patience"]) == (
        True,
        5.0,
        100,
        3,
    )
    assert "threshold 0.4200 by target-frr=0.01" in capsys.readouterr().out
    assert main(args) == 0
    assert (seen["export_precision"], seen["max_minutes"], seen["threshold_policy"]) == ("fp32", 29.0, None)
    assert seen["learning_rate"] == 3e-4


def test_cli_train_explains_a_bad_policy(
    tmp_path: Path, dataset: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.cli import main

    args = ["train", "--normal", str(dataset[0]), "--output", str(tmp_path / "o"), "--teacher", "random"]
    assert main([*args, "--threshold-policy", "f3"]) == 1
    assert "target-frr=0.01" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_patience_stops_after_evaluations_without_improvement() -> None:
    from training.early_stop import Patience

    tracker = Patience(2)
    assert [tracker.update(step, v) for step, v in [(100, 0.7), (200, 0.8), (300, 0.8), (400, 0.75)]] == [
        True,
        True,
        False,
        False,
    ]
    assert (tracker.best, tracker.best_step, tracker.exhausted) == (0.8, 200, True)
    tracker.update(500, float("nan"))  # a held-out set without one class never counts as progress
    assert tracker.best_step == 200


def test_evaluate_warns_about_images_the_model_was_trained_on(
    tiny_model: Path, surface_set: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.cli import main

    normal, abnormal = surface_set
    assert (
        main(["evaluate", "--model", str(tiny_model), "--normal", str(normal), "--abnormal", str(abnormal)])
        == 0
    )
    assert "WARNING: 10 of these images were used to train or calibrate" in capsys.readouterr().err
    assert trained_on(tiny_model / XML_IN_EXPORT, [abnormal / "0000.png"]) == []
    assert trained_on(abnormal, [abnormal / "0000.png"]) == []  # no train_hashes.txt there
