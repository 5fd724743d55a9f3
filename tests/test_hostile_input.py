"""Hostile and odd inbox content, judged by the real tiny model through the real pipeline: every
unreadable file is quarantined with a reason, every readable odd image is judged, nothing outside
the inbox is read, moved or deleted, and nothing crashes the loop."""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.db.models import Inspection
from daemon.intake.names import CLAIMS_DIR
from inspectd.scorer import Model
from tests.conftest import write_image
from tests.hotfolder import make_folders, make_pipeline, offer, settle

MAX_PIXELS = 20_000_000  # the test's limits.max_pixels


@pytest.fixture(scope="module")
def model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model(tiny_model, tmp_path_factory.mktemp("ovcache"), max_pixels=MAX_PIXELS)


def png_bytes(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def noise(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)


def lying_header(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose IHDR claims ``width`` x ``height``: a decompression bomb's header."""
    data = bytearray(png_bytes(noise(8, 8)))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def corrupt(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]


JUDGED = "judged"
# name -> (content maker, expected status or JUDGED, expected words in the row's error)
CASES: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "zero.png": (lambda: b"", "quarantined", "not an image"),
    "notes.png": (lambda: b"shift report: all good\n" * 40, "quarantined", "not an image"),
    "truncated.png": (lambda: png_bytes(noise(64, 64))[:900], "quarantined", "cannot decode"),
    "truncated.jpg": (lambda: png_bytes(noise(64, 64), "JPEG")[:700], "quarantined", "cannot decode"),
    "corrupt.png": (lambda: corrupt(png_bytes(noise(128, 128))), "quarantined", "cannot decode"),
    "bomb-header.png": (lambda: lying_header(100_000, 100_000), "quarantined", "decompression"),
    "just-over.png": (lambda: lying_header(5000, 4001), "quarantined", "above the limit"),
    "html.jpg": (lambda: b"<html><body>404</body></html>", "quarantined", "not an image"),
    "gray16.png": (
        lambda: png_bytes(Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)),
        JUDGED,
        "",
    ),
    "float32.tif": (lambda: png_bytes(Image.fromarray(np.ones((32, 32), np.float32)), "TIFF"), JUDGED, ""),
    "cmyk.jpg": (lambda: png_bytes(noise(48, 48, "CMYK"), "JPEG"), JUDGED, ""),
    "alpha.png": (lambda: png_bytes(noise(48, 48, "RGBA")), JUDGED, ""),
    "palette.png": (lambda: png_bytes(noise(48, 48, "P"), transparency=0), JUDGED, ""),
    "bilevel.bmp": (lambda: png_bytes(noise(40, 30, "1"), "BMP"), JUDGED, ""),
    "one-pixel.png": (lambda: png_bytes(noise(1, 1)), JUDGED, ""),
    "large-12mp.jpg": (lambda: png_bytes(noise(4000, 3000), "JPEG", quality=50), JUDGED, ""),
    "SHOUTING.PNG": (lambda: png_bytes(noise(32, 32)), JUDGED, ""),
    "jpeg-inside.png": (lambda: png_bytes(noise(32, 32), "JPEG"), JUDGED, ""),
    "png-inside.tif": (lambda: png_bytes(noise(32, 32)), JUDGED, ""),
    "animated.tif": (
        lambda: png_bytes(noise(32, 32), "TIFF", save_all=True, append_images=[noise(32, 32, seed=1)]),
        JUDGED,
        "",
    ),
    "  leading and trailing spaces .png": (lambda: png_bytes(noise(16, 16)), JUDGED, ""),
    "Prüfung über 画像 №7.png": (lambda: png_bytes(noise(16, 16)), JUDGED, ""),
    "new\nline\tand tab.png": (lambda: png_bytes(noise(16, 16)), JUDGED, ""),
    os.fsdecode(b"latin1-caf\xe9.png"): (lambda: png_bytes(noise(16, 16)), JUDGED, ""),
}


def test_hostile_and_odd_files(tmp_path: Path, model: Model) -> None:
    folders = make_folders(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = write_image(outside / "secret.png", seed=9)
    secret_bytes = secret.read_bytes()
    for name, (make, _status, _why) in CASES.items():
        (folders.inbox / name).write_bytes(make())
    (folders.inbox / "link.png").symlink_to(secret)
    (folders.inbox / "dirlink.png").symlink_to(outside)
    (folders.inbox / "dangling.jpg").symlink_to(outside / "nowhere.jpg")
    (folders.inbox / "folder.png").mkdir()
    write_image(folders.inbox / "folder.png" / "inside.png", seed=10)  # not recursive: left alone
    os.mkfifo(folders.inbox / "fifo.png")
    ghost = write_image(folders.inbox / "ghost.png", seed=11)

    pipeline = make_pipeline(folders, model)
    offer(pipeline, *sorted(folders.inbox.iterdir()), kind="scan")
    ghost.unlink()  # gone between the event and the read
    results = settle(pipeline, max_steps=400)

    with pipeline.store.session() as s:
        rows = {r.filename: r for r in s.query(Inspection)}
    problems = []
    for name, (_make, status, why) in CASES.items():
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        row = rows.get(shown)
        if row is None:
            problems.append(f"{name!r}: no row")
            continue
        got = "judged" if row.status in ("accepted", "rejected") else row.status
        if got != status or why not in (row.error or ""):
            problems.append(f"{name!r}: {row.status} ({row.error}), expected {status} with {why!r}")
        if got == JUDGED and (row.score is None or not np.isfinite(row.score)):
            problems.append(f"{name!r}: judged without a score")
        assert Path(row.final_path).exists() or Path(row.final_path).is_symlink()
    assert problems == []

    for link in ("link.png", "dirlink.png", "dangling.jpg"):
        row = rows[link]
        assert row.status == "quarantined" and "symbolic link" in (row.error or "") and row.sha256 is None
        assert Path(row.final_path).is_symlink()
    assert secret.read_bytes() == secret_bytes and sorted(p.name for p in outside.iterdir()) == ["secret.png"]
    assert "folder.png" not in rows and "fifo.png" not in rows and "ghost.png" not in rows
    left = sorted(p.name for p in folders.inbox.iterdir() if p.name != CLAIMS_DIR)  # the daemon's own
    assert left == ["fifo.png", "folder.png"]
    assert (folders.inbox / "folder.png" / "inside.png").exists()
    assert "ignored" in {r.outcome for r in results}
    assert len(rows) == len(CASES) + 3


def test_same_name_again_later_is_a_new_image(tmp_path: Path, model: Model) -> None:
    folders = make_folders(tmp_path)
    pipeline = make_pipeline(folders, model)
    for seed in range(3):
        img = write_image(folders.inbox / "cam.png", seed=20 + seed)
        offer(pipeline, img)
        settle(pipeline)
        assert not img.exists()
    with pipeline.store.session() as s:
        rows = list(s.query(Inspection).order_by(Inspection.id))
    assert [r.filename for r in rows] == ["cam.png"] * 3
    assert len({r.sha256 for r in rows}) == 3 and len({r.final_path for r in rows}) == 3


def test_limits_and_recursive_are_config_keys(config_for: Callable[..., object]) -> None:
    default = config_for()
    assert default.limits.max_pixels == 50_000_000 and default.watch.recursive is False  # type: ignore[attr-defined]
    tuned = config_for(limits__max_pixels=1234, watch__recursive=True)
    assert tuned.limits.max_pixels == 1234 and tuned.watch.recursive is True  # type: ignore[attr-defined]


def test_memory_guard_rejects_before_decoding(tmp_path: Path, tiny_model: Path) -> None:
    small = Model(tiny_model, tmp_path / "ovcache", max_pixels=10_000)
    folders = make_folders(tmp_path)
    img = folders.inbox / "big.png"
    img.write_bytes(png_bytes(noise(120, 120)))  # beyond 2x, Pillow itself refuses
    pipeline = make_pipeline(folders, small)
    offer(pipeline, img)
    (result,) = settle(pipeline)
    assert result.outcome == "quarantined" and "120x120 = 14400 pixels" in (result.error or "")
    assert "limits.max_pixels" in (result.error or "")
    assert result.final_path is not None and result.final_path.parent == folders.dests.quarantine


def test_unreadable_file_is_quarantined_with_the_reason(tmp_path: Path) -> None:
    """A file the daemon may not read (uploader's umask 0077; root cannot show this with chmod)."""
    from daemon.fs import FileSystem
    from tests.hotfolder import FakeScorer, fs_with

    folders = make_folders(tmp_path)
    locked = write_image(folders.inbox / "locked.png", seed=12)

    def sha_or_denied(path: Path) -> str:
        if path.name.endswith("locked.png"):  # as claimed: <token>-locked.png
            raise PermissionError(13, "Permission denied", str(path))
        return FileSystem().sha256(path)

    pipeline = make_pipeline(folders, FakeScorer(), fs=fs_with(sha256=sha_or_denied))
    offer(pipeline, locked)
    (result,) = settle(pipeline)
    assert result.outcome == "quarantined"
    assert result.error == "cannot read the file: Permission denied (check the uploader's permissions)"
    assert (folders.dests.quarantine / "locked.png").exists() and not locked.exists()
