"""Anomaly-map overlays, drawn and written on their own thread so judging never waits for them.

The pipeline hands over what the model saw and its map once the row is committed; the writer
draws the map in colour over the image, writes ``<heatmaps>/<sub-folder>/<row id>-<name>.png``
under a hidden temporary name, syncs it and renames it into place (never a partial PNG), then
records its path in the row's ``heatmap_path``. A crash before that leaves at most an orphan
overlay and a row without one; the verdict and the capture are never at risk. When the queue is
full (the disk is slow, a burst), an overlay is skipped with a warning rather than delaying the line.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loguru import logger
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy.exc import SQLAlchemyError

from daemon.names import safe_name

QUEUE_SIZE = 32
ALPHA = 0.45  # how much of the colour map covers the image


@dataclass(frozen=True)
class Overlay:
    row_id: int
    line: str
    target: Path
    pixels: NDArray[np.float32]
    anomaly_map: NDArray[np.float32]


def overlay_name(folder: Path, sub_path: Path, row_id: int, filename: str) -> Path:
    stem = Path(safe_name(filename)).stem
    return folder.joinpath(*(safe_name(p) for p in sub_path.parts)) / f"{row_id}-{stem}.png"


def render(pixels: NDArray[np.float32], anomaly_map: NDArray[np.float32]) -> Image.Image:
    """The map (0.5 = the exported boundary) in colour over the image, at the image's size."""
    height, width = pixels.shape[:2]
    heat = Image.fromarray(np.clip(anomaly_map, 0.0, 1.0).astype(np.float32), mode="F")
    heat_arr = np.asarray(heat.resize((width, height), Image.Resampling.BILINEAR))
    colour = _colours(heat_arr)
    weight = ALPHA * np.clip(heat_arr * 2.0, 0.0, 1.0)[..., None]  # quiet where the part looks normal
    blended = (1 - weight) * pixels + weight * colour
    return Image.fromarray((np.clip(blended, 0.0, 1.0) * 255).round().astype(np.uint8), mode="RGB")


def _colours(values: NDArray[np.float32]) -> NDArray[np.float32]:
    """Blue (0) through yellow (0.5, the boundary) to red (1)."""
    r = np.clip(2 * values, 0, 1)
    g = 1 - np.abs(2 * values - 1)
    b = np.clip(1 - 2 * values, 0, 1)
    return np.stack([r, g, b], axis=-1).astype(np.float32)


def write_png(image: Image.Image, target: Path) -> None:
    """Write under a hidden temporary name, fsync, rename: readers never see a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("wb") as out:
        image.save(out, format="PNG", compress_level=1)  # 3x faster than zlib level 6, same size
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(target)


class HeatmapWriter:
    """A daemon thread that writes overlays and records them; ``submit`` never blocks."""

    def __init__(self, record: Callable[[int, Path], None]) -> None:
        self._record = record
        self._queue: queue.Queue[Overlay | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="inspectd-heatmaps", daemon=True)
        self.written = 0
        self.skipped = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, overlay: Overlay) -> bool:
        try:
            self._queue.put_nowait(overlay)
        except queue.Full:
            self.skipped += 1
            logger.warning(
                "line {}: heatmap for row {} skipped: {} overlays already waiting to be written",
                overlay.line,
                overlay.row_id,
                QUEUE_SIZE,
            )
            return False
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued (bounded by ``timeout``), then end the thread."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every overlay submitted so far is written (tests, bench)."""
        waiter = threading.Thread(target=self._queue.join, name="inspectd-heatmaps-drain", daemon=True)
        waiter.start()
        waiter.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._write(item)
            finally:
                self._queue.task_done()

    def _write(self, item: Overlay) -> None:
        try:
            write_png(render(item.pixels, item.anomaly_map), item.target)
            self._record(item.row_id, item.target)
            self.written += 1
        except (OSError, ValueError, SQLAlchemyError) as exc:  # costs the overlay, nothing else
            self.skipped += 1
            logger.warning("line {}: heatmap for row {} not written: {}", item.line, item.row_id, exc)
