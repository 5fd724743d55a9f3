"""The natural images the GPU-distilled teacher learnt from (README, Accuracy), remade from Debian packages.

EfficientAD's paper distils its teacher on ImageNet, which cannot be had offline. Debian's archive
can: photographs of surfaces (the textures of two open-source games, made from photos of metal,
stone, wood, rust, concrete and fabric), OpenCV's example photographs, and desktop wallpapers.
This fetches the pinned packages with ``apt-get download`` (no root, nothing installed), unpacks
them, keeps the images (game texture archives are zip files), drops what is no photograph (normal,
gloss and height maps, icons, UI themes, text samples, masks, near-flat images, repeats) and
writes each image with its short side brought down to 256 pixels as a JPEG:

    python -m training.distill_images --out DIR [--debs DIR]

``--debs`` uses already downloaded ``.deb`` files instead. Licences vary by package (GPL, CC
BY-SA, public domain...); the images are used to train and are never committed. The 2,632
images that teacher learnt from (2,650 with scikit-image's photos) were written at JPEG quality 85
and re-encoded at 75 to fit the GPU machine's transfer limit; this writes quality 75 in one pass.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from training.errors import TrainingError

# package -> folder inside it that holds the images ("" = all of it); Debian 12 (bookworm) versions
PACKAGES = {
    "opencv-doc=4.6.0+dfsg-12": "usr/share/doc/opencv-doc/examples",
    "ukui-wallpapers=20.04.3-1.1": "",
    "mate-backgrounds=1.26.0-1": "",
    "gnome-backgrounds=43.1-1": "",
    "lomiri-wallpapers=20.04.0-2": "",
    "gimp-data=2.10.34-1+deb12u10": "usr/share/gimp/2.0/patterns",
    "colobot-common-textures=0.2.0-2": "",
    "openarena-081-textures=0.8.5split-14": "",
    "ufoai-textures=2.5-2": "",
}
EXTENSIONS = {".jpg", ".jpeg", ".png", ".tga", ".bmp"}
NOT_PHOTOS = re.compile(
    r"(_nm|_norm|normal|_bump|_gloss|_spec|_sm\b|_gm\b|_h\b|_glow|_luma|icon|/ui/|/themes/|brushes|"
    r"apps/|scenetext|/text/|alpha|mask|logo)",
    re.IGNORECASE,
)
MIN_SIDE = 96
MIN_CONTRAST = 8.0  # grey-level std of a 32x32 thumbnail; below it the image is flat
SIDE = 256
QUALITY = 75


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise TrainingError(f"{name} not found: this needs a Debian or Ubuntu machine (or --debs DIR)")
    return found


def download(packages: Sequence[str], dest: Path) -> None:
    try:
        subprocess.run([tool("apt-get"), "download", *packages], cwd=dest, check=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        raise TrainingError(f"apt-get download failed ({exc}); pass --debs DIR with the .deb files") from exc


def unpack(debs: Path, dest: Path) -> list[tuple[str, Path]]:
    """(package, folder of its images) for each pinned package, game archives unzipped beside."""
    found = []
    dest.mkdir(parents=True, exist_ok=True)  # dpkg-deb -x makes only the last folder of its target
    for spec, inside in PACKAGES.items():
        name, version = spec.split("=")
        matches = sorted(debs.glob(f"{name}_{version.split(':')[-1]}_*.deb"))
        if not matches:
            raise TrainingError(f"{debs} lacks {name} {version}")
        root = dest / name
        try:
            subprocess.run([tool("dpkg-deb"), "-x", str(matches[0]), str(root)], check=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise TrainingError(f"cannot unpack {matches[0].name}: {exc}") from exc
        for archive in sorted(root.rglob("*.pk3")):
            with zipfile.ZipFile(archive) as members:
                members.extractall(archive.with_suffix(""))
        found.append((name, root / inside))
    return found


def photos(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in EXTENSIONS and not NOT_PHOTOS.search(str(path)) and path.is_file():
            yield path


def build(sources: list[tuple[str, Path]], out: Path) -> Counter[str]:
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    kept: Counter[str] = Counter()
    for name, folder in sources:
        for path in photos(folder):
            try:
                with Image.open(path) as opened:
                    opened.draft("RGB", (384, 384))
                    image = opened.convert("RGB")
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
            if min(image.size) < MIN_SIDE:
                continue
            if np.asarray(image.resize((32, 32)), dtype=np.float32).std() < MIN_CONTRAST:
                continue
            thumb = np.asarray(image.resize((16, 16)).convert("L")).tobytes()
            digest = hashlib.md5(thumb, usedforsecurity=False).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            scale = SIDE / min(image.size)
            if scale < 1:
                size = (round(image.width * scale), round(image.height * scale))
                image = image.resize(size, Image.Resampling.BOX)
            image.save(out / f"{name.split('-')[0]}-{len(seen):05d}.jpg", quality=QUALITY)
            kept[name] += 1
    return kept


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.distill_images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the images")
    parser.add_argument("--debs", type=Path, help="folder with the .deb files (else apt-get download)")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="distill-images-") as scratch:
            debs = args.debs
            if debs is None:
                debs = Path(scratch) / "debs"
                debs.mkdir()
                download(list(PACKAGES), debs)
            kept = build(unpack(debs, Path(scratch) / "unpacked"), args.out)
    except TrainingError as exc:
        print(f"distill_images: error: {exc}", file=sys.stderr)
        return 1
    for name, count in kept.items():
        print(f"{name}: {count}")
    print(f"{sum(kept.values())} images in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
