"""``inspectd stats`` against real databases (SQLite and PostgreSQL, migrated by Alembic): the
figures match the rows, shifts cross midnight in local time, and the plot is a real PNG."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from daemon.cli import main
from daemon.config import load_config
from daemon.db.engine import make_engine
from daemon.db.models import Inspection
from daemon.db.store import Store

UTC = dt.timezone.utc
# (minutes after 2026-11-30 00:00 UTC, line, status, score, latency_ms)
ROWS = [
    (8 * 60 + 10, "lineA", "accepted", 0.10, 120.0),
    (8 * 60 + 20, "lineA", "rejected", 0.90, 140.0),
    (8 * 60 + 25, "lineA", "accepted", 0.20, 100.0),
    (8 * 60 + 30, "lineB", "quarantined", None, None),
    (8 * 60 + 40, "lineB", "rejected", 0.70, 300.0),
    (9 * 60 + 5, "lineA", "accepted", 0.15, 110.0),
    (23 * 60 + 30, "lineA", "rejected", 0.80, 130.0),  # the night shift, before midnight
    (24 * 60 + 120, "lineA", "accepted", 0.30, 125.0),  # ... and after it, 02:00 next day
]
DAY = dt.datetime(2026, 11, 30, tzinfo=UTC)


@pytest.fixture
def utc_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC here, so buckets can be written down (shifts are local time)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(params=["sqlite", "postgresql"])
def config_path(request: pytest.FixtureRequest, tmp_path: Path, utc_clock: None) -> Path:
    url = "sqlite:///db/results.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "paths: {inbox: i, accepted: a, rejected: r, quarantine: q}\n"
        f"database: {{url: '{url}'}}\nmodel: {{path: m}}\n"
        "shifts: [{name: early, start: '06:00'}, {name: late, start: '14:00'}, {name: night, start: 22:00}]\n"
    )
    assert main(["db", "upgrade", "--config", str(cfg)]) == 0
    engine = make_engine(load_config(cfg).database.url)
    store = Store(engine)
    for minute, line, status, score, latency in ROWS:
        when = DAY + dt.timedelta(minutes=minute)
        store.record(
            Inspection(
                filename=f"{line}-{minute}.png",
                source_path="/in/x.png",
                final_path="/out/x.png",
                status=status,
                score=score,
                threshold=0.5,
                model_id="m1" if minute < 9 * 60 else "m2",
                received_at=when,
                decided_at=when,
                latency_ms=latency,
                line=line,
            )
        )
    engine.dispose()
    return cfg


def stats(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(["stats", "--config", str(config), *args]) == 0
    return capsys.readouterr().out


def test_by_hour_json_matches_the_rows(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    found = json.loads(
        stats(config_path, capsys, "--by", "hour", "--format", "json", "--since", "2026-11-30")
    )
    keys = [(b["bucket"], b["line"]) for b in found]
    assert keys == [
        ("2026-11-30T08:00:00+00:00", "lineA"),
        ("2026-11-30T08:00:00+00:00", "lineB"),
        ("2026-11-30T09:00:00+00:00", "lineA"),
        ("2026-11-30T23:00:00+00:00", "lineA"),
        ("2026-12-01T02:00:00+00:00", "lineA"),
    ]
    a8, b8 = found[0], found[1]
    assert (a8["judged"], a8["accepted"], a8["rejected"], a8["quarantined"]) == (3, 2, 1, 0)
    assert a8["reject_rate"] == pytest.approx(1 / 3, abs=1e-6)
    assert a8["score_p50"] == pytest.approx(float(np.quantile([0.1, 0.9, 0.2], 0.5)))
    assert a8["score_p95"] == pytest.approx(float(np.quantile([0.1, 0.9, 0.2], 0.95)))
    assert a8["latency_ms_p95"] == pytest.approx(float(np.quantile([120.0, 140.0, 100.0], 0.95)))
    assert a8["model_ids"] == "m1" and found[2]["model_ids"] == "m2"
    # a quarantined file never reached the model: counted, but not in the judged parts' rate
    assert (b8["judged"], b8["rejected"], b8["quarantined"], b8["reject_rate"]) == (1, 1, 1, 1.0)
    # every row is in exactly one bucket
    assert sum(b["judged"] + b["quarantined"] for b in found) == len(ROWS)


def test_shifts_run_until_the_next_one_starts_across_midnight(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = json.loads(stats(config_path, capsys, "--by", "shift", "--format", "json", "--line", "lineA"))
    assert [(b["bucket"], b["shift"], b["judged"]) for b in found] == [
        ("2026-11-30T06:00:00+00:00", "early", 4),
        ("2026-11-30T22:00:00+00:00", "night", 2),  # 23:30 and 02:00 the next morning
    ]
    days = json.loads(stats(config_path, capsys, "--by", "day", "--format", "json", "--line", "lineA"))
    assert [(b["bucket"][:10], b["judged"]) for b in days] == [("2026-11-30", 5), ("2026-12-01", 1)]


def test_window_csv_table_and_plot(
    config_path: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = stats(
        config_path, capsys, "--since", "2026-11-30T09:00", "--until", "2026-11-30T23:59", "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["bucket"][11:16], r["judged"], r["rejected"]) for r in rows] == [
        ("09:00", "1", "0"),
        ("23:00", "1", "1"),
    ]
    table = stats(config_path, capsys, "--by", "day", "--plot", str(tmp_path / "week.png"))
    assert table.splitlines()[0].split()[:4] == ["bucket", "line", "judged", "accepted"]
    assert "40.0%" in table and "lineB" in table
    assert (tmp_path / "week.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats(config_path, capsys, "--since", "2027-01-01") == "no inspections in this window\n"


def test_until_before_since_is_refused(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--config", str(config_path), "--since", "1d", "--until", "2d"]) == 1
    assert "--until 2d is not after --since 1d" in capsys.readouterr().err
