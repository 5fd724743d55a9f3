"""Checks on the image sets before a fit, and the record of what a model was trained on.

A model evaluated on its own training images looks better than it is; content hashes catch the
same file under another name or in another folder, which path comparisons miss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from PIL import Image

from inspectd.export import HASHES_NAME, export_root
from inspectd.hashing import sha256_of

_SHOWN = 3


def shape_warnings(images: Sequence[Path], role: str) -> list[str]:
    """Mixed sizes or channel layouts: anomalib resizes and converts to RGB, but a mixed set often
    means two cameras or a wrong folder, which a line engineer should hear about before training."""
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    for path in images:
        with Image.open(path) as image:
            sizes[image.size] += 1
            modes[image.mode] += 1
    warnings = []
    if len(sizes) > 1:
        common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(_SHOWN))
        more = f" and {len(sizes) - _SHOWN} more" if len(sizes) > _SHOWN else ""
        warnings.append(
            f"the {role} images have {len(sizes)} different sizes: {common}{more}; "
            "all are resized to the model's input size"
        )
    if len(modes) > 1:
        kinds = ", ".join(f"{mode} ({n})" for mode, n in modes.most_common())
        warnings.append(f"the {role} images mix colour modes: {kinds}; all are converted to RGB")
    return warnings


def drop_abnormal_copies(
    normals: Sequence[Path], abnormals: Sequence[Path], warn: Callable[[str], None]
) -> list[Path]:
    """The normal images whose content is not also among the abnormal ones.

    A defective part filed as good would teach the model that the defect is normal.
    """
    if not abnormals:
        return list(normals)
    bad = {sha256_of(p, follow_links=True) for p in abnormals}
    kept = [p for p in normals if sha256_of(p, follow_links=True) not in bad]
    if len(kept) < len(normals):
        warn(
            f"{len(normals) - len(kept)} normal images are byte-identical to images in the "
            "abnormal folder; they are left out of training"
        )
    return kept


def write_hashes(output: Path, images: Iterable[Path]) -> Path:
    """``OUTPUT/train_hashes.txt``: the sha256 of every image the fit or calibration saw."""
    path = output / HASHES_NAME
    tmp = path.with_suffix(".txt.tmp")
    tmp.write_text(
        "".join(f"{digest}\n" for digest in sorted({sha256_of(p, follow_links=True) for p in images}))
    )
    tmp.replace(path)
    return path


def trained_on(model_dir: Path, paths: Iterable[Path]) -> list[Path]:
    """Those of ``paths`` whose content the model in ``model_dir`` was trained or calibrated on.

    An export without ``train_hashes.txt`` (older, or not made by ``inspectd train``) gives [].
    """
    record = next((f / HASHES_NAME for f in export_root(model_dir) if (f / HASHES_NAME).is_file()), None)
    if record is None:
        return []
    known = set(record.read_text().split())
    return [p for p in paths if sha256_of(p, follow_links=True) in known]
