"""The model card: the small JSON that training writes beside an export and the daemon reads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from inspectd.errors import ModelError
from inspectd.export import CARD_NAME, card_path_for
from inspectd.hashing import sha256_files

DEFAULT_THRESHOLD = 0.5  # anomalib bakes a normalised 0.5 threshold into the export


@dataclass(frozen=True)
class ModelCard:
    model_id: str
    anomalib_version: str = "unknown"
    model: str = "EfficientAd"
    model_size: str = "small"
    image_size: tuple[int, int] = (256, 256)
    train_images: int = 0
    steps: int = 0
    teacher: str = "unknown"
    # kind (anomalib-pretrained, frozen-lite, distilled, random, file), package, version, sha256
    teacher_provenance: dict[str, Any] = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    threshold_policy: str = "exported-default"
    created_at: str = ""
    # How the threshold did on the held-out images: policy, n_normal, n_abnormal, frr, far, auroc.
    validation: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known}
        if "image_size" in values:
            values["image_size"] = tuple(values["image_size"])
        values["extra"] = {**values.get("extra", {}), **unknown}
        return cls(**values)


def compute_model_id(xml: Path) -> str:
    """Content hash of the IR (xml + bin): the same weights always get the same id."""
    return sha256_files([xml, xml.with_suffix(".bin")])[:16]


def read_card(xml: Path) -> ModelCard:
    """The card for ``xml``; an export without a card gets one derived from its content hash."""
    path = card_path_for(xml)
    model_id = compute_model_id(xml)
    if path is None:
        return ModelCard(model_id=model_id, teacher="unknown (no model.json)")
    try:
        card = ModelCard.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ModelError(f"{path} is not a valid model card: {exc}") from None
    if card.model_id != model_id:
        raise ModelError(
            f"{path} says model_id {card.model_id} but the IR beside it hashes to {model_id}: "
            "the export was changed after training; re-export or delete the stale model.json"
        )
    return card


def write_card(export_root: Path, card: ModelCard) -> Path:
    path = export_root / CARD_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(card.to_json(), encoding="utf-8")
    tmp.replace(path)
    return path
