"""A crash at every point of the filing state machine, then a restart: each image ends up in exactly
one destination with exactly one row, also when a new upload under the same name (or an overwrite)
arrived while the daemon was down. The crash is a BaseException raised from inside the step, which
skips every ``except Exception`` just as a SIGKILL skips everything."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from daemon.db.store import Store
from daemon.fs import FileSystem
from tests.conftest import write_image
from tests.hotfolder import (
    FakeScorer,
    audit,
    fs_with,
    make_folders,
    make_pipeline,
    make_store,
    offer,
    settle,
    sha,
)


class Crash(BaseException):
    """The process died here."""


def crash_on_call(n: int = 1) -> Callable[..., None]:
    calls = {"n": 0}

    def boom(*_a: object, **_k: object) -> None:
        calls["n"] += 1
        if calls["n"] >= n:
            raise Crash

    return boom


def wrap_then_crash(real: Callable[..., object]) -> Callable[..., object]:
    """Do the real call, then die (the step after it never happens)."""

    def run(*a: object, **k: object) -> object:
        real(*a, **k)
        raise Crash

    return run


def cross_device_link(inbox: Path) -> Callable[[Path, Path], None]:
    """``link`` as if the inbox sat on another file system than the destinations."""

    def link(a: Path, b: Path) -> None:
        if a.is_relative_to(inbox):  # from the inbox's claims folder
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        FileSystem().link(a, b)

    return link


CRASH_POINTS: dict[str, Callable[[pytest.MonkeyPatch], FileSystem]] = {
    # complete in the inbox, not claimed yet
    "before_claim": lambda mp: fs_with(claim=crash_on_call()),
    # claimed, no row yet
    "after_claim": lambda mp: (mp.setattr(Store, "record", crash_on_call()), FileSystem())[1],
    # the row is committed, the image not moved
    "after_commit": lambda mp: fs_with(move_no_clobber=crash_on_call()),
    # hard link made, claim not yet removed (fsync #1 follows the claim, #2 the link)
    "after_link": lambda mp: fs_with(fsync_dir=crash_on_call(2)),
    # moved, moved_at not set
    "after_move": lambda mp: (mp.setattr(Store, "mark_moved", crash_on_call()), FileSystem())[1],
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
@pytest.mark.parametrize("same_name_upload_while_down", [False, True])
def test_crash_then_restart_files_each_image_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str, same_name_upload_while_down: bool
) -> None:
    folders = make_folders(tmp_path)
    first = write_image(folders.inbox / "cam.png", seed=1)
    originals = {sha(first): "cam.png"}
    with monkeypatch.context() as mp:
        pipeline = make_pipeline(folders, FakeScorer(), fs=CRASH_POINTS[point](mp))
        offer(pipeline, first)
        with pytest.raises(Crash):
            settle(pipeline)
        pipeline.store.engine.dispose()
    if same_name_upload_while_down and not first.exists():
        second = write_image(folders.inbox / "cam.png", seed=2)
        originals[sha(second)] = "cam.png (second upload)"

    restarted = make_pipeline(folders, FakeScorer(), store=make_store(folders))
    restarted.recover()
    offer(restarted, *[p for p in folders.inbox.iterdir() if p.name == "cam.png"], kind="scan")
    settle(restarted)
    figures = audit(folders, originals)
    assert figures == {
        "images": len(originals),
        "rows": len(originals),
        "lost": 0,
        "duplicated": 0,
        "unknown_files": 0,
    }


@pytest.mark.parametrize("point", ["during_copy", "after_publish"])
def test_crash_during_cross_filesystem_move_leaves_no_half_file(tmp_path: Path, point: str) -> None:
    folders = make_folders(tmp_path)
    img = write_image(folders.inbox / "big.png", seed=3, size=256)
    originals = {sha(img): "big.png"}
    link = cross_device_link(folders.inbox)
    if point == "during_copy":

        def half_copy(fin: BinaryIO, fout: BinaryIO) -> None:
            fout.write(fin.read(1000))
            raise Crash

        fs = fs_with(link=link, copy=half_copy)
    else:
        fs = fs_with(link=link)
        fs._publish = wrap_then_crash(fs._publish)  # type: ignore[method-assign]
    pipeline = make_pipeline(folders, FakeScorer(), fs=fs)
    offer(pipeline, img)
    with pytest.raises(Crash):
        settle(pipeline)
    pipeline.store.engine.dispose()
    if point == "during_copy":  # the half copy sits under a hidden temp name, never the final one
        names = [p.name for p in folders.destination_files()]
        assert len(names) == 1 and names[0].startswith(".inspectd-"), names
    restarted = make_pipeline(folders, FakeScorer(), store=make_store(folders), fs=fs_with(link=link))
    assert restarted.recover() == 1
    assert audit(folders, originals)["lost"] == 0
    assert len(folders.destination_files()) == 1


def test_overwritten_while_down_drops_the_old_verdict_and_judges_the_new_content(tmp_path: Path) -> None:
    folders = make_folders(tmp_path)
    img = write_image(folders.inbox / "cam.png", seed=4)
    originals = {sha(img): "overwritten"}
    pipeline = make_pipeline(folders, FakeScorer(), fs=fs_with(claim=crash_on_call()))
    offer(pipeline, img)
    with pytest.raises(Crash):
        settle(pipeline)
    pipeline.store.engine.dispose()
    write_image(folders.inbox / "cam.png", seed=5)  # the camera overwrote it while we were down
    restarted = make_pipeline(folders, FakeScorer(), store=make_store(folders))
    restarted.recover()
    offer(restarted, img, kind="scan")
    settle(restarted)
    figures = audit(folders, {sha(folders.destination_files()[0]): "cam.png v2"})
    assert figures["rows"] == 1 and figures["lost"] == 0 and figures["unknown_files"] == 0
    assert sha(folders.destination_files()[0]) not in originals  # the overwritten version is gone


def test_same_name_written_again_right_after_the_verdict_is_a_second_capture(tmp_path: Path) -> None:
    """The first capture was claimed on arrival, so the name was free: the camera's next capture
    under it is a new image, judged on its own; nothing is voided, nothing lost."""
    folders = make_folders(tmp_path)
    img = write_image(folders.inbox / "cam.png", seed=6)
    originals = {sha(img): "cam.png v1"}
    scorer = FakeScorer()
    pipeline = make_pipeline(folders, scorer)
    real_record = pipeline.store.record

    def record_then_overwrite(row: object) -> object:
        out = real_record(row)  # type: ignore[arg-type]
        if scorer.calls == 1:
            tmp = folders.root / "v2.png"
            write_image(tmp, seed=7)
            originals[sha(tmp)] = "cam.png v2"
            tmp.replace(img)  # the camera wrote its next capture under the same name
            offer(pipeline, img, kind="moved")
        return out

    pipeline.store.record = record_then_overwrite  # type: ignore[method-assign]
    offer(pipeline, img)
    results = settle(pipeline)
    assert [r.outcome for r in results].count("vanished") == 0
    assert scorer.calls == 2
    assert audit(folders, originals) == {
        "images": 2,
        "rows": 2,
        "lost": 0,
        "duplicated": 0,
        "unknown_files": 0,
    }
