"""Score one image with anomalib's OpenVINOInferencer; the model is loaded once.

anomalib's inferencer compiles the model with a cache in ``./openvino_cache`` of the working
directory (unwritable under systemd's ProtectSystem=strict); ``_CachedInferencer`` keeps all of
anomalib's pre/post-processing and only moves that cache under inspectd's state folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from anomalib.deploy import OpenVINOInferencer
from numpy.typing import NDArray

from inspectd.card import ModelCard, read_card
from inspectd.errors import InferenceFailed, ModelError
from inspectd.export import locate_xml
from inspectd.imaging import DEFAULT_MAX_PIXELS, decode_rgb

# OpenVINO picks bf16 on CPUs that advertise it; without AMX that is ~1.9x slower than f32 here
# (465 vs 250 ms per image) and shifts scores in the 4th decimal away from training's evaluation.
CPU_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


class _CachedInferencer(OpenVINOInferencer):
    def __init__(self, path: Path, device: str, cache_dir: Path) -> None:
        self._cache_dir = cache_dir
        super().__init__(path=path, device=device, config=CPU_CONFIG if device == "CPU" else None)

    def load_model(self, path: Any) -> tuple[Any, Any, Any]:
        import openvino as ov

        xml = Path(path)
        core = ov.Core()
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(self._cache_dir)})
        compiled = core.compile_model(
            model=core.read_model(xml, xml.with_suffix(".bin")),
            device_name=self.device,
            config=self.config,
        )
        return compiled.input(0), compiled.output(0), compiled


@dataclass(frozen=True)
class Score:
    score: float
    inference_ms: float
    decode_ms: float


class Model:
    """The loaded export plus its card; ``score`` is the only thing the pipeline calls."""

    def __init__(
        self,
        model_path: Path,
        cache_dir: Path,
        device: str = "CPU",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.xml = locate_xml(model_path)
        self.card: ModelCard = read_card(self.xml)
        self.max_pixels = max_pixels
        try:
            self._inferencer = _CachedInferencer(self.xml, device, cache_dir)
        except Exception as exc:  # openvino raises plain RuntimeError with its own text
            raise ModelError(f"cannot load {self.xml} on device {device}: {exc}") from exc

    @property
    def model_id(self) -> str:
        return self.card.model_id

    def score(self, path: Path) -> Score:
        """Decode and score one file; UnreadableImage / InferenceFailed name the reason."""
        return self.predict(path)[0]

    def predict(self, path: Path) -> tuple[Score, NDArray[np.float32]]:
        """``score`` plus the anomaly map (HxW at the model's input size, normalised like the
        score, so 0.5 is the exported boundary); for reports that show *where* a part looks wrong."""
        t0 = time.perf_counter()
        image = decode_rgb(path, self.max_pixels)
        t1 = time.perf_counter()
        try:
            batch = self._inferencer.predict(image)
            value = float(np.asarray(batch.pred_score).reshape(-1)[0])
            heat = np.asarray(batch.anomaly_map, dtype=np.float32)
            heat = heat.reshape(heat.shape[-2:])
        except Exception as exc:
            raise InferenceFailed(f"inference failed: {exc}") from exc
        t2 = time.perf_counter()
        if not np.isfinite(value):
            raise InferenceFailed(f"model returned a non-finite score ({value})")
        return Score(score=value, inference_ms=(t2 - t1) * 1000, decode_ms=(t1 - t0) * 1000), heat
