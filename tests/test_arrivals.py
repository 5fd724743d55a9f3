from pathlib import Path

from daemon.fs import FileSignature
from daemon.intake.settle import Arrivals


class FakeFs:
    def __init__(self) -> None:
        self.sigs: dict[Path, FileSignature | None] = {}
        self.t = 100.0

    def stat(self, path: Path) -> FileSignature | None:
        return self.sigs.get(path)

    def clock(self) -> float:
        return self.t


def make(settle: float = 1.0) -> tuple[Arrivals, FakeFs]:
    fs = FakeFs()
    return Arrivals(settle, stat=fs.stat, clock=fs.clock, wall=lambda: 1_700_000_000.0), fs


P = Path("/inbox/a.png")


def test_growing_file_waits_until_unchanged_for_settle_time() -> None:
    arrivals, fs = make(settle=1.0)
    fs.sigs[P] = FileSignature(10, 1, 7)
    arrivals.note(P, "created")
    assert arrivals.pop_ready() is None
    fs.t += 0.6
    fs.sigs[P] = FileSignature(20, 2, 7)  # still being written
    assert arrivals.pop_ready() is None
    fs.t += 0.6
    assert arrivals.pop_ready() is None  # only 0.6 s since the last change
    fs.t += 0.5
    ready = arrivals.pop_ready()
    assert ready is not None and ready.path == P
    assert len(arrivals) == 0


def test_close_after_write_is_ready_at_once_unless_written_again() -> None:
    arrivals, fs = make(settle=10.0)
    fs.sigs[P] = FileSignature(10, 1, 7)
    arrivals.note(P, "closed")
    ready = arrivals.pop_ready()
    assert ready is not None and ready.path == P

    arrivals.note(P, "closed")
    fs.sigs[P] = FileSignature(30, 3, 7)  # reopened and appended after the close
    assert arrivals.pop_ready() is None


def test_empty_file_is_not_trusted_on_close() -> None:
    arrivals, fs = make(settle=5.0)
    fs.sigs[P] = FileSignature(0, 1, 7)
    arrivals.note(P, "closed")
    assert arrivals.pop_ready() is None


def test_rename_into_inbox_counts_as_complete() -> None:
    arrivals, fs = make(settle=10.0)
    fs.sigs[P] = FileSignature(10, 1, 7)
    arrivals.note(P, "moved")
    assert arrivals.pop_ready() is not None


def test_vanished_file_is_dropped() -> None:
    arrivals, _fs = make(settle=0.0)
    arrivals.note(P, "scan")
    assert arrivals.pop_ready() is None
    assert len(arrivals) == 0


def test_retry_delay_holds_the_file_back() -> None:
    from daemon.retry import Retries

    arrivals, fs = make(settle=0.0)
    retries: Retries[Path] = Retries(clock=lambda: fs.t)
    arrivals.held = retries.wait_s
    fs.sigs[P] = FileSignature(10, 1, 7)
    retries.hold(P, 2.0)
    arrivals.note(P, "retry")
    assert arrivals.pop_ready() is None
    fs.t += 2.1
    assert arrivals.pop_ready() is not None


def test_oldest_ready_file_comes_first() -> None:
    arrivals, fs = make(settle=0.0)
    paths = [Path(f"/inbox/{i}.png") for i in range(3)]
    for p in paths:
        fs.sigs[p] = FileSignature(1, 1, 1)
        arrivals.note(p, "scan")
    got = [arrivals.pop_ready() for _ in paths]
    assert [r.path for r in got if r] == paths


def test_stalled_upload_waits_for_its_close_once_closes_are_reported() -> None:
    arrivals, fs = make(settle=1.0)
    other = Path("/inbox/other.png")
    fs.sigs[other] = FileSignature(5, 1, 9)
    arrivals.note(other, "closed")  # this observer reports close-after-write (inotify)
    assert arrivals.pop_ready() is not None
    fs.sigs[P] = FileSignature(10, 1, 7)
    arrivals.note(P, "created")
    arrivals.note(P, "modified")
    fs.t += 5.0  # the upload stalls far longer than settle
    assert arrivals.pop_ready() is None
    fs.sigs[P] = FileSignature(20, 2, 7)
    arrivals.note(P, "modified")
    arrivals.note(P, "closed")
    ready = arrivals.pop_ready()
    assert ready is not None and ready.path == P


def test_open_file_is_judged_after_open_settle_as_a_last_resort() -> None:
    arrivals, fs = make(settle=1.0)
    fs.sigs[P] = FileSignature(1, 1, 1)
    arrivals.note(P, "closed")
    arrivals.pop_ready()
    fs.sigs[P] = FileSignature(10, 1, 7)
    arrivals.note(P, "modified")  # a writer that never closes
    assert arrivals.pop_ready() is None
    fs.t += 29.0
    assert arrivals.pop_ready() is None
    fs.t += 1.5
    assert arrivals.pop_ready() is not None


def test_without_close_events_modified_files_settle_normally() -> None:
    arrivals, fs = make(settle=1.0)  # polling observer: never a close event
    fs.sigs[P] = FileSignature(10, 1, 7)
    arrivals.note(P, "modified")
    assert arrivals.pop_ready() is None
    fs.t += 1.1
    assert arrivals.pop_ready() is not None


def test_expect_close_applies_from_the_first_file() -> None:
    fs = FakeFs()
    arrivals = Arrivals(1.0, stat=fs.stat, clock=fs.clock, expect_close=True)
    fs.sigs[P] = FileSignature(8192, 1, 7)
    arrivals.note(P, "modified")  # the very first upload after start stalls
    assert arrivals.pop_ready() is None
    fs.t += 5.0
    assert arrivals.pop_ready() is None
