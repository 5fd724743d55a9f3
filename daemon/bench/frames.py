"""The bench's camera-like test frames, and the CPU they are timed on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def frame_size(text: str) -> tuple[int, int]:
    """``--size WxH`` as (width, height); ValueError with the message a user sees."""
    try:
        width, height = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: use WIDTHxHEIGHT, e.g. 1280x1024") from None
    return width, height


def write_images(folder: Path, n: int, size: tuple[int, int], fmt: str, seed: int = 0) -> list[Path]:
    """Camera-like test frames: a lit, grainy surface, each one different."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(n):
        base = 120 + 40 * np.sin(xx / (37 + i) + i) * np.cos(yy / 53)
        grain = rng.normal(0, 6, (height, width))
        gray = np.clip(base + grain, 0, 255).astype(np.uint8)
        image = Image.fromarray(np.stack([gray, gray, (gray * 0.95).astype(np.uint8)], axis=-1))
        path = folder / f"frame{i:04d}.{fmt}"
        image.save(path, quality=90) if fmt == "jpg" else image.save(path)
        paths.append(path)
    return paths
