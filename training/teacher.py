"""Where the EfficientAD teacher comes from: anomalib's pretrained weights, a file, or a seeded
random network for machines that cannot download anything.

Nothing here writes into anomalib's cache except anomalib's own download of the real weights: a
random teacher stored there would later be loaded as if it were the pretrained one.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import torch

from training.errors import TrainingError

AUTO = "auto"
RANDOM = "random"
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Teacher:
    """A resolved teacher choice; ``source`` is what the model card records."""

    source: str
    weights: Path | None  # None: seeded random initialisation
    seed: int = 0


def anomalib_weights_dir() -> Path:
    """anomalib's cache folder for the EfficientAD weights, computed without creating it."""
    return platformdirs.user_cache_path("anomalib") / "pre_trained" / "efficientad_pretrained_weights"


def cached_teacher_path(model_size: str) -> Path:
    return anomalib_weights_dir() / f"pretrained_teacher_{model_size}.pth"


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
        f"failed ({reason}); this machine looks offline. Either train with `--teacher random` "
        f"(works offline, seeded random teacher, noticeably lower accuracy), or take "
        f"{cached.name} from a machine with internet access (anomalib downloads it on the first "
        f"EfficientAD training into its user cache, on Linux "
        f"~/.cache/anomalib/pre_trained/efficientad_pretrained_weights/), copy it here and train "
        f"with `--teacher PATH` pointing at the copy; placing it at {cached} lets `--teacher auto` "
        f"find it."
    )


def resolve_teacher(
    choice: str,
    model_size: str,
    seed: int = 0,
    *,
    download: Callable[[], None] = download_pretrained,
) -> Teacher:
    """Turn ``--teacher auto|random|PATH`` into weights that exist, before any training starts."""
    if choice == RANDOM:
        return Teacher(f"random(seed={seed})", None, seed)
    if choice == AUTO:
        path = cached_teacher_path(model_size)
        if not path.is_file():
            try:
                download()
            except (OSError, RuntimeError, ValueError) as exc:  # URLError, timeouts, bad hash
                raise TrainingError(offline_message(model_size, exc)) from exc
            if not path.is_file():
                raise TrainingError(offline_message(model_size, f"{path} missing after download"))
        return Teacher("pretrained", path, seed)
    path = Path(choice).expanduser().resolve()
    if not path.is_file():
        raise TrainingError(
            f"--teacher {choice}: no such file; use `auto`, `random` or the path of a "
            f"pretrained_teacher_{model_size}.pth state dict"
        )
    return Teacher(f"path:{path}", path, seed)


def apply_teacher(network: torch.nn.Module, teacher: Teacher) -> None:
    """Put the chosen weights into the teacher network, or re-initialise it from the seed."""
    if teacher.weights is None:
        torch.manual_seed(teacher.seed)
        for module in network.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        return
    try:
        state = torch.load(teacher.weights, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, TypeError) as exc:
        raise TrainingError(
            f"cannot load the teacher weights {teacher.weights}: {exc}. The file must be the "
            f"state dict anomalib ships as pretrained_teacher_<size>.pth for the same model size"
        ) from exc
