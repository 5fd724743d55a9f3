"""``inspectd stats``: judged, accepted, rejected, quarantined, reject rate and score and latency
percentiles per hour, shift or day and line; table, csv or json, and an optional plot."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from daemon.cli.results import parse_since
from daemon.config import load_config
from daemon.db.connect import reading
from daemon.db.stats import (
    FIELDS,
    Shift,
    Window,
    as_dicts,
    buckets,
    latest_threshold,
    read_rows,
    score_sample,
)
from inspectd.errors import InspectdError

TABLE_FIELDS = (
    "bucket",
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
)


def register_stats(commands: Any, config_help: str) -> None:
    stats = commands.add_parser(
        "stats",
        help="counts, reject rate and percentiles per hour, shift or day",
        description=(
            "Per time bucket (local time) and line: judged (accepted + rejected), accepted, "
            "rejected, quarantined, reject rate (rejected / judged), score p50/p95, latency "
            "p50/p95 (ms) and the model ids that judged. Only reads, on SQLite or PostgreSQL. "
            "Shifts come from config.yaml (shifts: [{name: early, start: '06:00'}, ...]); a shift "
            "runs until the next one starts, across midnight too."
        ),
        epilog="Example: inspectd stats --since 7d --by shift --line lineA --plot week.png",
    )
    stats.add_argument("--config", default="config.yaml", help=config_help)
    stats.add_argument("--since", help="from then: ISO time (2026-11-26T06:00) or a span back (12h, 7d)")
    stats.add_argument("--until", help="up to then (exclusive); same forms as --since; default now")
    stats.add_argument("--by", choices=("hour", "shift", "day"), default="hour", help="bucket (default hour)")
    stats.add_argument("--line", metavar="NAME", help="only this line (config.yaml lines: name)")
    stats.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    stats.add_argument(
        "--plot", metavar="FILE.png", help="also draw the reject rate over time and the score histogram"
    )
    stats.set_defaults(handler=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:

    config = load_config(args.config)
    window = Window(
        since=parse_since(args.since) if args.since else None,
        until=parse_since(args.until) if args.until else None,
        line=args.line,
    )
    if window.since and window.until and window.until <= window.since:
        raise InspectdError(f"--until {args.until} is not after --since {args.since}")
    with reading(config.database.url) as engine:
        rows = read_rows(engine, window)
    shifts = [Shift(s.name, s.start_minute) for s in config.shifts]
    found = as_dicts(buckets(rows, args.by, shifts))
    sys.stdout.write(render(found, args.format))
    if args.plot:
        plot(Path(args.plot), found, score_sample(rows), latest_threshold(rows), args.by)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def render(found: Sequence[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(list(found), indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(found)
        return out.getvalue()
    if not found:
        return "no inspections in this window\n"
    cells = [[_cell(name, row) for name in TABLE_FIELDS] for row in found]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(TABLE_FIELDS)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(TABLE_FIELDS, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip() for c in cells]
    return "\n".join(lines) + "\n"


def _cell(name: str, row: dict[str, Any]) -> str:
    value = row[name]
    if value is None:
        return "-"
    if name == "bucket":
        text = str(value)[:16].replace("T", " ")
        return f"{text} {row['shift']}" if row["shift"] else text
    if name == "reject_rate":
        return f"{100 * value:.1f}%"
    if name.startswith("score"):
        return f"{value:.4f}"
    if name.startswith("latency"):
        return f"{value:.0f}"
    return str(value)


def plot(
    out: Path,
    found: Sequence[dict[str, Any]],
    sample: dict[str, list[float]],
    threshold: float | None,
    by: str,
) -> None:
    """Reject rate per bucket and line over time; score histogram per verdict with the threshold."""
    import datetime as dt

    import matplotlib

    matplotlib.use("Agg")  # no display on a factory PC or in CI
    from matplotlib import dates as mdates
    from matplotlib import pyplot as plt

    figure, (rates, histogram) = plt.subplots(2, 1, figsize=(10, 7.5))
    for line in sorted({r["line"] for r in found}):
        mine = [r for r in found if r["line"] == line and r["reject_rate"] is not None]
        times = [dt.datetime.fromisoformat(r["bucket"]) for r in mine]
        rates.plot(times, [100 * r["reject_rate"] for r in mine], marker="o", label=line)
    rates.set_title(f"reject rate per {by}")
    rates.set_ylabel("rejected / judged (%)")
    rates.grid(alpha=0.3)
    if found:
        rates.legend(title="line")
    rates.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    rates.tick_params(axis="x", labelrotation=30)
    for status, colour in (("accepted", "tab:green"), ("rejected", "tab:red")):
        if sample.get(status):
            histogram.hist(sample[status], bins=50, alpha=0.6, color=colour, label=status)
    if threshold is not None:
        histogram.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    histogram.set_title("scores")
    histogram.set_xlabel("score")
    histogram.set_ylabel("parts")
    histogram.legend()
    figure.tight_layout()
    try:
        figure.savefig(out, dpi=100)
    except OSError as exc:
        raise InspectdError(f"--plot {out}: cannot write it ({exc.strerror or exc})") from exc
    finally:
        plt.close(figure)
