"""Names a judged file gets: valid UTF-8 for the database and logs, never clashing on disk."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

NAME_MAX = 255  # bytes, on every Linux file system inspectd is likely to meet


def display_name(text: str) -> str:
    """``text`` as valid UTF-8 for the database and logs; undecodable bytes become ``\\xNN``."""
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def safe_name(name: str) -> str:
    """A destination name that is valid UTF-8 and leaves room for a ``-N`` suffix."""
    clean = os.fsencode(name).decode("utf-8", "replace")
    stem, ext = Path(clean).stem, Path(clean).suffix
    room = NAME_MAX - 8 - len(ext.encode())
    while len(stem.encode()) > room:
        stem = stem[:-1]
    return stem + ext


def free_name(
    folder: Path,
    name: str,
    taken: frozenset[str] = frozenset(),
    exists: Callable[[Path], bool] = os.path.lexists,
) -> Path:
    """``folder/name`` or, when it exists, ``folder/stem-N.ext`` with the smallest free N."""
    name = safe_name(name)
    candidate = folder / name
    stem, ext = Path(name).stem, Path(name).suffix
    n = 0
    while exists(candidate) or str(candidate) in taken or candidate.name in taken:
        n += 1
        candidate = folder / f"{stem}-{n}{ext}"
    return candidate


def temp_name(dst: Path) -> Path:
    """Hidden name a cross-file-system copy is written under before it is published as ``dst``."""
    tag = hashlib.sha1(os.fsencode(dst.name), usedforsecurity=False).hexdigest()[:16]
    return dst.with_name(f".inspectd-{tag}.tmp")
