"""Score one image with anomalib's OpenVINOInferencer; the model is loaded once.

anomalib's inferencer compiles the model with a cache in ``./openvino_cache`` of the working
directory (unwritable under systemd's ProtectSystem=strict); ``_CachedInferencer`` keeps all of
anomalib's pre/post-processing and only moves that cache under inspectd's state folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from anomalib.deploy import OpenVINOInferencer
from numpy.typing import NDArray

from inspectd.card import ModelCard, read_card
from inspectd.errors import InferenceFailed, ModelError
from inspectd.export import locate_xml
from inspectd.imaging import DEFAULT_MAX_PIXELS, decode_rgb
from inspectd.infer_slots import InferSlots

PRECISIONS = ("auto", "f32", "bf16")
TRIAL_RUNS = 3  # timed inferences per precision when ``auto`` has a choice to make


class _CachedInferencer(OpenVINOInferencer):
    def __init__(
        self, path: Path, device: str, cache_dir: Path, precision: str | None, hint: str | None = None
    ) -> None:
        self._cache_dir = cache_dir
        config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
        if hint:
            config["PERFORMANCE_HINT"] = hint
        super().__init__(path=path, device=device, config=config or None)

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
    # What the heatmap overlay is drawn from: the pixels the model saw (HxWx3 in [0, 1], at most
    # the input size for larger images) and the anomaly map (normalised like the score).
    pixels: NDArray[np.float32] | None = field(default=None, repr=False, compare=False)
    anomaly_map: NDArray[np.float32] | None = field(default=None, repr=False, compare=False)


def cpu_precisions() -> list[str]:
    """The inference precisions this CPU runs natively: f32, and bf16 where OpenVINO offers it."""
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ["f32", *(["bf16"] if "BF16" in capabilities else [])]


class Model:
    """The loaded export plus its card; ``score`` is the only thing the pipeline calls.

    ``precision`` (CPU only): ``auto`` times f32 against bf16 at load, where the CPU has bf16, and
    keeps the faster: bf16 was 1.9x slower than f32 on one AVX-512 CPU without AMX (465 vs 250 ms)
    and is faster with AMX, so no constant is right everywhere. ``precision_choice`` says what was
    measured. bf16 moves scores in the 4th decimal.

    ``score`` may be called from several threads at once (the daemon reads and decodes the next
    files while earlier ones are scored): decoding runs in parallel, and ``InferSlots`` gives each
    inference its own infer request. With ``backlog_streams`` (the daemon, on a CPU) the model is
    also compiled with OpenVINO's THROUGHPUT hint: an image scored alone still gets every core (the
    lowest latency), images that wait together run one per stream (``streams`` at once), and up to
    ``backlog_batch`` images share a stream's request when more wait than there are streams.
    One-at-a-time users (evaluate, calibration, quantize) compile once.
    """

    def __init__(
        self,
        model_path: Path,
        cache_dir: Path,
        device: str = "CPU",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        precision: str = "auto",
        *,
        backlog_streams: bool = False,
        backlog_batch: int = 1,
    ) -> None:
        self.xml = locate_xml(model_path)
        self.card: ModelCard = read_card(self.xml)
        self.max_pixels = max_pixels
        height, width = self.card.image_size
        self.input_size = (width, height)
        self.precision_choice: dict[str, float] = {}
        try:
            if device != "CPU":
                self.precision = "device default"
                self._inferencer = _CachedInferencer(self.xml, device, cache_dir, None)
            elif precision != "auto" or len(cpu_precisions()) == 1:
                self.precision = "f32" if precision == "auto" else precision
                self._inferencer = _CachedInferencer(self.xml, device, cache_dir, self.precision)
            else:
                self.precision, self._inferencer = self._fastest(device, cache_dir)
            throughput = None
            if backlog_streams and device == "CPU":
                throughput = _CachedInferencer(
                    self.xml, device, cache_dir, self.precision, "THROUGHPUT"
                ).model
            self._slots = InferSlots(self._inferencer.model, throughput, backlog_batch)
            self._inferencer.model = self._slots
        except Exception as exc:  # openvino raises plain RuntimeError with its own text
            raise ModelError(f"cannot load {self.xml} on device {device}: {exc}") from exc

    def _fastest(self, device: str, cache_dir: Path) -> tuple[str, _CachedInferencer]:
        """Compile with each precision, time a few inferences of a mid-grey frame, keep the faster."""
        width, height = self.input_size
        frame = np.full((height, width, 3), 0.5, dtype=np.float32)
        timed: list[tuple[float, str, _CachedInferencer]] = []
        for name in cpu_precisions():
            inferencer = _CachedInferencer(self.xml, device, cache_dir, name)
            inferencer.predict(frame)  # first run pays one-off costs
            started = time.perf_counter()
            for _ in range(TRIAL_RUNS):
                inferencer.predict(frame)
            ms = (time.perf_counter() - started) * 1000 / TRIAL_RUNS
            self.precision_choice[name] = round(ms, 1)
            timed.append((ms, name, inferencer))
        _, name, inferencer = min(timed, key=lambda t: t[0])
        return name, inferencer

    @property
    def streams(self) -> int:
        """How many requests this model infers on at once when images wait together (1: one at a
        time)."""
        return self._slots.streams

    @property
    def batch(self) -> int:
        """The most images one stream infers at once in a backlog (1: no batching)."""
        return self._slots.max_batch

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
        image = decode_rgb(path, self.max_pixels, shrink_to=self.input_size)
        t1 = time.perf_counter()
        try:
            with self._slots.slot():
                batch = self._inferencer.predict(image)
            value = float(np.asarray(batch.pred_score).reshape(-1)[0])
            heat = np.asarray(batch.anomaly_map, dtype=np.float32)
            heat = heat.reshape(heat.shape[-2:])
        except Exception as exc:
            raise InferenceFailed(f"inference failed: {exc}") from exc
        t2 = time.perf_counter()
        if not np.isfinite(value):
            raise InferenceFailed(f"model returned a non-finite score ({value})")
        timed = Score(value, (t2 - t1) * 1000, (t1 - t0) * 1000, pixels=image, anomaly_map=heat)
        return timed, heat
