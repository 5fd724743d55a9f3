import errno
import os
from pathlib import Path

import pytest

from daemon.fs import FileSystem, same_filesystem, signature
from daemon.intake.names import is_candidate
from daemon.names import display_name, free_name
from inspectd.reading import open_regular
from tests.hotfolder import fs_with, tmpfs

EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
IGNORE = (".*", "*.part", "*.tmp", "~*")
move_no_clobber = FileSystem().move_no_clobber


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png", True),
        ("CAM01.JPG", True),
        ("x.tiff", True),
        ("a.png.part", False),
        (".a.png", False),
        ("~a.png", False),
        ("a.tmp", False),
        ("notes.txt", False),
        ("image", False),
    ],
)
def test_candidate_names(name: str, expected: bool) -> None:
    assert is_candidate(name, EXT, IGNORE) is expected


def test_free_name_adds_a_suffix_on_clash(tmp_path: Path) -> None:
    assert free_name(tmp_path, "a.png") == tmp_path / "a.png"
    (tmp_path / "a.png").write_bytes(b"1")
    (tmp_path / "a-1.png").write_bytes(b"2")
    assert free_name(tmp_path, "a.png") == tmp_path / "a-2.png"


def test_move_never_overwrites_and_is_idempotent(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.png", tmp_path / "out" / "src.png"
    dst.parent.mkdir()
    src.write_bytes(b"new")
    other = tmp_path / "out" / "taken.png"
    other.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        move_no_clobber(src, other)
    assert other.read_bytes() == b"old" and src.exists()

    move_no_clobber(src, dst)
    assert dst.read_bytes() == b"new" and not src.exists()
    move_no_clobber(src, dst)  # a second call after a crash is harmless
    assert dst.read_bytes() == b"new"


def test_move_finishes_after_crash_between_link_and_unlink(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.png", tmp_path / "b.png"
    src.write_bytes(b"x")
    os.link(src, dst)
    move_no_clobber(src, dst)
    assert not src.exists() and dst.read_bytes() == b"x"


def test_cross_filesystem_move_copies_then_publishes(tmp_path: Path) -> None:
    def no_cross_link(a: Path, b: Path) -> None:
        if a.parent == tmp_path:  # the inbox -> destination hop crosses "devices"
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        FileSystem().link(a, b)

    move_no_clobber = fs_with(link=no_cross_link).move_no_clobber
    src = tmp_path / "a.png"
    src.write_bytes(b"payload" * 1000)
    dst_dir = tmp_path / "dest"
    dst_dir.mkdir()
    move_no_clobber(src, dst_dir / "a.png")
    assert (dst_dir / "a.png").read_bytes() == b"payload" * 1000
    assert not src.exists()
    assert sorted(p.name for p in dst_dir.iterdir()) == ["a.png"]  # no temp file left behind


def test_symlink_is_moved_as_itself_never_its_target(tmp_path: Path) -> None:
    secret = tmp_path / "outside.png"
    secret.write_bytes(b"not yours")
    inbox, dest = tmp_path / "inbox", tmp_path / "quarantine"
    inbox.mkdir()
    dest.mkdir()
    link = inbox / "evil.png"
    link.symlink_to(secret)
    assert signature(link) is not None and signature(link).kind == "symlink"  # type: ignore[union-attr]
    with pytest.raises(OSError) as refused:
        open_regular(link)
    assert refused.value.errno == errno.ELOOP
    move_no_clobber(link, dest / "evil.png")
    moved = dest / "evil.png"
    assert moved.is_symlink() and moved.readlink() == secret
    assert secret.read_bytes() == b"not yours" and secret.stat().st_nlink == 1  # target untouched


def test_fifo_named_like_an_image_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    assert signature(fifo).kind == "special"  # type: ignore[union-attr]
    with pytest.raises(OSError) as refused:
        open_regular(fifo)  # would block forever without O_NONBLOCK
    assert refused.value.errno == errno.EINVAL


def test_folder_named_like_an_image_has_no_signature(tmp_path: Path) -> None:
    (tmp_path / "folder.png").mkdir()
    assert signature(tmp_path / "folder.png") is None


def test_undecodable_and_overlong_names_get_a_safe_destination_name(tmp_path: Path) -> None:
    raw = os.fsdecode(b"caf\xe9 \xff.png")  # Latin-1 bytes from an old FTP client
    name = free_name(tmp_path, raw)
    name.name.encode("utf-8")  # valid UTF-8, storable in the database
    assert name.suffix == ".png" and "caf" in name.name
    assert display_name(raw) == "caf\\xe9 \\xff.png"
    long = "x" * 251 + ".png"
    (tmp_path / long).write_bytes(b"1")
    for n in range(3):  # shortened once, so even its -N suffixes fit in NAME_MAX
        free = free_name(tmp_path, long)
        free.write_bytes(b"2")
        assert free.suffix == ".png" and len(free.name.encode()) <= 255
        assert free.stem.endswith(f"-{n}") if n else free.name != long


def test_real_cross_filesystem_move_on_tmpfs(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt") as other:
        assert not same_filesystem(tmp_path, other)
        src = tmp_path / "a.png"
        src.write_bytes(os.urandom(300_000))
        data = src.read_bytes()
        move_no_clobber(src, other / "a.png")
        assert (other / "a.png").read_bytes() == data and not src.exists()
        assert sorted(p.name for p in other.iterdir()) == ["a.png"]
        again = tmp_path / "a.png"
        again.write_bytes(b"other")
        with pytest.raises(FileExistsError):
            move_no_clobber(again, other / "a.png")
        assert (other / "a.png").read_bytes() == data and again.exists()
        assert sorted(p.name for p in other.iterdir()) == ["a.png"]


def test_disk_full_on_the_destination_leaves_no_partial_file(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", size="256k") as small:
        src = tmp_path / "big.png"
        src.write_bytes(os.urandom(600_000))
        with pytest.raises(OSError) as full:
            move_no_clobber(src, small / "big.png")
        assert full.value.errno == errno.ENOSPC
        assert list(small.iterdir()) == [] and src.stat().st_size == 600_000
