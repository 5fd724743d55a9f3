"""File-system side of judging: which names count, when a file is complete, and safe moves.

Nothing here follows a symbolic link: signatures use ``lstat``, reads open with ``O_NOFOLLOW``
(and ``O_NONBLOCK``, so a FIFO named like an image cannot hang the daemon), and a link is moved as
the link itself. Moves never overwrite: a clash gets a ``-1``, ``-2`` ... suffix. A move is
idempotent (calling it again after a crash finishes the job) and never leaves a half file under the
final name, also when the destination sits on another file system.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from inspectd.reading import open_regular

NAME_MAX = 255  # bytes, on every Linux file system inspectd is likely to meet
CROSS_DEVICE = (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP)
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


def is_candidate(name: str, extensions: tuple[str, ...], ignore: tuple[str, ...]) -> bool:
    """True for an image name worth judging; temp names (``.x``, ``x.part`` ...) wait for a rename."""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in ignore):
        return False
    return Path(name).suffix.lower() in extensions


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


def free_name(folder: Path, name: str, taken: frozenset[str] = frozenset()) -> Path:
    """``folder/name`` or, when it exists, ``folder/stem-N.ext`` with the smallest free N."""
    name = safe_name(name)
    candidate = folder / name
    stem, ext = Path(name).stem, Path(name).suffix
    n = 0
    while os.path.lexists(candidate) or str(candidate) in taken or candidate.name in taken:
        n += 1
        candidate = folder / f"{stem}-{n}{ext}"
    return candidate


def temp_name(dst: Path) -> Path:
    """Hidden name a cross-file-system copy is written under before it is published as ``dst``."""
    tag = hashlib.sha1(os.fsencode(dst.name), usedforsecurity=False).hexdigest()[:16]
    return dst.with_name(f".inspectd-{tag}.tmp")


def same_entry(a: Path, b: Path) -> bool:
    """True when both names are the same inode (hard links), without following links."""
    try:
        sa, sb = a.lstat(), b.lstat()
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def move_no_clobber(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` without ever replacing an existing ``dst``.

    Idempotent: if ``src`` is gone and ``dst`` exists the move already happened; if both are the
    same inode because a hard link was made but ``src`` not yet removed, ``src`` is removed.
    A symbolic link is moved as the link itself. Raises FileExistsError when ``dst`` is a
    different file.
    """
    if not os.path.lexists(src):
        if os.path.lexists(dst):
            return
        raise FileNotFoundError(errno.ENOENT, "neither source nor destination exists", str(src))
    if os.path.lexists(dst):
        if same_entry(src, dst):
            src.unlink()
            _fsync_dir(src.parent)
            return
        raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
    try:
        os.link(src, dst, follow_symlinks=False)  # atomic, never overwrites, never follows
    except OSError as exc:
        if exc.errno not in CROSS_DEVICE:
            raise
        _copy_then_publish(src, dst)
    _fsync_dir(dst.parent)
    src.unlink()
    _fsync_dir(src.parent)


def _copy_then_publish(src: Path, dst: Path) -> None:
    """Cross-file-system move: copy to a hidden temp name, fsync, then publish without overwrite.

    A failed copy (disk full, I/O error) removes its temp file, so the destination never holds a
    partial image under any name once this returns or raises.
    """
    tmp = temp_name(dst)
    tmp.unlink(missing_ok=True)  # a leftover of a copy interrupted by a crash
    try:
        if src.is_symlink():
            tmp.symlink_to(src.readlink())
        else:
            with open_regular(src) as fin, tmp.open("xb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
            shutil.copystat(src, tmp)
        _fsync_dir(tmp.parent)
        _publish(tmp, dst)
    except Exception:  # a crash leaves the temp file instead; recovery removes it
        tmp.unlink(missing_ok=True)
        raise


def _publish(tmp: Path, dst: Path) -> None:
    try:
        os.link(tmp, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise
        # No hard links on this file system: rename is the only publish step left.
        if os.path.lexists(dst):
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


def claim(src: Path, to: Path) -> None:
    """Take a judged file out of its inbox name, atomically and durably, before it is moved.

    After the claim a new upload under the same name is a new image, never mistaken for this one.
    """
    if os.path.lexists(to):
        raise FileExistsError(errno.EEXIST, "claim name already in use", str(to))
    src.rename(to)
    _fsync_dir(to.parent)


def same_filesystem(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev
