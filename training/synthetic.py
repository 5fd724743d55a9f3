"""A synthetic plastic-surface data set: the demo's and the tests' stand-in for camera images.

Normal images are matte grey-to-beige plastic with fine grain, soft mottling and a lighting
gradient; abnormal ones are the same surfaces with dark stains and scratches. Each image comes from
its own ``(seed, kind, index)`` generator, so a larger set starts with the same images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage.draw import line_aa
from skimage.filters import gaussian

NORMAL, ABNORMAL = 0, 1


def gaussian_filter(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(gaussian(image, sigma=sigma, preserve_range=True))


_BASE_COLOURS = np.array([[150.0, 150.0, 148.0], [205.0, 192.0, 165.0]])  # grey, beige


def make_surface_set(
    out: Path, n_normal: int, n_abnormal: int, size: int = 256, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``out/normal/NNNN.png`` and ``out/abnormal/NNNN.png``; returns both folders."""
    folders = []
    for name, kind, count in (("normal", NORMAL, n_normal), ("abnormal", ABNORMAL, n_abnormal)):
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("[0-9][0-9][0-9][0-9].png"):
            stale.unlink()  # a smaller re-run must not leave images of the previous one behind
        for index in range(count):
            image = surface_image(size, np.random.default_rng([seed, kind, index]), defects=kind == ABNORMAL)
            Image.fromarray(image).save(folder / f"{index:04d}.png")
        folders.append(folder)
    return folders[0], folders[1]


def surface_image(size: int, rng: np.random.Generator, *, defects: bool) -> np.ndarray:
    """One ``size`` x ``size`` RGB uint8 image of plastic, with 1-3 defects if asked."""
    colour = _BASE_COLOURS[0] + rng.uniform(0, 1) * (_BASE_COLOURS[1] - _BASE_COLOURS[0])
    colour = colour + rng.normal(0, 4, 3)
    grain = gaussian_filter(rng.normal(0, 1, (size, size)), 0.8) * 9.0
    mottle = gaussian_filter(rng.normal(0, 1, (size, size)), size / 16) * size / 6
    shade = _lighting(size, rng) * (1 + (grain + mottle) / 255)
    image = shade[..., None] * colour[None, None, :]
    if defects:
        for _ in range(int(rng.integers(1, 4))):
            image = _stain(image, rng) if rng.random() < 0.5 else _scratch(image, rng)
    image += rng.normal(0, 1.5, image.shape)  # sensor noise, per channel
    return np.clip(image, 0, 255).astype(np.uint8)


def _lighting(size: int, rng: np.random.Generator) -> np.ndarray:
    """A gentle linear gradient (about +-6 %) in a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(ramp, ramp, indexing="ij")
    return 1.0 + rng.uniform(0.03, 0.06) * (np.cos(angle) * xx + np.sin(angle) * yy)


def _stain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An irregular dark blob with soft edges, like oil or a burn mark."""
    size = image.shape[0]
    radius = rng.uniform(0.04, 0.12) * size
    cy, cx = rng.uniform(radius, size - radius, 2)
    yy, xx = np.mgrid[0:size, 0:size]
    wobble = gaussian_filter(rng.normal(0, 1, (size, size)), radius / 3) * radius * 3
    inside = np.hypot(yy - cy, xx - cx) + wobble < radius
    mask = gaussian_filter(inside.astype(float), 1.5)
    darkness = rng.uniform(0.35, 0.6)
    tint = np.array([0.8, 0.92, 1.0])  # darkening blue most leaves a brownish stain
    return image * (1 - mask[..., None] * darkness * tint)


def _scratch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A thin curved stroke, lighter (scuffed) or darker (groove) than the surface."""
    size = image.shape[0]
    points = rng.uniform(0.1, 0.9, (3, 2)) * size
    t = np.linspace(0, 1, 64)[:, None]
    curve = (1 - t) ** 2 * points[0] + 2 * (1 - t) * t * points[1] + t**2 * points[2]
    mask = np.zeros((size, size))
    for (r0, c0), (r1, c1) in zip(curve[:-1].astype(int), curve[1:].astype(int), strict=True):
        rr, cc, value = line_aa(r0, c0, r1, c1)
        np.maximum.at(mask, (rr, cc), value)
    width = rng.uniform(0.6, 1.4) * size / 256
    mask = np.clip(gaussian_filter(mask, width) * 2.5, 0, 1)
    factor = rng.choice([1.35, 0.55])
    return image * (1 + mask[..., None] * (factor - 1))
