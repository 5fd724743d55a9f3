"""A file's signature: what must stay unchanged for it to count as completely written."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FileKind = Literal["file", "symlink", "special"]


@dataclass(frozen=True)
class FileSignature:
    """What must stay unchanged for a file to count as completely written (and still ours)."""

    size: int
    mtime_ns: int
    inode: int
    kind: FileKind = "file"


def signature(path: Path) -> FileSignature | None:
    """The entry's size/mtime/inode/kind without following links; None when gone or a folder."""
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISDIR(st.st_mode):
        return None
    kind: FileKind = (
        "file" if stat.S_ISREG(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "special"
    )
    return FileSignature(st.st_size, st.st_mtime_ns, st.st_ino, kind)
