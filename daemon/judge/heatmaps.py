"""Anomaly-map overlays, drawn and written on their own thread so judging never waits for them.

The pipeline hands over what the model saw and its map once the row is committed; the writer
draws the map in colour over the image, writes ``<heatmaps>/<sub-folder>/<row id>-<name>.png``
under a hidden temporary name, syncs it and renames it into place (never a partial PNG), then
records its path in the row's ``heatmap_path``. A crash before that leaves at most an orphan
overlay and a row without one; the verdict and the capture are never at risk.

Overlays give way to verdicts. While the lines judge a backlog (``quiet`` is clear) a queued
overlay waits, at most ``MAX_DEFER_S`` and only while less than half of ``QUEUE_BYTES`` is
waiting: drawing and encoding one costs a few ms of CPU, which on a 2-core machine came out of
the inference's share when every part of a burst was a reject. Queued overlays keep the image
in 8 bits and the map in 256 levels (a quarter of the floats' memory), so the queue holds a
whole burst. When it is full (the disk is slow, a long run of rejects), an overlay is skipped
with a warning rather than delaying the line.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from loguru import logger
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy.exc import SQLAlchemyError

from daemon.names import safe_name

QUEUE_BYTES = 64 * 2**20  # what waiting overlays may hold: about 250 of 256x256
MAX_DEFER_S = 10.0  # the longest an overlay waits for the lines to pause
POLL_S = 0.25  # how often a waiting overlay looks at the clock, the queue and a stop
ALPHA = 0.45  # how much of the colour map covers the image
PNG_LEVEL = 1  # zlib level: 3x faster than the default 6 for the same size on these overlays


@dataclass(frozen=True)
class Overlay:
    row_id: int
    line: str
    target: Path
    pixels: NDArray[np.uint8]  # HxWx3, what the model saw
    levels: NDArray[np.uint8]  # the anomaly map clipped to [0, 1], in 256 levels

    @classmethod
    def of(
        cls,
        row_id: int,
        line: str,
        target: Path,
        pixels: NDArray[np.float32],
        anomaly_map: NDArray[np.float32],
    ) -> Overlay:
        """Compact copies of the model's float arrays (in [0, 1]), made on the judging thread."""
        return cls(row_id, line, target, to_bytes(pixels), to_bytes(anomaly_map))

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes + self.levels.nbytes


def to_bytes(values: NDArray[np.float32]) -> NDArray[np.uint8]:
    scaled = np.multiply(values, 255.0, dtype=np.float32)
    scaled += 0.5
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return scaled.astype(np.uint8)


def overlay_name(folder: Path, sub_path: Path, row_id: int, filename: str) -> Path:
    stem = Path(safe_name(filename)).stem
    return folder.joinpath(*(safe_name(p) for p in sub_path.parts)) / f"{row_id}-{stem}.png"


def _colours(values: NDArray[np.float32]) -> NDArray[np.float32]:
    """Blue (0) through yellow (0.5, the boundary) to red (1)."""
    r = np.clip(2 * values, 0, 1)
    g = 1 - np.abs(2 * values - 1)
    b = np.clip(1 - 2 * values, 0, 1)
    return np.stack([r, g, b], axis=-1).astype(np.float32)


_LEVELS = np.linspace(0.0, 1.0, 256, dtype=np.float32)
_COLOUR = 255.0 * _colours(_LEVELS)  # per map level, 0-255
_WEIGHT = (ALPHA * np.clip(_LEVELS * 2.0, 0.0, 1.0)).astype(np.float32)  # quiet where the part looks normal


def render(pixels: NDArray[np.uint8], levels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The map (level 128 = 0.5 = the exported boundary) in colour over the image, at the image's
    size: HxWx3 RGB."""
    height, width = pixels.shape[:2]
    if levels.shape != (height, width):
        resized = Image.fromarray(levels, mode="L").resize((width, height), Image.Resampling.BILINEAR)
        levels = np.asarray(resized)
    blended = pixels.astype(np.float32)
    blended += _WEIGHT[levels][..., None] * (_COLOUR[levels] - blended)
    blended += 0.5
    return blended.astype(np.uint8)


def encode_png(rgb: NDArray[np.uint8]) -> bytes:
    """OpenCV's libpng (anomalib already loads it): 2.9 against Pillow's 4.8 ms of CPU for a
    256x256 overlay at the same zlib level and size."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape[1]}x{rgb.shape[0]} overlay as PNG")
    return png.tobytes()


def write_png(png: bytes, target: Path) -> None:
    """Write under a hidden temporary name, fsync, rename: readers never see a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("wb") as out:
        out.write(png)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(target)


class HeatmapWriter:
    """A daemon thread that writes overlays and records them; ``submit`` never blocks.

    ``quiet`` is set by the service while every line is idle; without it overlays are written at
    once.
    """

    def __init__(
        self,
        record: Callable[[int, Path], None],
        quiet: threading.Event | None = None,
        *,
        budget_bytes: int = QUEUE_BYTES,
        max_defer_s: float = MAX_DEFER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._record = record
        self._quiet = quiet
        self._budget = budget_bytes
        self._max_defer_s = max_defer_s
        self._clock = clock
        # each overlay with the latest it may wait until; bounded by _budget, in bytes
        self._queue: queue.Queue[tuple[Overlay, float] | None] = queue.Queue()
        self._held = 0  # bytes queued, under _lock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inspectd-heatmaps", daemon=True)
        self.written = 0
        self.skipped = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, overlay: Overlay) -> bool:
        with self._lock:
            fits = self._held + overlay.nbytes <= self._budget
            if fits:
                self._held += overlay.nbytes
        if not fits:
            self.skipped += 1
            logger.warning(
                "line {}: heatmap for row {} skipped: {} MB of overlays already waiting to be written",
                overlay.line,
                overlay.row_id,
                self._budget // 2**20,
            )
            return False
        self._queue.put_nowait((overlay, self._clock() + self._max_defer_s))
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued at once (bounded by ``timeout``), then end the thread."""
        if not self._thread.is_alive():
            return
        self._stopping.set()
        self._queue.put_nowait(None)
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
                overlay, deadline = item
                self._wait_for_a_pause(deadline)
                self._write(overlay)
            finally:
                if item is not None:
                    with self._lock:
                        self._held -= item[0].nbytes
                self._queue.task_done()

    def _wait_for_a_pause(self, deadline: float) -> None:
        """Until the lines are idle, at most until ``deadline`` (``max_defer_s`` after the overlay
        was handed over), and only while less than half of the budget waits (then the queue is let
        to shrink)."""
        if self._quiet is None:
            return
        while not self._quiet.is_set() and not self._stopping.is_set():
            left = deadline - self._clock()
            with self._lock:
                filling = self._held > self._budget // 2
            if left <= 0 or filling:
                return
            self._quiet.wait(min(left, POLL_S))

    def _write(self, item: Overlay) -> None:
        try:
            write_png(encode_png(render(item.pixels, item.levels)), item.target)
            self._record(item.row_id, item.target)
            self.written += 1
        except (OSError, ValueError, cv2.error, SQLAlchemyError) as exc:  # costs the overlay, nothing else
            self.skipped += 1
            logger.warning("line {}: heatmap for row {} not written: {}", item.line, item.row_id, exc)
