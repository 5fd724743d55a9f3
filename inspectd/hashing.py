"""Content hashes: of an image (what was judged or trained on) and of an export (its model id)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from inspectd.reading import open_regular

CHUNK = 1 << 20


def sha256_files(paths: Iterable[Path], *, follow_links: bool = False) -> str:
    """Hex sha256 of the files' bytes, one after the other.

    By default it reads through ``open_regular``: a link or FIFO is refused (OSError), as the
    daemon must for what lands in its inbox; images a user names are hashed with
    ``follow_links=True``.
    """
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") if follow_links else open_regular(path) as fh:
            while block := fh.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path, *, follow_links: bool = False) -> str:
    return sha256_files([path], follow_links=follow_links)
