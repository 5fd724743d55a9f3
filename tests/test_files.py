import errno
import os
from pathlib import Path

import pytest

from daemon import files
from daemon.files import free_name, is_candidate, move_no_clobber

EXT = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
IGNORE = (".*", "*.part", "*.tmp", "~*")


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


def test_cross_filesystem_move_copies_then_publishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_link = os.link

    def no_cross_link(a: object, b: object, **kw: object) -> None:
        if Path(str(a)).parent == tmp_path:  # the inbox -> destination hop crosses "devices"
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_link(a, b, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(files.os, "link", no_cross_link)
    src = tmp_path / "a.png"
    src.write_bytes(b"payload" * 1000)
    dst_dir = tmp_path / "dest"
    dst_dir.mkdir()
    move_no_clobber(src, dst_dir / "a.png")
    assert (dst_dir / "a.png").read_bytes() == b"payload" * 1000
    assert not src.exists()
    assert sorted(p.name for p in dst_dir.iterdir()) == ["a.png"]  # no temp file left behind
