"""Score image files with the daemon's own scorer, so evaluation measures what the line will see.

``daemon.inference.Model`` decodes exactly like the daemon (same reader, same limits, f32
inference); its OpenVINO compile cache goes to a temporary folder, never ``./openvino_cache``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from inspectd.errors import InspectdError
from inspectd.scorer import Model
from training.errors import TrainingError
from training.images import readable


@contextmanager
def loaded_model(xml: Path) -> Iterator[Model]:
    """The export loaded once, with a compile cache that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="inspectd-eval-cache-") as cache:
        try:
            model = Model(xml, Path(cache))
        except InspectdError as exc:  # ModelError: unreadable IR, unknown device
            raise TrainingError(f"cannot load the exported model {xml}: {exc}") from exc
        yield model


def score_images(xml: Path, paths: Iterable[Path]) -> list[float]:
    """Anomaly score in [0, 1] per image, in order; 0.5 is the exported decision boundary."""
    with loaded_model(xml) as model:
        return [_predict(model, path)[0] for path in paths]


def anomaly_maps(xml: Path, paths: Iterable[Path]) -> list[NDArray[np.float32]]:
    """The normalised anomaly map of each image, in order (for the report's overlays)."""
    with loaded_model(xml) as model:
        return [_predict(model, path)[1] for path in paths]


def _predict(model: Model, path: Path) -> tuple[float, NDArray[np.float32]]:
    try:
        score, heat = model.predict(readable(path))
    except InspectdError as exc:  # UnreadableImage / InferenceFailed carry the reason
        raise TrainingError(f"cannot score {path}: {exc}") from exc
    return score.score, heat
