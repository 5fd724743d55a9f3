"""Many lines in one daemon, and no capture lost to a reused name: a two-line config judges each
line with its own model and folders, a burst on one line does not starve the other, a name
rewritten every second while the daemon is busy gives one row per capture."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.cli import main
from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.run.service import Daemon
from inspectd.card import compute_model_id, read_card, write_card
from inspectd.export import XML_IN_EXPORT
from tests.conftest import daemon_running, make_config, rows_of, wait_until, write_image
from tests.daemon_process import DaemonProcess, row_count, wait_rows


@pytest.fixture(scope="module")
def second_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another export (the same network saved with fp16 weights): another model id, its own card."""
    import openvino as ov

    out = tmp_path_factory.mktemp("model-b")
    xml = out / XML_IN_EXPORT
    xml.parent.mkdir(parents=True)
    ov.save_model(ov.Core().read_model(tiny_model / XML_IN_EXPORT), xml, compress_to_fp16=True)
    card = read_card(tiny_model / XML_IN_EXPORT)
    write_card(out, dataclasses.replace(card, model_id=compute_model_id(xml)))
    return out


def two_lines(root: Path, model_a: Path, model_b: Path, **line_b: Any) -> Path:
    data = {
        "paths": {"state": "state"},
        "database": {"url": "sqlite:///inspectd.db"},
        "model": {"device": "CPU", "check_seconds": 0},
        "watch": {"settle_ms": 200, "rescan_seconds": 2},
        "lines": [
            {
                "name": "press",
                "paths": {
                    "inbox": "press/in",
                    "accepted": "press/ok",
                    "rejected": "press/ng",
                    "quarantine": "press/q",
                },
                "model": {"path": str(model_a)},
            },
            {
                "name": "paint",
                "paths": {
                    "inbox": "paint/in",
                    "accepted": "paint/ok",
                    "rejected": "paint/ng",
                    "quarantine": "paint/q",
                },
                "model": {"path": str(model_b), **line_b},
            },
        ],
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def running_two_lines(tmp_path: Path, tiny_model: Path, second_model: Path) -> Iterator[Daemon]:
    with daemon_running(load_config(two_lines(tmp_path, tiny_model, second_model, threshold=0.0))) as daemon:
        yield daemon


@pytest.mark.timeout(300)
def test_each_line_judges_with_its_own_model_folders_and_threshold(
    running_two_lines: Daemon,
    tmp_path: Path,
    tiny_model: Path,
    second_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon = running_two_lines
    for i in range(2):
        write_image(tmp_path / "press" / "in" / f"a{i}.png", seed=i)
        write_image(tmp_path / "paint" / "in" / f"b{i}.png", seed=i)
    assert wait_until(lambda: len(rows_of(daemon)) == 4 and daemon.backlog() == 0, 120)
    rows = rows_of(daemon)
    ids = {
        "press": read_card(tiny_model / XML_IN_EXPORT).model_id,
        "paint": read_card(second_model / XML_IN_EXPORT).model_id,
    }
    assert ids["press"] != ids["paint"]
    for row in rows:
        assert row.model_id == ids[row.line] and row.filename[0] == {"press": "a", "paint": "b"}[row.line]
        assert Path(row.final_path).is_relative_to(tmp_path / row.line)
    assert {r.status for r in rows if r.line == "paint"} == {"rejected"}  # its threshold 0.0
    assert {r.threshold for r in rows if r.line == "paint"} == {0.0}
    assert (
        main(["results", "--config", str(daemon.config.source), "--line", "paint", "--format", "json"]) == 0
    )
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["filename"] for r in listed) == ["b0.png", "b1.png"] and {r["line"] for r in listed} == {
        "paint"
    }
    status = daemon.status_line()
    assert "line press" in status and "line paint" in status


@pytest.mark.timeout(300)
def test_a_burst_on_one_line_does_not_starve_the_other(running_two_lines: Daemon, tmp_path: Path) -> None:
    daemon = running_two_lines
    for i in range(16):
        write_image(tmp_path / "press" / "in" / f"burst{i:02d}.png", seed=100 + i)
    assert wait_until(lambda: any(r.line == "press" for r in rows_of(daemon)), 60)
    write_image(tmp_path / "paint" / "in" / "single.png", seed=7)
    assert wait_until(lambda: any(r.line == "paint" for r in rows_of(daemon)), 60)
    done_press = sum(1 for r in rows_of(daemon) if r.line == "press")
    assert done_press < 16, "the other line's image waited for the whole burst"
    assert wait_until(lambda: len(rows_of(daemon)) == 17, 120)


def test_lines_config_is_checked(tmp_path: Path, tiny_model: Path, second_model: Path) -> None:
    path = two_lines(tmp_path, tiny_model, second_model)
    config = load_config(path)
    assert [line.name for line in config.lines] == ["press", "paint"]
    assert config.lines[1].paths.inbox == tmp_path / "paint" / "in"
    assert (
        config.lines[0].watch.settle_ms == 200 and config.lines[0].model.check_seconds == 0
    )  # shared defaults
    data = yaml.safe_load(path.read_text())
    data["lines"][1]["name"] = "press"
    data["lines"][1]["paths"]["inbox"] = "press/in"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "'press' is used twice" in str(error.value) and "lines.1.paths.inbox" in str(error.value)
    data["lines"][1]["model"] = {}
    data["lines"][1]["name"] = "paint"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"lines\.1\.model\.path: required key is missing"):
        load_config(path)


@pytest.mark.timeout(600)
def test_one_name_rewritten_every_second_while_busy_gives_one_row_per_capture(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The measured failure: 24 images queued, then ``burst.png`` replaced by rename every second,
    30 times. Before claim-on-arrival only the last capture was judged (1 row of 30)."""
    config = make_config(tmp_path, tiny_model, watch__settle_ms=1000)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    db = tmp_path / "inspectd.db"
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        for i in range(24):
            write_image(inbox / f"queued{i:02d}.png", seed=200 + i, size=256)
        captures = []
        for i in range(30):
            tmp = tmp_path / f"burst-{i}.png"
            write_image(tmp, seed=300 + i)
            captures.append(tmp.read_bytes())
            staged = inbox / f".burst.png.{i}.part"
            shutil.move(tmp, staged)
            staged.rename(inbox / "burst.png")  # the camera's temp-then-rename upload, same name
            time.sleep(1.0)
        assert wait_rows(db, 54, timeout=300) == 54
    finally:
        assert daemon.stop() == 0
    assert row_count(db) == 54
    judged = sorted((tmp_path / "accepted").glob("burst*")) + sorted((tmp_path / "rejected").glob("burst*"))
    assert len(judged) == 30
    assert sorted(p.read_bytes() for p in judged) == sorted(captures)  # every capture, each once
