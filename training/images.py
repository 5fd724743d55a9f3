"""Listing and checking image folders the way anomalib's Folder datamodule will read them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from training.errors import TrainingError

# Passed to anomalib's Folder as well, which also globs recursively: the files checked here are
# exactly the files that get trained on and counted on the model card.
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SHOWN = 5


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), by extension only; symbolic links count
    (a broken one too, so that the check below names it instead of skipping it)."""
    return sorted(
        p for p in folder.glob("**/*") if p.suffix.lower() in EXTENSIONS and (p.is_file() or p.is_symlink())
    )


def readable(path: Path) -> Path:
    """The file behind an image the user named: links followed. The daemon refuses links in its
    inbox, but folders given to ``train`` and ``evaluate`` are the user's own, read the same way."""
    return path.resolve()


def checked_images(folder: Path, role: str) -> list[Path]:
    """The images in ``folder``, refusing a missing or empty folder or any undecodable file.

    A bad file would otherwise stop a long training run half-way, or silently drop out of an
    evaluation; fully decoding each image up front costs milliseconds per file.
    """
    if not folder.is_dir():
        raise TrainingError(f"the {role} folder {folder} does not exist or is not a folder")
    images = list_images(folder)
    if not images:
        raise TrainingError(
            f"the {role} folder {folder} holds no images "
            f"(looked recursively for {', '.join(sorted(set(EXTENSIONS)))})"
        )
    bad = [p for p in images if not _decodes(p)]  # a broken link fails here too
    if bad:
        names = ", ".join(str(p.relative_to(folder)) for p in bad[:_SHOWN])
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise TrainingError(
            f"{len(bad)} of {len(images)} files in the {role} folder {folder} cannot be read "
            f"as images: {names}{more}; remove or replace them and run again"
        )
    return images


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return True
