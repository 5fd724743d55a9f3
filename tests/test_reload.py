"""Live changes: SIGHUP and a model swapped in by rename while images flow, a broken model or config
refused, settings that need a restart named as such. A second, genuinely different model is the
tiny export with one weight tensor scaled (so its IR hash, the model_id, differs) and a fresh card."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from loguru import logger

from daemon.config import load_config
from daemon.run.service import Daemon
from inspectd.card import ModelCard, compute_model_id, write_card
from inspectd.export import card_path_for, locate_xml
from tests.conftest import make_config, write_image
from tests.daemon_process import DaemonProcess, wait_rows

pytestmark = pytest.mark.timeout(240)


def rewrite_card(export: Path, note: str) -> str:
    xml = locate_xml(export)
    card_file = card_path_for(xml)
    assert card_file is not None
    card = ModelCard.from_dict(json.loads(card_file.read_text()))
    card = dataclasses.replace(card, model_id=compute_model_id(xml), extra={**card.extra, "note": note})
    write_card(card_file.parent, card)
    return card.model_id


def variant(src: Path, dst: Path, factor: float = 1.05) -> str:
    """Copy an export and scale its largest f32 weight tensor; returns the new model_id."""
    shutil.copytree(src, dst)
    xml = locate_xml(dst)
    consts = re.findall(r'element_type="f32" shape="[^"]*" offset="(\d+)" size="(\d+)"', xml.read_text())
    offset, size = max(((int(o), int(s)) for o, s in consts), key=lambda c: c[1])
    weights = np.memmap(
        xml.with_suffix(".bin"), dtype=np.float32, mode="r+", offset=offset, shape=(size // 4,)
    )
    weights *= np.float32(factor)
    weights.flush()
    del weights
    return rewrite_card(dst, f"test variant x{factor}")


def broken(src: Path, dst: Path) -> None:
    """An export whose card is consistent but whose IR OpenVINO cannot read."""
    shutil.copytree(src, dst)
    locate_xml(dst).write_text("<net name='broken'><layers><layer id='0'")
    rewrite_card(dst, "broken on purpose")


@dataclasses.dataclass(frozen=True)
class Models:
    a: Path
    b: Path
    broken: Path
    a_id: str
    b_id: str


@pytest.fixture(scope="module")
def models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("variants")
    a = root / "a"
    shutil.copytree(tiny_model, a)
    b_id = variant(tiny_model, root / "b")
    broken(tiny_model, root / "broken")
    a_id = ModelCard.from_dict(json.loads((a / "model.json").read_text())).model_id
    assert a_id != b_id
    return Models(a, root / "b", root / "broken", a_id, b_id)


def swap_in(export: Path, live: Path) -> None:
    """How an operator replaces a model: the new folder is renamed over the name the config uses."""
    staged = live.with_name(f"{live.name}.next")
    shutil.copytree(export, staged)
    live.rename(live.with_name(f"{live.name}.old-{time.monotonic_ns()}"))
    staged.rename(live)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{level} {message}")
    yield lines
    logger.remove(handler)


def test_periodic_check_swaps_a_settled_export_and_refuses_a_broken_one(
    tmp_path: Path, models: Models, log_lines: list[str]
) -> None:
    live = tmp_path / "models" / "live"
    live.parent.mkdir()
    shutil.copytree(models.a, live)
    daemon = Daemon.start(load_config(make_config(tmp_path, live)))
    try:
        assert daemon.lines[0].model.model_id == models.a_id
        swap_in(models.b, live)
        daemon.lines[0].check_model()  # first sight of the new files: wait one period for them to settle
        assert daemon.lines[0].model.model_id == models.a_id
        daemon.lines[0].check_model()
        assert daemon.lines[0].model.model_id == models.b_id == daemon.lines[0].pipeline.scorer.model_id
        image = write_image(tmp_path / "probe.png", seed=3)
        assert np.isfinite(daemon.lines[0].pipeline.scorer.score(image).score)

        swap_in(models.broken, live)
        for _ in range(3):  # refused once, not retried while the files stay as they are
            daemon.lines[0].check_model()
        assert daemon.lines[0].model.model_id == models.b_id
        refused = [line for line in log_lines if "refused" in line]
        assert len(refused) == 1 and f"still judging with model {models.b_id}" in refused[0]
        errors = daemon.metrics.registry.get_sample_value(
            "inspectd_errors_total", {"line": "default", "kind": "reload_refused"}
        )
        assert errors == 1
        assert (
            daemon.metrics.registry.get_sample_value("inspectd_model_reloads_total", {"line": "default"}) == 1
        )
    finally:
        daemon.close()


def test_reload_applies_live_settings_and_names_the_rest(
    tmp_path: Path, models: Models, log_lines: list[str]
) -> None:
    config_file = make_config(tmp_path, models.a)
    daemon = Daemon.start(load_config(config_file))
    try:
        first_watcher = daemon.lines[0].watcher
        data = yaml.safe_load(config_file.read_text())
        data["model"]["threshold"] = 0.9
        data["paths"]["inbox"] = "another-inbox"
        data["watch"]["extensions"] = [".png"]
        data["watch"]["observer"] = "polling"  # decides whether closes can be waited for: restart
        data["limits"] = {"max_pixels": 4096}
        data["retention"] = {"rows_days": 30}
        data["log"] = {"level": "DEBUG"}
        config_file.write_text(yaml.safe_dump(data))
        daemon.reload()
        assert daemon.lines[0].pipeline.threshold == 0.9
        assert daemon.config.paths.inbox == tmp_path / "inbox"  # kept until a restart
        assert daemon.lines[0].watcher is not first_watcher
        assert [t.name for t in threading.enumerate()].count("inspectd-rescan") == 1  # the old one stopped
        assert daemon.config.watch.extensions == (".png",) and daemon.config.watch.observer == "auto"
        assert daemon.lines[0].model.max_pixels == 4096
        assert daemon.retention is not None and daemon.retention._thread is not None
        restart = next(line for line in log_lines if "needs restart" in line)
        assert "paths.inbox" in restart and "watch.observer" in restart
        applied = next(line for line in log_lines if "reload: applied" in line)
        assert "model.threshold" in applied and "watch.extensions" in applied and "paths.inbox" not in applied

        config_file.write_text("model: [this is not: valid")
        daemon.reload()
        assert any("reload refused" in line and "not valid YAML" in line for line in log_lines)
        assert daemon.lines[0].pipeline.threshold == 0.9 and daemon.lines[0].model.model_id == models.a_id

        data["model"]["path"] = str(models.broken)
        config_file.write_text(yaml.safe_dump(data))
        daemon.reload()  # a config pointing at a broken model is refused as a whole
        assert daemon.lines[0].model.model_id == models.a_id and daemon.config.model.path == models.a
    finally:
        daemon.close()


def test_backlog_streams_is_live_and_sets_how_many_files_are_judged_at_once(
    tmp_path: Path, models: Models
) -> None:
    """``model.backlog_streams`` recompiles the same export on reload: with it a backlog is judged
    a batch (``model.backlog_batch``) per THROUGHPUT stream, plus one being read; without it one at
    a time."""
    config_file = make_config(tmp_path, models.a, model__backlog_batch=2)
    daemon = Daemon.start(load_config(config_file))
    try:
        line = daemon.lines[0]
        streams, batch = line.model.streams, line.model.batch
        assert streams >= 1 and line.pipeline.ahead.depth == streams * batch + 1
        assert batch == (2 if streams > 1 else 1)  # no batches without streams
        data = yaml.safe_load(config_file.read_text())
        data["model"]["backlog_streams"] = False
        config_file.write_text(yaml.safe_dump(data))
        daemon.reload()
        assert line.model.streams == 1 and line.model.batch == 1 and line.pipeline.ahead.depth == 2
        assert line.model.model_id == models.a_id
    finally:
        daemon.close()


def feed(inbox: Path, names: list[str], stop: threading.Event, pause: float) -> None:
    for i, name in enumerate(names):
        if stop.wait(pause):
            return
        tmp = inbox / f".{name}"  # a hidden name first, like an upload tool, then the rename
        write_image(tmp, seed=200 + i)
        tmp.rename(inbox / name)


def test_sighup_model_swap_while_images_flow_loses_nothing(tmp_path: Path, models: Models) -> None:
    live = tmp_path / "models" / "live"
    live.parent.mkdir()
    shutil.copytree(models.a, live)
    config = make_config(tmp_path, live, watch__settle_ms=100, model__check_seconds=0)  # SIGHUP only
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    db = tmp_path / "inspectd.db"
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    names = [f"flow{i:02d}.png" for i in range(6)]
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(inbox, names, stop, 0.5), name="inspectd-test-feeder")
    feeder.start()
    try:
        wait_rows(db, 2, timeout=60)
        swap_in(models.b, live)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log(f"model {models.b_id}", timeout=60)
        wait_rows(db, 5, timeout=60)
        swap_in(models.broken, live)
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("refused", timeout=60)
        data = yaml.safe_load(config.read_text())
        data["model"]["threshold"] = 0.9
        data["paths"]["quarantine"] = "elsewhere"
        config.write_text(yaml.safe_dump(data))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("needs restart", timeout=60)
        feeder.join(30)
        late = ["late0.png", "late1.png"]
        feed(inbox, late, threading.Event(), 0.0)
        names += late
        assert wait_rows(db, len(names), timeout=90) == len(names)
    finally:
        stop.set()
        feeder.join(10)
        code = daemon.stop(signal.SIGTERM)
    assert code == 0
    log = (tmp_path / "daemon.log").read_text()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT filename, model_id, threshold FROM inspections ORDER BY id").fetchall()
    assert sorted(r[0] for r in rows) == sorted(names)  # every image judged exactly once
    assert list(inbox.iterdir()) == []
    ids = [r[1] for r in rows]
    switch = ids.index(models.b_id)
    assert switch >= 1 and set(ids[:switch]) == {models.a_id} and set(ids[switch:]) == {models.b_id}
    card_threshold = json.loads((models.a / "model.json").read_text())["threshold"]  # calibrated
    assert rows[0][2] == card_threshold and [r[2] for r in rows[-2:]] == [0.9, 0.9]  # config went live
    assert "paths.quarantine" in log and not (tmp_path / "elsewhere").exists()
