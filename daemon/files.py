"""File-system side of judging: which names count, when a file is complete, and safe moves.

Moves never overwrite: a clash gets a ``-1``, ``-2`` ... suffix. A move is idempotent (calling it
again after a crash finishes the job) and never leaves a half file under the final name, also
when the destination sits on another file system.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileSignature:
    """What must stay unchanged for a file to count as completely written."""

    size: int
    mtime_ns: int
    inode: int


def signature(path: Path) -> FileSignature | None:
    """The file's size/mtime/inode, or None when it is gone or not a regular file."""
    try:
        st = path.stat(follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not _is_regular(st.st_mode):
        return None
    return FileSignature(st.st_size, st.st_mtime_ns, st.st_ino)


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def is_candidate(name: str, extensions: tuple[str, ...], ignore: tuple[str, ...]) -> bool:
    """True for an image name worth judging; temp names (``.x``, ``x.part`` ...) wait for a rename."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in ignore):
        return False
    return Path(name).suffix.lower() in extensions


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def free_name(folder: Path, name: str, taken: frozenset[str] = frozenset()) -> Path:
    """``folder/name`` or, when it exists, ``folder/stem-N.ext`` with the smallest free N."""
    candidate = folder / name
    stem, ext = Path(name).stem, Path(name).suffix
    n = 0
    while candidate.exists() or candidate.is_symlink() or candidate.name in taken:
        n += 1
        candidate = folder / f"{stem}-{n}{ext}"
    return candidate


def move_no_clobber(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` without ever replacing an existing ``dst``.

    Idempotent: if ``src`` is gone and ``dst`` exists the move already happened; if both exist
    because a hard link was made but ``src`` not yet removed, ``src`` is removed.
    Raises FileExistsError when ``dst`` is a different file.
    """
    if not src.exists():
        if dst.exists():
            return
        raise FileNotFoundError(errno.ENOENT, "neither source nor destination exists", str(src))
    if dst.exists():
        if src.samefile(dst):
            src.unlink()
            return
        raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
    try:
        os.link(src, dst)  # atomic and never overwrites
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        _copy_then_publish(src, dst)
    _fsync_dir(dst.parent)
    src.unlink()
    _fsync_dir(src.parent)


def _copy_then_publish(src: Path, dst: Path) -> None:
    """Cross-file-system move: copy to a hidden temp name, fsync, then publish without overwrite."""
    tmp = dst.with_name(f".{dst.name}.inspectd-tmp")
    with src.open("rb") as fin, tmp.open("wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copystat(src, tmp)
    try:
        os.link(tmp, dst)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            tmp.unlink()
            raise
        # No hard links on this file system: rename is the only publish step left.
        if dst.exists():
            tmp.unlink()
            raise FileExistsError(errno.EEXIST, "destination exists", str(dst)) from exc
        tmp.rename(dst)
    else:
        tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def same_filesystem(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev
