"""The pipeline stepped by hand on real parts: real model, real migrated SQLite, temp folders."""

from __future__ import annotations

import queue
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.db.engine import make_engine
from daemon.db.migrate import upgrade
from daemon.db.models import Inspection
from daemon.db.store import Store
from daemon.intake.settle import Arrivals
from daemon.judge.destinations import Destinations
from daemon.judge.pipeline import Pipeline
from inspectd.scorer import Model
from tests.conftest import write_image


@pytest.fixture(scope="module")
def model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model(tiny_model, tmp_path_factory.mktemp("ovcache"))


def build(tmp_path: Path, model: Model, threshold: float) -> tuple[Pipeline, Path, Store]:
    inbox = tmp_path / "inbox"
    dests = Destinations(tmp_path / "accepted", tmp_path / "rejected", tmp_path / "quarantine")
    for d in (inbox, dests.accepted, dests.rejected, dests.quarantine):
        d.mkdir()
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    store = Store(engine)
    events: queue.SimpleQueue = queue.SimpleQueue()
    pipeline = Pipeline(events, Arrivals(0.0), model, store, dests, threshold, inbox)
    return pipeline, inbox, store


def drive(pipeline: Pipeline, paths: list[Path]) -> list:
    for p in paths:
        pipeline.events.put(("closed", p))
    results = []
    for _ in range(len(paths) * 3):
        r = pipeline.step(timeout=0.05)
        if r.outcome != "idle":
            results.append(r)
        if len(results) == len(paths):
            break
    return results


def rows(store: Store) -> list[Inspection]:
    with store.session() as s:
        return list(s.scalars(select(Inspection).order_by(Inspection.id)))


def test_threshold_sorts_images_and_each_gets_one_row(tmp_path: Path, model: Model) -> None:
    probe = write_image(tmp_path / "probe.png", seed=1)
    score = model.score(probe).score
    pipeline, inbox, store = build(tmp_path, model, threshold=score)  # score >= threshold: rejected
    a = write_image(inbox / "a.png", seed=1)
    results = drive(pipeline, [a])
    assert [r.outcome for r in results] == ["rejected"]
    assert (tmp_path / "rejected" / "a.png").exists() and not a.exists()

    pipeline.threshold = score + 1e-3
    b = write_image(inbox / "b.png", seed=1)
    assert [r.outcome for r in drive(pipeline, [b])] == ["accepted"]
    recorded = rows(store)
    assert [(r.filename, r.status) for r in recorded] == [("a.png", "rejected"), ("b.png", "accepted")]
    row = recorded[0]
    assert row.score == pytest.approx(score, abs=1e-4)
    assert row.model_id == model.model_id and row.sha256 and row.size_bytes == probe.stat().st_size
    assert row.moved_at is not None and row.final_path == str(tmp_path / "rejected" / "a.png")
    assert row.inference_ms and row.inference_ms > 0 and row.latency_ms is not None


def test_non_image_is_quarantined_with_its_reason(tmp_path: Path, model: Model) -> None:
    pipeline, inbox, store = build(tmp_path, model, threshold=0.5)
    bad = inbox / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    empty = inbox / "empty.png"
    empty.write_bytes(b"")
    results = drive(pipeline, [bad, empty])
    assert {r.outcome for r in results} == {"quarantined"}
    recorded = {r.filename: r for r in rows(store)}
    assert "not an image" in (recorded["broken.jpg"].error or "")
    assert recorded["empty.png"].error
    assert (tmp_path / "quarantine" / "broken.jpg").read_bytes() == b"this is not a jpeg"


def test_name_clash_gets_a_suffix_never_an_overwrite(tmp_path: Path, model: Model) -> None:
    pipeline, inbox, store = build(tmp_path, model, threshold=0.0)  # everything rejected
    (tmp_path / "rejected" / "cam.png").write_bytes(b"yesterday's image")
    first = write_image(inbox / "cam.png", seed=3)
    drive(pipeline, [first])
    second = write_image(inbox / "cam.png", seed=4)  # same name, new image
    drive(pipeline, [second])
    assert (tmp_path / "rejected" / "cam.png").read_bytes() == b"yesterday's image"
    assert sorted(p.name for p in (tmp_path / "rejected").iterdir()) == ["cam-1.png", "cam-2.png", "cam.png"]
    assert [r.final_path.rsplit("/", 1)[1] for r in rows(store)] == ["cam-1.png", "cam-2.png"]


def test_recover_finishes_a_move_interrupted_by_a_crash(tmp_path: Path, model: Model) -> None:
    pipeline, inbox, store = build(tmp_path, model, threshold=0.0)
    img = write_image(inbox / "x.png", seed=5)
    keep = tmp_path / "keep.png"
    shutil.copy(img, keep)
    drive(pipeline, [img])
    # Simulate a crash after the commit, before the move: file back in the inbox, moved_at unset.
    shutil.move(tmp_path / "rejected" / "x.png", img)
    with store.session() as s:
        s.get(Inspection, 1).moved_at = None  # type: ignore[union-attr]
    fresh = Pipeline(
        queue.SimpleQueue(), Arrivals(0.0), model, store, pipeline.destinations, 0.0, pipeline.inbox
    )
    assert fresh.recover() == 1
    assert not img.exists() and (tmp_path / "rejected" / "x.png").read_bytes() == keep.read_bytes()
    assert len(rows(store)) == 1 and rows(store)[0].moved_at is not None


def test_unwritable_destination_is_retried_and_nothing_is_lost(tmp_path: Path, model: Model) -> None:
    pipeline, inbox, store = build(tmp_path, model, threshold=0.0)
    shutil.rmtree(tmp_path / "rejected")
    (tmp_path / "rejected").write_text("not a folder")  # the move fails until the folder is back
    img = write_image(inbox / "y.png", seed=6)
    results = drive(pipeline, [img])
    (waiting,) = list(inbox.rglob("*y.png"))  # nothing lost: it waits, claimed
    assert results[0].outcome == "rejected" and waiting.exists()
    assert pipeline.backlog() == 1
    (tmp_path / "rejected").unlink()
    (tmp_path / "rejected").mkdir()
    for _ in range(100):
        pipeline.filer.retries.clear_waits()  # skip the back-off wait in the test
        if pipeline.step(timeout=0.01).outcome == "rejected":
            break
    assert (tmp_path / "rejected" / "y.png").exists() and not img.exists() and not waiting.exists()
    assert len(rows(store)) == 1 and rows(store)[0].moved_at is not None
