"""Which names in the inbox are captures to judge: image extensions, minus temp names and
ignored folders (upload tools write ``.x``, ``x.part`` ... and rename when done)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

CLAIMS_DIR = ".inspectd-claims"  # the daemons' own claims folders (``daemon.intake.claims``)


def ignored_folder(name: str, ignore: tuple[str, ...]) -> bool:
    """A sub-folder never watched: the claims folder, or one matching an ignore pattern."""
    return name == CLAIMS_DIR or any(fnmatch.fnmatchcase(name, pattern) for pattern in ignore)


def is_candidate(name: str, extensions: tuple[str, ...], ignore: tuple[str, ...]) -> bool:
    """True for an image name worth judging; temp names (``.x``, ``x.part`` ...) wait for a rename."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in ignore):
        return False
    return Path(name).suffix.lower() in extensions


def in_scope(inbox: Path, path: Path, ignore: tuple[str, ...], recursive: bool) -> bool:
    """True when ``path``'s folder is watched: the inbox itself or, if recursive, a non-ignored
    sub-folder of it (``.tmp/``-style staging folders of upload tools stay ignored)."""
    if path.parent == inbox:
        return True
    if not recursive:
        return False
    try:
        parts = path.parent.relative_to(inbox).parts
    except ValueError:
        return False
    return not any(ignored_folder(part, ignore) for part in parts)
