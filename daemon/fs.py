"""The file operations intake and judging need, as one object the pipeline and the filer are given.

Nothing here follows a symbolic link: signatures use ``lstat``, reads go through
``inspectd.reading.open_regular`` (``O_NOFOLLOW | O_NONBLOCK``, so a FIFO named like an image
cannot hang the daemon) and a link is moved as the link itself. Moves never overwrite. A move is
idempotent (calling it again after a crash finishes the job) and never leaves a half file under the
final name, also when the destination sits on another file system. Tests subclass
``FileSystem`` to fail, or to die, at exactly one of these steps.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from daemon.names import temp_name
from inspectd.hashing import sha256_of
from inspectd.reading import open_regular

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


def same_filesystem(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


class FileSystem:
    """The real, local file system; every primitive is a method so that a test can replace one."""

    # -- primitives -------------------------------------------------------------------------------
    def signature(self, path: Path) -> FileSignature | None:
        return signature(path)

    def sha256(self, path: Path) -> str:
        """Content hash of a regular file; a link or FIFO raises OSError (ELOOP / EINVAL)."""
        return sha256_of(path)

    def exists(self, path: Path) -> bool:
        return os.path.lexists(path)

    def link(self, src: Path, dst: Path) -> None:
        os.link(src, dst, follow_symlinks=False)  # atomic, never overwrites, never follows

    def rename(self, src: Path, dst: Path) -> None:
        src.rename(dst)

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def copy(self, fin: BinaryIO, fout: BinaryIO) -> None:
        shutil.copyfileobj(fin, fout, 1 << 20)

    def fsync_dir(self, folder: Path) -> None:
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

    def same_entry(self, a: Path, b: Path) -> bool:
        """True when both names are the same inode (hard links), without following links."""
        try:
            sa, sb = a.lstat(), b.lstat()
        except FileNotFoundError:
            return False
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)

    # -- steps made of them -----------------------------------------------------------------------
    def claim(self, src: Path, to: Path) -> None:
        """Take a file out of its inbox name, atomically; durable once the caller has synced the
        folder (``Claims.sync``: once for a burst of claims, before judging any of them).

        After the claim a new upload under the same name is a new image, never mistaken for this one.
        """
        if self.exists(to):
            raise FileExistsError(errno.EEXIST, "claim name already in use", str(to))
        self.rename(src, to)

    def move_no_clobber(self, src: Path, dst: Path) -> None:
        """Move ``src`` to ``dst`` without ever replacing an existing ``dst``.

        Idempotent: if ``src`` is gone and ``dst`` exists the move already happened; if both are
        the same inode because a hard link was made but ``src`` not yet removed, ``src`` is
        removed. A symbolic link is moved as the link itself. Raises FileExistsError when ``dst``
        is a different file.
        """
        if not self.exists(src):
            if self.exists(dst):
                return
            raise FileNotFoundError(errno.ENOENT, "neither source nor destination exists", str(src))
        if self.exists(dst):
            if self.same_entry(src, dst):
                src.unlink()
                self.fsync_dir(src.parent)
                return
            raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
        try:
            self.link(src, dst)
        except OSError as exc:
            if exc.errno not in CROSS_DEVICE:
                raise
            self._copy_then_publish(src, dst)
        self.fsync_dir(dst.parent)
        src.unlink()
        self.fsync_dir(src.parent)

    def _copy_then_publish(self, src: Path, dst: Path) -> None:
        """Cross-file-system move: copy to a hidden temp name, fsync, then publish without overwrite.

        A failed copy (disk full, I/O error) removes its temp file, so the destination never holds
        a partial image under any name once this returns or raises.
        """
        tmp = temp_name(dst)
        tmp.unlink(missing_ok=True)  # a leftover of a copy interrupted by a crash
        try:
            if src.is_symlink():
                tmp.symlink_to(src.readlink())
            else:
                with open_regular(src) as fin, tmp.open("xb") as fout:
                    self.copy(fin, fout)
                    fout.flush()
                    os.fsync(fout.fileno())
                shutil.copystat(src, tmp)
            self.fsync_dir(tmp.parent)
            self._publish(tmp, dst)
        except Exception:  # a crash leaves the temp file instead; recovery removes it
            tmp.unlink(missing_ok=True)
            raise

    def _publish(self, tmp: Path, dst: Path) -> None:
        try:
            self.link(tmp, dst)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise
            # No hard links on this file system: rename is the only publish step left.
            if self.exists(dst):
                raise FileExistsError(errno.EEXIST, "destination exists", str(dst)) from exc
            self.rename(tmp, dst)
        else:
            tmp.unlink()
