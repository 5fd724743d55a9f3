"""Training: input checks, teacher resolution offline, the penalty set, progress output, and the
real tiny export that the session fixture ``tiny_model`` trains once."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

from daemon.cli import main
from inspectd.card import compute_model_id, read_card
from inspectd.export import XML_IN_EXPORT
from training.callbacks import TimeBudget
from training.errors import TrainingError
from training.fit import train
from training.images import checked_images
from training.options import TrainOptions
from training.penalty import CLASS_NAME, build_penalty_set, check_penalty_dir, source_photos
from training.progress import TrainingProgress
from training.recipe import cpu_precision
from training.settings import TEACHER_STATS_IMAGES
from training.synthetic import make_surface_set, surface_image
from training.teacher import Teacher, apply_teacher, cached_teacher_path, resolve_teacher


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh user cache, so anomalib's real one is neither read nor written."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def no_network() -> None:
    raise URLError("[Errno -2] Name or service not known (test: network disabled)")


def must_not_download() -> None:
    raise AssertionError("the teacher download must not be attempted")


# --- synthetic surfaces -------------------------------------------------------------------------


def test_surface_set_is_deterministic_per_seed(tmp_path: Path) -> None:
    normal, abnormal = make_surface_set(tmp_path / "a", 3, 2, size=64, seed=1)
    again = make_surface_set(tmp_path / "b", 4, 2, size=64, seed=1)[0]
    other = make_surface_set(tmp_path / "c", 3, 2, size=64, seed=2)[0]
    assert [p.name for p in sorted(normal.iterdir())] == ["0000.png", "0001.png", "0002.png"]
    assert len(list(abnormal.iterdir())) == 2
    for name in ("0000.png", "0002.png"):  # a larger set starts with the same images
        assert (normal / name).read_bytes() == (again / name).read_bytes()
        assert (normal / name).read_bytes() != (other / name).read_bytes()
    with Image.open(normal / "0000.png") as image:
        assert (image.size, image.mode) == ((64, 64), "RGB")


def test_surface_set_rerun_leaves_no_stale_images(tmp_path: Path) -> None:
    make_surface_set(tmp_path, 5, 1, size=32)
    normal, _ = make_surface_set(tmp_path, 2, 1, size=32)
    assert len(list(normal.iterdir())) == 2


def test_abnormal_surfaces_carry_visible_defects() -> None:
    def outliers(defects: bool, index: int) -> int:
        grey = surface_image(128, np.random.default_rng([5, index]), defects=defects).mean(axis=2)
        return int((np.abs(grey - np.median(grey)) > 30).sum())

    assert all(outliers(False, i) == 0 for i in range(8))
    assert all(outliers(True, i) > 50 for i in range(8))


# --- input checks -------------------------------------------------------------------------------


def test_image_folder_checks_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="does not exist"):
        checked_images(tmp_path / "missing", "normal")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainingError, match="holds no images"):
        checked_images(tmp_path / "empty", "normal")
    bad = tmp_path / "bad"
    (bad / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(bad / "ok.png")
    (bad / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(TrainingError, match=r"1 of 2 files .* sub/broken\.jpg"):
        checked_images(bad, "normal")


def test_train_refuses_bad_input_before_any_work(tmp_path: Path, empty_cache: Path) -> None:
    normal, _ = make_surface_set(tmp_path / "data", 4, 0, size=32)
    with pytest.raises(TrainingError, match="at least 5"):
        train(TrainOptions(normal, tmp_path / "out", teacher="random"))
    with pytest.raises(TrainingError, match="--max-steps"):
        train(TrainOptions(normal, tmp_path / "out", max_steps=0))
    with pytest.raises(TrainingError, match="--image-size"):
        train(TrainOptions(normal, tmp_path / "out", image_size=128))
    with pytest.raises(TrainingError, match="--learning-rate"):
        train(TrainOptions(normal, tmp_path / "out", learning_rate=0.0))
    make_surface_set(tmp_path / "data", 6, 0, size=32)
    with pytest.raises(TrainingError, match="inside the image folder"):
        train(TrainOptions(normal, normal / "model", teacher="random"))
    assert not (tmp_path / "out").exists()
    assert not empty_cache.exists()


def test_train_will_not_replace_a_model_unasked(tiny_model: Path, surface_set: tuple[Path, Path]) -> None:
    with pytest.raises(TrainingError, match="already holds an exported model"):
        train(TrainOptions(surface_set[0], tiny_model, teacher="random"))


def test_cli_train_reports_an_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "normal").mkdir()
    code = main(["train", "--normal", str(tmp_path / "normal"), "--output", str(tmp_path / "o")])
    assert code == 1
    assert "normal folder" in capsys.readouterr().err


# --- teacher ------------------------------------------------------------------------------------


def test_pretrained_teacher_offline_explains_the_ways_out(empty_cache: Path) -> None:
    calls = []

    def offline() -> None:
        calls.append(1)
        no_network()

    with pytest.raises(TrainingError) as error:
        resolve_teacher("pretrained", "small", download=offline)
    message = str(error.value)
    assert calls == [1]
    assert "offline" in message
    assert "--teacher random" in message
    assert "--teacher PATH" in message
    assert str(cached_teacher_path("small")) in message
    assert str(empty_cache) in message


def test_auto_teacher_uses_the_cached_weights(empty_cache: Path) -> None:
    path = cached_teacher_path("small")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    assert resolve_teacher("auto", "small", download=must_not_download) == Teacher("pretrained", path, 0)


def test_random_and_path_teachers(tmp_path: Path, empty_cache: Path) -> None:
    assert resolve_teacher("random", "small", 3, download=must_not_download).source == "random(seed=3)"
    weights = tmp_path / "t.pth"
    weights.write_bytes(b"x")
    assert resolve_teacher(str(weights), "small").source == f"path:{weights.resolve()}"
    with pytest.raises(TrainingError, match="no such file"):
        resolve_teacher(str(tmp_path / "nope.pth"), "small")
    assert not empty_cache.exists()


def test_apply_teacher_is_seeded_and_loads_state_dicts(tmp_path: Path) -> None:
    def network() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))

    a, b, c = network(), network(), network()
    apply_teacher(a, Teacher("random(seed=1)", None, 1))
    apply_teacher(b, Teacher("random(seed=1)", None, 1))
    apply_teacher(c, Teacher("random(seed=2)", None, 2))
    assert torch.equal(a[0].weight, b[0].weight)
    assert not torch.equal(a[0].weight, c[0].weight)

    torch.save(a.state_dict(), tmp_path / "teacher.pth")
    apply_teacher(c, Teacher("path", tmp_path / "teacher.pth"))
    assert torch.equal(a[2].weight, c[2].weight)
    torch.save({"wrong": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(TrainingError, match="cannot load the teacher"):
        apply_teacher(c, Teacher("path", tmp_path / "wrong.pth"))


def test_random_teacher_model_never_touches_anomalib_cache(
    tmp_path: Path, empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anomalib.models.image.efficient_ad import lightning_model

    from training.model import InspectdEfficientAd

    monkeypatch.setattr(lightning_model, "download_and_extract", lambda *_: must_not_download())
    model = InspectdEfficientAd(Teacher("random(seed=0)", None, 0), tmp_path, "small", 256)
    model.prepare_pretrained_model()
    assert not (empty_cache / "anomalib").exists()
    assert model.lr == 3e-4  # 3x EfficientAD's Adam rate unless --learning-rate says otherwise
    assert InspectdEfficientAd(Teacher("random", None), tmp_path, "small", 256, 1e-3).lr == 1e-3


def test_every_teacher_scores_with_the_student_teacher_map_alone_by_default(tmp_path: Path) -> None:
    import torch
    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel

    from training.model import (
        BOTH_MAPS,
        STUDENT_TEACHER_MAP,
        InspectdEfficientAd,
        StudentTeacherScoring,
        anomaly_map_for,
    )

    random = InspectdEfficientAd(Teacher("random(seed=0)", None, 0), tmp_path, "small", 256)
    network = random.model.eval()
    assert isinstance(network, StudentTeacherScoring)
    batch = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        scored = network(batch)
        student, distance = network.compute_student_teacher_distance(batch)
        map_st, map_stae = network.compute_maps(batch, student, distance)
    assert torch.equal(scored.anomaly_map, map_st)
    assert torch.equal(scored.pred_score, map_st.amax(dim=(-2, -1)))
    assert map_stae is map_st  # no autoencoder map; anomalib's calibration still gets two

    # anomalib's network with the same teacher and the same first half of the student: the same map
    full = EfficientAdModel(teacher_out_channels=384).eval()
    full.teacher.load_state_dict(network.teacher.state_dict())
    full.mean_std.load_state_dict(network.mean_std.state_dict())
    widened = dict(network.student.state_dict())
    for name, value in full.student.state_dict().items():
        if value.shape != widened[name].shape:  # conv4: 768 outputs there, 384 here
            widened[name] = torch.cat([widened[name], value[384:]])
    full.student.load_state_dict(widened)
    with torch.no_grad():
        anomalib_st, _ = full.get_maps(batch, normalize=False)
        ours, _ = network.get_maps(batch, normalize=False)
    assert network.student.conv4.out_channels == 384 and full.student.conv4.out_channels == 768
    torch.testing.assert_close(ours, anomalib_st)

    weights = tmp_path / "teacher.pth"
    torch.save(network.teacher.state_dict(), weights)
    given = Teacher(f"path:{weights}", weights)
    assert isinstance(InspectdEfficientAd(given, tmp_path, "small", 256).model, StudentTeacherScoring)
    both = InspectdEfficientAd(given, tmp_path, "small", 256, anomaly_map="both")
    assert type(both.model) is EfficientAdModel
    assert (anomaly_map_for(), anomaly_map_for("both")) == (STUDENT_TEACHER_MAP, BOTH_MAPS)


def test_student_teacher_map_trains_no_autoencoder(tmp_path: Path) -> None:
    """--anomaly-map student-teacher: anomalib's student loss, and the autoencoder left untouched."""
    import torch

    from training.model import InspectdEfficientAd, StudentTeacherScoring

    torch.manual_seed(0)
    teacher = Teacher("random(seed=0)", None, 0)
    module = InspectdEfficientAd(teacher, tmp_path, "small", 256, anomaly_map="student-teacher")
    network = module.model.train()
    assert isinstance(network, StudentTeacherScoring)
    loss_st, loss_ae, loss_stae = network(torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128))
    assert loss_st.item() > 0 and loss_ae.item() == loss_stae.item() == 0.0
    (loss_st + loss_ae + loss_stae).backward()
    # nothing of the autoencoder is kept, so anomalib's Adam (student + autoencoder) holds the student alone
    assert list(network.ae.parameters()) == []
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.student.parameters())

    with pytest.raises(TrainingError, match="--anomaly-map must be one of"):
        train(TrainOptions(tmp_path / "normal", tmp_path / "out", anomaly_map="ae"))


def test_teacher_memo_returns_the_teachers_own_output_and_stays_within_its_budget() -> None:
    import torch

    from training.teacher_memo import TeacherMemo

    calls: list[torch.Tensor] = []

    def teacher(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch)
        return batch * 2

    image, other = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    memo = TeacherMemo(budget_bytes=image.nelement() * 4)  # room for one f32 output
    first = memo(image, teacher)
    assert torch.equal(memo(image.clone(), teacher), first) and len(calls) == 1  # same bytes: remembered
    assert torch.equal(memo(other, teacher), other * 2) and len(calls) == 2
    memo(other, teacher)
    assert len(calls) == 3 and memo.used_bytes == image.nelement() * 4  # over budget: not kept
    with torch.autocast("cpu", dtype=torch.bfloat16):
        memo(image, teacher)  # another arithmetic is another output
    assert len(calls) == 4 and (memo.hits, memo.misses) == (1, 3 + 1)
    memo.clear()
    memo(image, teacher)
    assert len(calls) == 5 and memo.used_bytes == image.nelement() * 4

    crops = TeacherMemo()  # the frozen Lite teacher returns a crop of a larger map
    crop = crops(image, lambda batch: (batch * 2)[..., 1:7, 1:7])
    assert torch.equal(crops(image, teacher), crop)  # remembered
    assert crops.held_bytes == crops.used_bytes == crop.nelement() * 4  # the crop, not the whole map


def test_training_distance_with_the_memo_equals_anomalibs_and_fit_start_takes_the_faster_order(
    tmp_path: Path,
) -> None:
    import torch
    from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel

    from training.model import InspectdEfficientAd

    torch.manual_seed(0)
    module = InspectdEfficientAd(Teacher("random(seed=0)", None, 0), tmp_path, "small", 256)
    network = module.model.train()
    batch = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        expected = EfficientAdModel.compute_student_teacher_distance(network, batch)  # anomalib's
        for _ in range(2):  # the second time from the memo
            student, distance = network.compute_student_teacher_distance(batch)
            torch.testing.assert_close(student, expected[0])
            torch.testing.assert_close(distance, expected[1])
    assert (network.teacher_memo.hits, network.teacher_memo.misses) == (1, 1)

    def timer_favouring(order: torch.memory_format) -> Any:
        return lambda probe, images: 1.0 if probe.conv1.weight.is_contiguous(memory_format=order) else 2.0

    module.step_timer = timer_favouring(torch.channels_last)
    module.on_fit_start()
    assert module.memory_format == "channels_last" and module.step_seconds == {
        "contiguous": 2.0,
        "channels_last": 1.0,
    }
    assert network.student.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    module.on_train_end()
    assert network.teacher_memo.used_bytes == 0

    fresh = InspectdEfficientAd(Teacher("random(seed=0)", None, 0), tmp_path, "small", 256)
    fresh.step_timer = timer_favouring(torch.contiguous_format)
    fresh.on_fit_start()  # on a CPU where channels-last is the slower order (AVX2, f32)
    assert fresh.memory_format == "contiguous"
    assert not fresh.model.student.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_the_memory_order_probe_times_a_copy_and_leaves_the_student_alone() -> None:
    import torch
    from anomalib.models.image.efficient_ad.torch_model import SmallPatchDescriptionNetwork

    from training.memory_format import faster_memory_format

    student = SmallPatchDescriptionNetwork(out_channels=8)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    seen: list[tuple[bool, list[int]]] = []

    def timer(probe: torch.nn.Module, images: Any) -> float:
        assert probe is not student
        channels_last = probe.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        seen.append((channels_last, [image.shape[-1] for image in images]))
        return 0.5 if seen[-1][0] else 0.7

    order, seconds = faster_memory_format(student, (64, 32), timer)
    assert (order, seconds) == ("channels_last", {"contiguous": 0.7, "channels_last": 0.5})
    assert all(sides == [64, 32] for _, sides in seen) and len(seen) == 2 * 2 * 3  # rounds x orders x steps
    assert [cl for cl, _ in seen[:3]] == [False] * 3 and [cl for cl, _ in seen[3:6]] == [True] * 3
    assert all(torch.equal(v, before[k]) for k, v in student.state_dict().items())
    assert student.conv1.weight.is_contiguous() and student.conv1.weight.grad is None
    _, real = faster_memory_format(student, (40,))  # the real timer, on a tiny image
    assert set(real) == {"contiguous", "channels_last"} and all(0 < v < 10 for v in real.values())


# --- penalty set, progress ----------------------------------------------------------------------


def test_penalty_set_is_an_image_folder_of_photos(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    root = build_penalty_set(tmp_path / "penalty", crops_per_photo=1)
    dataset = ImageFolder(root)
    assert dataset.classes == [CLASS_NAME]
    assert len(dataset) == len(source_photos()) >= 10
    assert check_penalty_dir(root) == root
    with pytest.raises(TrainingError, match="sub-folder"):
        check_penalty_dir(root / CLASS_NAME)


def test_progress_log_is_sparse_and_has_an_eta() -> None:
    stream, now = io.StringIO(), [0.0]
    progress = TrainingProgress(1000, stream=stream, interactive=False, clock=lambda: now[0])
    trainer = SimpleNamespace(global_step=0, num_training_batches=40)
    progress.on_train_start(trainer, None)  # type: ignore[arg-type]
    for step in range(1, 1001):
        now[0] += 1.5
        trainer.global_step = step
        progress.on_train_batch_end(trainer, None, {"loss": torch.tensor(2.0)}, None, step)  # type: ignore[arg-type]
    lines = stream.getvalue().splitlines()
    assert "up to 1000 steps; first computing" in lines[0] and "40 training images" in lines[0]
    assert 20 <= len(lines) <= 80  # 25 minutes of training
    assert "step 500/1000 (50%)  loss 2.000  1.50 s/step  ETA 12:30" in stream.getvalue()
    assert lines[-1].startswith("train: step 1000/1000 (100%)")
    big = io.StringIO()
    TrainingProgress(1000, stream=big, interactive=False).on_train_start(
        SimpleNamespace(global_step=0, num_training_batches=552),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    assert f"statistics over {TEACHER_STATS_IMAGES} training images" in big.getvalue()  # a sample of 552


def test_progress_says_how_many_held_out_images_validation_scores() -> None:
    class HeldOut(list[None]):  # anomalib's held-out dataset: its length, and its labels in order
        samples = SimpleNamespace(label_index=[1] * 6 + [0] * 132)

    stream = io.StringIO()
    data = SimpleNamespace(val_data=HeldOut([None] * 138), eval_batch_size=8)
    progress = TrainingProgress(100, stream=stream, interactive=False)
    progress.on_validation_start(SimpleNamespace(datamodule=data), None)  # type: ignore[arg-type]
    progress.on_validation_start(SimpleNamespace(num_val_batches=[3]), None)  # type: ignore[arg-type]
    assert stream.getvalue().splitlines() == [
        "train: scoring 40 of the 138 held-out images to set the score scale "
        "(the threshold is calibrated on all of them after the export)",  # 6 defects, then 32 good
        "train: scoring 3 held-out batches to set the score scale",
    ]


def test_progress_says_which_memory_order_the_fit_measured_faster() -> None:
    stream = io.StringIO()
    progress = TrainingProgress(100, stream=stream, interactive=False)
    trainer = SimpleNamespace(global_step=0, num_training_batches=40)
    seconds = {"contiguous": 1.234, "channels_last": 1.6}
    module = SimpleNamespace(memory_format="contiguous", step_seconds=seconds)
    progress.on_train_start(trainer, module)  # type: ignore[arg-type]
    progress.on_train_start(trainer, SimpleNamespace())  # type: ignore[arg-type]  # measured nothing
    lines = stream.getvalue().splitlines()
    assert lines[1] == (
        "train: the student steps in contiguous memory order, the faster here "
        "(one probe step: contiguous 1.23 s, channels_last 1.60 s)"
    )
    assert len(lines) == 3


def test_progress_eta_ends_with_the_time_budget() -> None:
    """With the default 70k steps the budget ends the run: the ETA and the first line say so."""
    stream, now = io.StringIO(), [0.0]
    budget = TimeBudget(10, clock=lambda: now[0])
    progress = TrainingProgress(70_000, stream=stream, interactive=False, clock=lambda: now[0], budget=budget)
    trainer = SimpleNamespace(global_step=0, num_training_batches=40)
    budget.on_train_start(trainer, None)  # type: ignore[arg-type]
    progress.on_train_start(trainer, None)  # type: ignore[arg-type]
    for step in range(1, 122):  # a line every 30 s: the last at step 121
        now[0] += 1.0
        trainer.global_step = step
        progress.on_train_batch_end(trainer, None, {"loss": torch.tensor(2.0)}, None, step)  # type: ignore[arg-type]
    lines = stream.getvalue().splitlines()
    assert "up to 70000 steps or until 10:00 less the time kept for calibration and export" in lines[0]
    assert lines[-1].startswith("train: step 121/70000") and "ETA 7:59" in lines[-1]  # 600 - 121 s


# --- the real tiny export -----------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_tiny_export_has_layout_and_valid_card(tiny_model: Path) -> None:
    xml = tiny_model / XML_IN_EXPORT
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    data = json.loads((tiny_model / "model.json").read_text())
    assert data["model_id"] == compute_model_id(xml)
    card = read_card(xml)  # the daemon's own check: card and IR agree
    assert (card.steps, card.teacher, card.train_images) == (3, "random(seed=0)", 8)
    assert (card.threshold_policy, card.image_size) == ("normal-quantile=0.99", (256, 256))
    assert card.validation["n_normal"] == 2 and card.validation["n_abnormal"] == 0
    assert card.extra["validation_images"] == 2  # fewer than the sample: all of them
    assert card.validation["normal_score_max"] >= card.threshold  # 0.99-quantile of two scores
    assert card.created_at.endswith("+00:00")
    assert card.extra["precision"] == cpu_precision()
    assert card.extra["learning_rate"] == 3e-4
    assert (card.extra["export_precision"], card.extra["opset"]) == ("fp32", 18)
    assert card.extra["stopped_by"] == "max-steps"
    assert card.extra["anomaly_map"] == "student-teacher map"  # random teacher
    assert (card.extra["map_scale"], card.extra["map_scale_images"]) == ("position", 8)  # all of them
    assert card.extra["penalty_crop"] == "half"
    # --student-width auto timed the full student; 3 steps fit in any budget, so it trained full
    assert card.extra["student_width"] == "full" and card.extra["full_student_step_seconds"] > 0
    assert card.extra["max_minutes"] == 29.0 and card.extra["time_reserve_seconds"] >= 60.0  # the floor
    assert card.extra["eval_pass_seconds"] > 0  # what the reserve was reckoned on
    probe = card.extra["memory_format_step_seconds"]  # both orders timed, the faster one taken
    assert set(probe) == {"contiguous", "channels_last"} and all(v > 0 for v in probe.values())
    assert card.extra["memory_format"] == min(probe, key=probe.__getitem__)
    names = sorted(p.name for p in tiny_model.iterdir())
    assert names == ["model.json", "train_hashes.txt", "weights"]  # work dir and checkpoints removed
    for litter in ("lightning_logs", "results", "openvino_cache", "datasets"):
        assert not (Path.cwd() / litter).exists()


@pytest.mark.timeout(900)
def test_tiny_export_takes_any_rgb_size_and_scores_in_unit_range(tiny_model: Path) -> None:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(tiny_model / XML_IN_EXPORT)
    assert str(model.input(0).get_partial_shape()) == "[?,3,?,?]"
    assert model.input(0).get_element_type() == ov.Type.f32
    compiled = core.compile_model(model, "CPU")
    out = compiled(np.full((1, 3, 100, 140), 0.6, dtype=np.float32))
    score = out[compiled.output("pred_score")]
    # strictly inside: the export's scale never clips (training.score_scale)
    assert score.shape == (1, 1) and 0.0 < float(score[0, 0]) < 1.0
    assert out[compiled.output("anomaly_map")].shape == (1, 1, 256, 256)


def test_the_hard_feature_loss_averages_the_misses_at_or_above_its_quantile() -> None:
    """anomalib's 0.999 by default; ``hard_quantile = 0`` is the plain mean (what
    benchmarks/student_variants.py sets to try other quantiles)."""
    from training.model import StudentTeacherScoring

    network = StudentTeacherScoring()
    penalty = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        penalty_term = torch.mean(network.student(penalty) ** 2)
    distance = torch.arange(1.0, 10_001.0).reshape(1, 1, 100, 100)  # 1 .. 10,000
    with torch.no_grad():
        default, *_ = network.student_losses(penalty, distance)
        network.hard_quantile = 0.0
        plain, *_ = network.student_losses(penalty, distance)
    assert StudentTeacherScoring.hard_quantile == 0.999
    torch.testing.assert_close(default - penalty_term, torch.tensor(9995.5))  # mean of 9,991 .. 10,000
    torch.testing.assert_close(plain - penalty_term, torch.tensor(5000.5))
