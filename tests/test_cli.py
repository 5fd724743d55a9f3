"""The command line as a user meets it: help texts, exit codes, output formats."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import build_parser, main
from daemon.cli.results import parse_since
from daemon.config import load_config
from daemon.db.engine import make_engine
from daemon.db.migrate import head_revision
from daemon.db.models import Inspection
from daemon.db.store import Store


def all_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += all_commands(sub, (*prefix, name))
    return found


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = all_commands(build_parser())
    names = {c[0] for c in commands}
    assert {"run", "db", "results", "train", "evaluate", "demo"} <= names
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "usage: inspectd " + " ".join(command) in out
        assert len(out.splitlines()) > 3, f"{command} has no real help text"


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "inspectd" in out.stdout


def seed_rows(config_path: Path) -> None:
    config = load_config(config_path)
    engine = make_engine(config.database.url)
    assert main(["db", "upgrade", "--config", str(config_path)]) == 0
    store = Store(engine)
    now = dt.datetime.now(dt.timezone.utc)
    for i, status in enumerate(["accepted", "rejected", "quarantined"]):
        store.record(
            Inspection(
                filename=f"f{i}.png",
                source_path=f"/in/f{i}.png",
                final_path=f"/out/f{i}.png",
                status=status,
                score=None if status == "quarantined" else 0.1 * (i + 1),
                threshold=0.5,
                model_id="abc",
                error="not an image" if status == "quarantined" else None,
                received_at=now - dt.timedelta(days=2 - i),
                decided_at=now - dt.timedelta(days=2 - i),
            )
        )
    engine.dispose()


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "paths: {inbox: i, accepted: a, rejected: r, quarantine: q}\n"
        "database: {url: 'sqlite:///db/results.db'}\nmodel: {path: m}\n"
    )
    return cfg


def test_db_upgrade_from_empty_reaches_head(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--config", str(config_path)]) == 0
    assert f"revision {head_revision()} (was empty)" in capsys.readouterr().out
    assert (config_path.parent / "db" / "results.db").exists()
    assert main(["db", "upgrade", "--config", str(config_path)]) == 0
    assert f"(was {head_revision()})" in capsys.readouterr().out


def test_results_formats_and_filters(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed_rows(config_path)
    capsys.readouterr()
    assert main(["results", "--config", str(config_path), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["filename"] for r in data] == ["f2.png", "f1.png", "f0.png"]  # newest first
    assert data[0]["status"] == "quarantined" and data[0]["error"] == "not an image"

    assert main(["results", "--config", str(config_path), "--format", "csv", "--status", "rejected"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["filename"], float(r["score"])) for r in rows] == [("f1.png", pytest.approx(0.2))]

    assert main(["results", "--config", str(config_path), "--since", "36h"]) == 0
    table = capsys.readouterr().out
    assert "f2.png" in table and "f1.png" in table and "f0.png" not in table
    assert table.splitlines()[0].split()[:3] == ["id", "decided_at", "status"]

    assert main(["results", "--config", str(config_path), "--limit", "1", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_results_reads_only(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No database yet: a message, and no file created; a foreign database is not migrated."""
    db = config_path.parent / "db" / "results.db"
    assert main(["results", "--config", str(config_path)]) == 1
    assert "`inspectd run` creates it" in capsys.readouterr().err
    assert not db.exists()

    db.parent.mkdir()
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE other (x INTEGER)")
    assert main(["results", "--config", str(config_path)]) == 1
    assert "holds no inspectd results yet" in capsys.readouterr().err
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"other"}


def test_bad_since_is_explained(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "--config", str(config_path), "--since", "yesterday"]) == 1
    assert "--since 'yesterday'" in capsys.readouterr().err


def test_parse_since() -> None:
    now = dt.datetime(2026, 11, 26, 12, tzinfo=dt.timezone.utc)
    assert parse_since("90m", now) == now - dt.timedelta(minutes=90)
    assert parse_since("2026-11-25T10:00+00:00", now) == dt.datetime(2026, 11, 25, 10, tzinfo=dt.timezone.utc)
