"""The watcher on real observers: native vs polling choice by file-system type, a dead observer
restarted by the rescan timer, recursive watching with sub-paths kept in the destinations, and
symlinks reported (to be quarantined) but never walked into."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from daemon.intake import watcher as watcher_mod
from daemon.intake.watcher import InboxWatcher, choose_observer, filesystem_type
from tests.conftest import write_image
from tests.hotfolder import FakeScorer, audit, make_folders, make_pipeline, offer, settle, sha, tmpfs

EXT = (".png", ".jpg")
IGNORE = (".*", "*.part")


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{message}")
    yield lines
    logger.remove(sink)


def events_until(w: InboxWatcher, want: Path, timeout: float = 10.0, kinds: tuple[str, ...] = ()) -> list:
    """Collect events until one for ``want`` (of one of ``kinds`` if given) arrives."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kind, path = w.events.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append((kind, path))
        if path == want and (not kinds or kind in kinds):
            return seen
    raise AssertionError(f"no event for {want} within {timeout} s; saw {seen}")


@pytest.mark.parametrize(
    ("fstype", "expected"),
    [
        ("ext4", "native"),
        ("tmpfs", "native"),
        ("nfs4", "polling (inbox is on nfs4)"),
        ("cifs", "polling (inbox is on cifs)"),
        ("fuse.sshfs", "polling (inbox is on fuse.sshfs)"),
        ("fuse.mergerfs", "polling (inbox is on fuse.mergerfs)"),
    ],
)
def test_auto_picks_polling_on_network_file_systems(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fstype: str, expected: str
) -> None:
    monkeypatch.setattr(watcher_mod, "filesystem_type", lambda _p: fstype)
    assert choose_observer("auto", tmp_path)[0] == expected
    assert choose_observer("native", tmp_path)[0] == "native"  # an explicit choice wins
    assert choose_observer("polling", tmp_path)[0] == "polling"


def test_filesystem_type_reads_the_real_mount_table(tmp_path: Path) -> None:
    assert filesystem_type(tmp_path)  # whatever holds /tmp here
    with tmpfs(tmp_path / "mnt") as mnt:
        assert filesystem_type(mnt) == "tmpfs"
        assert filesystem_type(mnt / "not-yet-created") == "tmpfs"


@pytest.mark.parametrize("observer", ["native", "polling"])
def test_real_observer_reports_a_new_image_and_a_symlink(tmp_path: Path, observer: str) -> None:
    w = InboxWatcher(
        tmp_path,
        extensions=EXT,
        ignore=IGNORE,
        rescan_seconds=60,
        observer=observer,  # type: ignore[arg-type]
        polling_interval=0.2,
    )
    w.start()
    try:
        img = write_image(tmp_path / "a.png")
        events_until(w, img, kinds=("created", "modified", "closed"))
        link = tmp_path / "b.png"
        link.symlink_to(img)
        events_until(w, link, kinds=("created",))
    finally:
        w.stop()


def test_dead_observer_is_restarted_and_logged(tmp_path: Path, logs: list[str]) -> None:
    w = InboxWatcher(tmp_path, extensions=EXT, ignore=IGNORE, rescan_seconds=0.2, observer="native")
    w.start()
    try:
        assert w._observer is not None
        w._observer.stop()  # the observer thread dies (what an exception in an emitter does)
        w._observer.join(5)
        deadline = time.monotonic() + 10
        while not (w.restarts and w._observer.is_alive()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert w.restarts == 1 and w._observer.is_alive()
        assert any("observer stopped unexpectedly; restarting it" in line for line in logs)
        img = write_image(tmp_path / "after.png")
        events_until(w, img, kinds=("created", "modified", "closed"))  # the new observer, not a scan
    finally:
        w.stop()


def test_rescan_is_the_safety_net_for_lost_events(tmp_path: Path) -> None:
    w = InboxWatcher(tmp_path, extensions=EXT, ignore=IGNORE, rescan_seconds=0.3, observer="native")
    w.start()
    try:
        assert w._observer is not None
        w._observer.unschedule_all()  # events are now lost, as on an inotify overflow
        img = write_image(tmp_path / "lost.png")
        events_until(w, img, kinds=("scan",))
    finally:
        w.stop()


def test_scan_reports_links_but_never_walks_into_them(tmp_path: Path) -> None:
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir()
    (outside / "deep").mkdir(parents=True)
    write_image(outside / "deep" / "x.png")
    (inbox / "linked-folder").symlink_to(outside)
    (inbox / "linked.png").symlink_to(outside / "deep" / "x.png")
    (inbox / "sub").mkdir()
    write_image(inbox / "sub" / "y.png")
    (inbox / ".staging").mkdir()
    write_image(inbox / ".staging" / "z.png")
    for recursive, expected in ((False, ["linked.png"]), (True, ["linked.png", "sub/y.png"])):
        w = InboxWatcher(
            inbox, extensions=EXT, ignore=IGNORE, rescan_seconds=60, observer="native", recursive=recursive
        )
        w.scan()
        found = []
        while not w.events.empty():
            found.append(str(w.events.get()[1].relative_to(inbox)))
        assert sorted(found) == expected


def test_recursive_watch_keeps_the_sub_path_in_the_destination(tmp_path: Path) -> None:
    folders = make_folders(tmp_path)
    pipeline = make_pipeline(folders, FakeScorer(), threshold=0.0)  # everything rejected
    w = InboxWatcher(
        folders.inbox,
        extensions=EXT,
        ignore=IGNORE,
        rescan_seconds=60,
        observer="native",
        recursive=True,
    )
    w.start()
    try:
        line_a = folders.inbox / "lineA" / "cam 2"
        line_a.mkdir(parents=True)
        img = write_image(line_a / "x.png", seed=1)
        top = write_image(folders.inbox / "x.png", seed=2)
        hidden = folders.inbox / ".upload-tmp"
        hidden.mkdir()
        write_image(hidden / "partial.png", seed=3)
        originals = {sha(img): "lineA/cam 2/x.png", sha(top): "x.png"}
        # A file written right after its folder appears gets a synthetic "created" (no close):
        # the folder's watch did not exist yet. The settle rule covers it.
        events_until(w, img)
        pipeline.events = w.events
        offer(pipeline, img, top)
        settle(pipeline)
    finally:
        w.stop()
    assert (folders.dests.rejected / "lineA" / "cam 2" / "x.png").exists()
    assert (folders.dests.rejected / "x.png").exists()
    assert (hidden / "partial.png").exists()  # ignored folder: untouched
    (hidden / "partial.png").unlink()
    hidden.rmdir()
    for d in sorted(folders.inbox.rglob("*"), reverse=True):
        d.rmdir()  # only empty sub-folders are left behind
    assert audit(folders, originals)["rows"] == 2


def test_an_upload_right_after_a_claim_is_seen_at_once(tmp_path: Path) -> None:
    """The daemon claims a file by renaming it out of the inbox; the next upload is finished by
    renaming ``x.png.part`` to ``x.png``. Stock watchdog holds the unpaired half of the claim's
    rename for 0.5 s and every event behind it, so that upload was seen up to 0.5 s late."""
    inbox, claims = tmp_path / "inbox", tmp_path / "claims"
    inbox.mkdir()
    claims.mkdir()
    image = write_image(tmp_path / "image.png").read_bytes()
    w = InboxWatcher(inbox, extensions=EXT, ignore=IGNORE, rescan_seconds=60, observer="native")
    w.start()
    delays = []
    try:
        for i in range(5):
            part = inbox / f".x{i}.png.part"
            part.write_bytes(image)
            target = inbox / f"x{i}.png"
            if i:
                (inbox / f"x{i - 1}.png").rename(claims / f"x{i - 1}.png")  # the claim
            time.sleep(0.05)
            renamed = time.monotonic()
            part.rename(target)
            events_until(w, target, kinds=("moved",))
            delays.append(time.monotonic() - renamed)
    finally:
        w.stop()
    assert sorted(delays)[2] < 0.1, delays  # the median; stock watchdog: about 0.45 s after a claim


def test_an_image_renamed_in_from_outside_the_inbox_is_a_move_not_a_creation(tmp_path: Path) -> None:
    """Uploaders that write into a staging folder and rename the finished file into the inbox: the
    rename shows a complete file, so it is reported as a move (ready at once) instead of a creation
    that waits out settle_ms (1 s by default) like a file still being written. A file renamed out
    of the inbox is not reported at all, like a deletion."""
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    staging.mkdir()
    staged = write_image(staging / "cam.png")
    w = InboxWatcher(inbox, extensions=EXT, ignore=IGNORE, rescan_seconds=60, observer="native")
    w.start()
    try:
        landed = inbox / "cam.png"
        staged.rename(landed)
        seen = events_until(w, landed)
        landed.rename(staging / "cam.png")  # out again: nothing to offer
        time.sleep(0.3)
        left = [] if w.events.empty() else [w.events.get_nowait()]
    finally:
        w.stop()
    assert seen == [("moved", landed)]
    assert left == []
