"""What follows a committed verdict besides the move: its log line, the heatmap overlay and the
drift check.

They are given to the pipeline (``Pipeline.followups``); none can fail a part or delay it: the
overlay is queued for the heatmap thread and the drift check is a few comparisons of floats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from loguru import logger

from daemon.db.models import Inspection
from daemon.judge.drift import DriftMonitor, DriftState
from daemon.judge.heatmaps import Overlay, overlay_name
from inspectd.scorer import Score


class HeatmapSink(Protocol):
    def submit(self, overlay: Overlay) -> bool: ...


def _ignore(_state: DriftState) -> None:
    return None


@dataclass
class Followups:
    heatmaps: HeatmapSink | None = None
    heatmap_dir: Path | None = None
    heatmap_statuses: tuple[str, ...] = ()
    drift: DriftMonitor | None = None
    on_drift: Callable[[DriftState], None] = field(default=_ignore)

    @property
    def holding(self) -> bool:
        """Accepted parts go to review/ while the drift hold is latched."""
        return self.drift is not None and self.drift.holding

    def after(self, row: Inspection, line: str, sub_path: Path, score: Score | None) -> None:
        log_verdict(row, line)
        if score is None:
            return
        if row.status == "accepted" and self.drift is not None:
            state = self.drift.observe(score.score)
            if state is not None:
                self.on_drift(state)
        if (
            row.status in self.heatmap_statuses
            and self.heatmaps is not None
            and self.heatmap_dir is not None
            and score.pixels is not None
            and score.anomaly_map is not None
        ):
            target = overlay_name(self.heatmap_dir, sub_path, row.id, row.filename)
            self.heatmaps.submit(Overlay.of(row.id, line, target, score.pixels, score.anomaly_map))


def log_verdict(row: Inspection, line: str) -> None:
    if row.status == "quarantined":
        logger.warning("line {}: #{} {} quarantined: {}", line, row.id, row.filename, row.error)
        return
    logger.info(
        "line {}: #{} {} {} score={:.4f} threshold={:.4f} latency={:.0f} ms",
        line,
        row.id,
        row.filename,
        row.status,
        row.score,
        row.threshold,
        row.latency_ms,
    )
