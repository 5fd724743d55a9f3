"""The overlapped pipeline: files are scored on worker threads while the pipeline thread claims new
arrivals and records earlier verdicts, with every exactly-once rule kept."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.db.models import Inspection
from daemon.judge.ahead import Ahead
from inspectd.scorer import Model, Score
from tests.conftest import write_image
from tests.hotfolder import FakeScorer, audit, fs_with, make_folders, make_pipeline, offer, settle, sha

WAIT_S = 10.0


class GatedScorer(FakeScorer):
    """A fake scorer that holds every score until the test opens the gate."""

    def __init__(self, model_id: str = "gated-model") -> None:
        super().__init__()
        self.model_id = model_id
        self.started = threading.Event()
        self.gate = threading.Event()

    def score(self, path: Path) -> Score:
        self.started.set()
        assert self.gate.wait(WAIT_S), "the test never opened the gate"
        return super().score(path)


def rows(pipeline: object) -> list[Inspection]:
    with pipeline.store.session() as s:  # type: ignore[attr-defined]
        return list(s.scalars(select(Inspection).order_by(Inspection.id)))


def test_arrivals_are_claimed_while_a_score_runs(tmp_path: Path) -> None:
    """A capture that lands while another is being scored has its inbox name freed at once, so a
    camera reusing the name cannot overwrite it (it used to wait for the verdict)."""
    folders = make_folders(tmp_path)
    scorer = GatedScorer()
    pipeline = make_pipeline(folders, scorer)
    first = write_image(folders.inbox / "a.png", seed=1)
    originals = {sha(first): "a.png"}
    offer(pipeline, first)
    stepping = threading.Thread(target=pipeline.step, name="test-step")
    stepping.start()
    try:
        assert scorer.started.wait(WAIT_S)
        second = write_image(folders.inbox / "latest.png", seed=2)
        originals[sha(second)] = "latest.png"
        offer(pipeline, second, kind="moved")
        claimed = threading.Event()
        for _ in range(int(WAIT_S / 0.02)):
            if not second.exists():
                claimed.set()
                break
            claimed.wait(0.02)
        assert claimed.is_set(), "latest.png stayed in the inbox while a.png was scored"
        assert stepping.is_alive(), "a.png's verdict came first: the claim did not overlap the score"
    finally:
        scorer.gate.set()
        stepping.join(WAIT_S)
    settle(pipeline)
    assert audit(folders, originals)["rows"] == 2


def test_a_burst_is_claimed_with_one_fsync_and_none_is_judged_before_it(tmp_path: Path) -> None:
    """120 captures landing at once used to cost 120 directory fsyncs before the first was judged
    (milliseconds each on a slow disk); the claims folder is synced once for the burst, and still
    before any score starts."""
    folders = make_folders(tmp_path)
    synced: list[Path] = []
    scored_after: list[int] = []

    class Watching(FakeScorer):
        def score(self, path: Path) -> Score:
            scored_after.append(len(synced))
            return super().score(path)

    pipeline = make_pipeline(folders, Watching(), fs=fs_with(fsync_dir=synced.append))
    burst = [write_image(folders.inbox / f"cam{i:02d}.png", seed=i) for i in range(12)]
    originals = {sha(p): p.name for p in burst}
    offer(pipeline, *burst, kind="moved")
    settle(pipeline)
    # one fsync for the twelve claims, before the first score (the later ones are the moves')
    assert scored_after[0] == 1 and synced[0] == pipeline.claims.folder
    assert audit(folders, originals)["rows"] == 12


def test_the_next_file_is_scored_while_the_verdict_before_it_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = make_folders(tmp_path)
    scorer = GatedScorer()
    pipeline = make_pipeline(folders, scorer)
    paths = [write_image(folders.inbox / f"{i}.png", seed=i) for i in range(2)]
    offer(pipeline, *paths)
    calls: list[str] = []
    second_started = threading.Event()
    real_score = scorer.score

    def score(path: Path) -> Score:
        calls.append(path.name)
        if len(calls) == 2:
            second_started.set()
        return real_score(path)

    scorer.score = score  # type: ignore[method-assign]
    real_record = pipeline.store.record
    overlapped: list[bool] = []

    def record(row: Inspection) -> Inspection:
        overlapped.append(second_started.wait(WAIT_S))
        return real_record(row)

    monkeypatch.setattr(pipeline.store, "record", record)
    scorer.gate.set()
    settle(pipeline)
    assert overlapped[0], "the second file was not being scored while the first verdict was recorded"
    assert [r.filename for r in rows(pipeline)] == ["0.png", "1.png"]  # still in arrival order


def test_a_model_swapped_during_a_score_does_not_rename_its_verdict(tmp_path: Path) -> None:
    folders = make_folders(tmp_path)
    old = GatedScorer("old-model")
    pipeline = make_pipeline(folders, old, threshold=0.0)  # everything rejected by the old boundary
    image = write_image(folders.inbox / "a.png", seed=3)
    offer(pipeline, image)
    stepping = threading.Thread(target=pipeline.step, name="test-step")
    stepping.start()
    try:
        assert old.started.wait(WAIT_S)
        pipeline.scorer = FakeScorer()  # what a reload does between two steps
        pipeline.threshold = 2.0
    finally:
        old.gate.set()
        stepping.join(WAIT_S)
    settle(pipeline)
    (row,) = rows(pipeline)
    assert (row.model_id, row.threshold, row.status) == ("old-model", 0.0, "rejected")


def test_a_clean_stop_gives_files_scored_ahead_back_to_the_inbox(tmp_path: Path) -> None:
    folders = make_folders(tmp_path)
    pipeline = make_pipeline(folders, FakeScorer(), ahead=Ahead(depth=2))
    paths = [write_image(folders.inbox / f"{i}.png", seed=i) for i in range(2)]
    second = paths[1].read_bytes()
    offer(pipeline, *paths)
    for _ in range(20):
        if pipeline.step(timeout=0.01).outcome in ("accepted", "rejected"):
            break
    assert len(pipeline.ahead) == 1  # 1.png was started alongside 0.png
    assert pipeline.release() == 1
    assert (folders.inbox / "1.png").read_bytes() == second
    assert sorted(p.name for p in folders.inbox.iterdir() if p.is_file()) == ["1.png"]
    assert [r.filename for r in rows(pipeline)] == ["0.png"]


def test_one_model_scores_from_several_threads_at_once_like_one_at_a_time(
    tiny_model: Path, tmp_path: Path
) -> None:
    """anomalib's compiled-model call reuses one infer request; the scorer lets one inference run
    at a time, so overlapping scores neither fail nor mix up their results."""
    model = Model(tiny_model, cache_dir=tmp_path / "cache")
    images = [write_image(tmp_path / f"{i}.png", seed=i, size=96) for i in range(6)]
    serial = [model.score(p).score for p in images]
    with ThreadPoolExecutor(3) as pool:
        parallel = [s.score for s in pool.map(model.score, images)]
    assert parallel == pytest.approx(serial, abs=1e-6)
