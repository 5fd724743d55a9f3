"""Render inspection rows for people (table) and for scripts (csv, json)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Sequence
from typing import Any

from daemon.db.models import Inspection
from inspectd.errors import InspectdError

COLUMNS = (
    "id",
    "filename",
    "status",
    "score",
    "threshold",
    "model_id",
    "error",
    "source_path",
    "final_path",
    "sha256",
    "size_bytes",
    "received_at",
    "decided_at",
    "moved_at",
    "latency_ms",
    "inference_ms",
    "host",
    "line",
    "instance",
)
TABLE_COLUMNS = (
    "id",
    "decided_at",
    "status",
    "line",
    "score",
    "threshold",
    "latency_ms",
    "filename",
    "error",
)
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``2026-11-26``, ``2026-11-26T08:00``, or a span back from now: ``30m``, ``12h``, ``7d``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if m := _RELATIVE.match(text):
        return now - dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InspectdError(
            f"--since {text!r}: use an ISO time (2026-11-26 or 2026-11-26T08:00) "
            "or a span such as 30m, 12h, 7d"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # a bare time means local time on this PC
    return when.astimezone(dt.timezone.utc)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes; inspectd always stores UTC."""
    if value is None:
        return None
    return (
        value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    )


def row_dict(row: Inspection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in COLUMNS:
        value = getattr(row, name)
        if isinstance(value, dt.datetime):
            value = as_utc(value).isoformat()  # type: ignore[union-attr]
        out[name] = value
    return out


def render(rows: Sequence[Inspection], fmt: str) -> str:
    dicts = [row_dict(r) for r in rows]
    if fmt == "json":
        return json.dumps(dicts, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(dicts)
        return buf.getvalue()
    return _table(dicts)


def _cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name in ("score", "threshold"):
        return f"{value:.4f}"
    if name == "latency_ms":
        return f"{value:.0f}"
    if name == "decided_at":
        return str(value)[:19].replace("T", " ")
    text = str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no inspections match\n"
    cells = [[_cell(c, r[c]) for c in TABLE_COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(TABLE_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(TABLE_COLUMNS, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"
