"""The penalty set that replaces ImageNette: natural photographs shipped inside scikit-image.

EfficientAD shows the student unrelated natural images so that it does not learn to imitate the
teacher everywhere; anomalib downloads ImageNette (1.5 GB) for that. Random crops of the ~18
photographs in scikit-image's wheel do the same job offline, deterministically, in seconds.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import skimage
from PIL import Image, ImageOps

from training.errors import TrainingError
from training.images import list_images

# Photographs only: charts, logos, silhouettes, phantoms and 100-px samples teach nothing natural.
PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
    "moon.png", "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)  # fmt: skip
CLASS_NAME = "natural"  # ImageFolder wants one sub-folder per class; the class is never used
MIN_PHOTOS = 5
CROP_SIDE = 384


def source_photos() -> list[Path]:
    data = Path(skimage.__file__).parent / "data"
    return [data / name for name in PHOTOS if (data / name).is_file()]


def build_penalty_set(dest: Path, *, crops_per_photo: int = 12, seed: int = 0) -> Path:
    """Write ``dest/natural/*.jpg`` (square random crops, some mirrored) and return ``dest``."""
    photos = source_photos()
    if len(photos) < MIN_PHOTOS:
        raise TrainingError(
            f"scikit-image {version('scikit-image')} ships only {len(photos)} of the expected sample "
            "photographs; pass --imagenet-dir with a folder of natural images instead"
        )
    out = dest / CLASS_NAME
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for photo in photos:
        with Image.open(photo) as opened:
            image = opened.convert("RGB")
        for index in range(crops_per_photo):
            crop = _random_square(image, rng)
            if rng.random() < 0.5:
                crop = ImageOps.mirror(crop)
            crop.save(out / f"{photo.stem}_{index:02d}.jpg", quality=92)
    return dest


def _random_square(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    short = min(image.size)
    side = int(short * rng.uniform(0.35, 1.0))
    left = int(rng.integers(0, image.width - side + 1))
    top = int(rng.integers(0, image.height - side + 1))
    return image.crop((left, top, left + side, top + side)).resize((CROP_SIDE, CROP_SIDE))


def check_penalty_dir(folder: Path) -> Path:
    """A user-supplied ``--imagenet-dir`` must look like ImageFolder: class sub-folders of images."""
    if not folder.is_dir():
        raise TrainingError(f"--imagenet-dir {folder} does not exist or is not a folder")
    classes = [d for d in folder.iterdir() if d.is_dir() and list_images(d)]
    if not classes:
        raise TrainingError(
            f"--imagenet-dir {folder} needs at least one sub-folder of images (ImageFolder "
            f"layout, e.g. {folder}/natural/*.jpg); images directly in the folder are not read"
        )
    return folder
