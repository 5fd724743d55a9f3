"""``inspectd stats``: inspections counted per time bucket and line, read-only, on any database.

Rows in the window are read with one indexed query (``decided_at``) and bucketed here, in local
time, so hours, days and shifts mean the same on SQLite and PostgreSQL and a shift may cross
midnight. A week of a busy line (one part a second) is ~600k small tuples: fine for a CLI.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine

from daemon.db.models import Inspection

By = Literal["hour", "shift", "day"]


@dataclass(frozen=True)
class Shift:
    name: str
    start_minute: int  # minutes after local midnight


@dataclass(frozen=True)
class Window:
    since: dt.datetime | None = None  # aware; None: from the first row
    until: dt.datetime | None = None  # aware, exclusive; None: up to now
    line: str | None = None


@dataclass(frozen=True)
class Row:
    """The columns stats need of one inspection."""

    decided_at: dt.datetime  # aware
    line: str
    status: str
    score: float | None
    latency_ms: float | None
    model_id: str | None
    threshold: float | None = None


@dataclass
class Bucket:
    """One line's inspections in one hour, shift or day."""

    start: dt.datetime  # local, aware
    line: str
    shift: str | None = None
    accepted: int = 0
    rejected: int = 0
    quarantined: int = 0
    scores: list[float] = field(default_factory=list, repr=False)
    latencies: list[float] = field(default_factory=list, repr=False)
    models: set[str] = field(default_factory=set, repr=False)

    @property
    def judged(self) -> int:
        """Parts the model gave a verdict on (quarantined files never reached it)."""
        return self.accepted + self.rejected

    def add(self, row: Row) -> None:
        if row.status == "accepted":
            self.accepted += 1
        elif row.status == "rejected":
            self.rejected += 1
        else:
            self.quarantined += 1
        if row.score is not None:
            self.scores.append(row.score)
        if row.latency_ms is not None:
            self.latencies.append(row.latency_ms)
        if row.model_id:
            self.models.add(row.model_id)

    def figures(self) -> dict[str, Any]:
        """The bucket as the table, csv and json outputs show it."""
        return {
            "bucket": self.start.isoformat(),
            "shift": self.shift,
            "line": self.line,
            "judged": self.judged,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "quarantined": self.quarantined,
            "reject_rate": round(self.rejected / self.judged, 6) if self.judged else None,
            "score_p50": _quantile(self.scores, 0.50),
            "score_p95": _quantile(self.scores, 0.95),
            "latency_ms_p50": _quantile(self.latencies, 0.50),
            "latency_ms_p95": _quantile(self.latencies, 0.95),
            "model_ids": ",".join(sorted(self.models)),
        }


FIELDS = (
    "bucket",
    "shift",
    "line",
    "judged",
    "accepted",
    "rejected",
    "quarantined",
    "reject_rate",
    "score_p50",
    "score_p95",
    "latency_ms_p50",
    "latency_ms_p95",
    "model_ids",
)


def _quantile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.quantile(values, q)), 6) if values else None


def read_rows(engine: Engine, window: Window) -> list[Row]:
    """The window's rows, oldest first: one indexed range query, nothing written."""
    query = select(
        Inspection.decided_at,
        Inspection.line,
        Inspection.status,
        Inspection.score,
        Inspection.latency_ms,
        Inspection.model_id,
        Inspection.threshold,
    ).order_by(Inspection.decided_at, Inspection.id)
    if window.since is not None:
        query = query.where(Inspection.decided_at >= window.since)
    if window.until is not None:
        query = query.where(Inspection.decided_at < window.until)
    if window.line is not None:
        query = query.where(Inspection.line == window.line)
    with engine.connect() as connection:
        return [Row(_aware(r[0]), *r[1:]) for r in connection.execute(query)]


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; inspectd stores UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def bucket_start(when: dt.datetime, by: By, shifts: Sequence[Shift]) -> tuple[dt.datetime, str | None]:
    """The local start of the hour, day or shift ``when`` falls in (and the shift's name)."""
    local = when.astimezone()
    if by == "hour":
        return local.replace(minute=0, second=0, microsecond=0), None
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if by == "day":
        return midnight, None
    minute = local.hour * 60 + local.minute
    ordered = sorted(shifts, key=lambda s: s.start_minute)
    started = [s for s in ordered if s.start_minute <= minute]
    if started:
        shift, day = started[-1], midnight
    else:  # before the first shift's start: the last shift of the day before is still running
        shift, day = ordered[-1], midnight - dt.timedelta(days=1)
    start = (day.replace(tzinfo=None) + dt.timedelta(minutes=shift.start_minute)).astimezone()
    return start, shift.name


def buckets(rows: Iterable[Row], by: By, shifts: Sequence[Shift]) -> list[Bucket]:
    """Rows grouped per (bucket, line), oldest bucket first, lines by name within one."""
    grouped: dict[tuple[dt.datetime, str], Bucket] = {}
    for row in rows:
        start, shift = bucket_start(row.decided_at, by, shifts)
        key = (start, row.line)
        if key not in grouped:
            grouped[key] = Bucket(start, row.line, shift)
        grouped[key].add(row)
    return [grouped[k] for k in sorted(grouped, key=lambda k: (k[0].timestamp(), k[1]))]


def score_sample(rows: Iterable[Row]) -> dict[str, list[float]]:
    """Scores per status (accepted, rejected) for the plot's histogram."""
    sample: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.score is not None:
            sample[row.status].append(row.score)
    return dict(sample)


def latest_threshold(rows: Sequence[Row]) -> float | None:
    """The threshold the newest judged row was held against (the plot's dashed line)."""
    return next((r.threshold for r in reversed(rows) if r.threshold is not None), None)


def as_dicts(found: Sequence[Bucket]) -> list[dict[str, Any]]:
    return [b.figures() for b in found]
