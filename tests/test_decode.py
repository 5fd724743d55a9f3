"""Decoding at the model's input size: a camera frame is reduced before any float copy of it
exists, and scores as it does when decoded in full; small images are left to the model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspectd.errors import UnreadableImage
from inspectd.imaging import decode_rgb
from inspectd.scorer import Model, cpu_precisions


def camera_frame(path: Path, size: tuple[int, int] = (1280, 1024), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 200, (size[1] // 32, size[0] // 32, 3), dtype=np.uint8)
    frame = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    frame.save(path, quality=92)
    return path


def test_a_large_jpeg_is_decoded_at_the_input_size_and_matches_a_full_decode(tmp_path: Path) -> None:
    path = camera_frame(tmp_path / "frame.jpg")
    reduced = decode_rgb(path, shrink_to=(256, 256))
    assert reduced.shape == (256, 256, 3) and reduced.dtype == np.float32
    full = decode_rgb(path)
    assert full.shape == (1024, 1280, 3)
    reference = np.asarray(
        Image.fromarray((full * 255).round().astype(np.uint8)).resize((256, 256), Image.Resampling.BILINEAR),
        dtype=np.float32,
    ) / np.float32(255)
    assert float(np.abs(reduced - reference).mean()) < 0.01  # JPEG draft scaling differs only slightly


def test_small_and_16_bit_images_keep_their_pixels(tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(np.full((100, 120, 3), 128, dtype=np.uint8)).save(small)
    assert decode_rgb(small, shrink_to=(256, 256)).shape == (100, 120, 3)  # the model resizes it
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((600, 700), 40000, dtype=np.uint16)).save(deep)
    out = decode_rgb(deep, shrink_to=(256, 256))
    assert out.shape == (256, 256, 3) and np.allclose(out, 40000 / 65535, atol=1e-3)


def test_a_camera_frame_scores_as_it_does_in_full_and_decodes_faster(
    tiny_model: Path, tmp_path: Path
) -> None:
    model = Model(tiny_model, tmp_path / "cache")
    assert model.precision in cpu_precisions()
    frames = [camera_frame(tmp_path / f"f{i}.jpg", seed=i) for i in range(3)]
    for frame in frames:
        shrunk = model.score(frame).score
        full_pixels = decode_rgb(frame)
        full = float(np.asarray(model._inferencer.predict(full_pixels).pred_score).reshape(-1)[0])
        assert shrunk == pytest.approx(full, abs=0.02)
    started = time.perf_counter()
    for frame in frames:
        decode_rgb(frame)
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    for frame in frames:
        decode_rgb(frame, shrink_to=model.input_size)
    assert time.perf_counter() - started < full_s


def test_precision_is_measured_or_as_configured(tiny_model: Path, tmp_path: Path) -> None:
    fixed = Model(tiny_model, tmp_path / "cache", precision="f32")
    assert fixed.precision == "f32" and fixed.precision_choice == {}
    auto = Model(tiny_model, tmp_path / "cache")
    if len(cpu_precisions()) > 1:
        assert set(auto.precision_choice) == {"f32", "bf16"}
        assert auto.precision == min(auto.precision_choice, key=lambda k: auto.precision_choice[k])
    else:  # no bf16 on this CPU: nothing to choose, nothing timed
        assert auto.precision == "f32" and auto.precision_choice == {}


def test_a_small_pixel_limit_does_not_leak_to_other_readers_in_the_process(tmp_path: Path) -> None:
    """Pillow's limit is process-wide: a small ``limits.max_pixels`` refuses the large image but
    leaves anomalib's own reader (the bench's seed loop) able to open ordinary ones."""
    path = tmp_path / "frame.png"
    Image.fromarray(np.full((256, 256, 3), 128, dtype=np.uint8)).save(path)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(UnreadableImage, match=r"limits\.max_pixels"):
        decode_rgb(path, max_pixels=10_000)
    assert before == Image.MAX_IMAGE_PIXELS
    with Image.open(path) as img:  # what anomalib's read_image does
        img.load()
