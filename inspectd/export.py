"""The export folder that ``inspectd train`` writes and ``inspectd run`` loads, by name.

OUTPUT/weights/openvino/model.xml|bin   the OpenVINO IR (anomalib's export layout)
OUTPUT/model.json                       the model card (``inspectd.card``)
OUTPUT/train_hashes.txt                 sha256 of every image trained or calibrated on
OUTPUT/checkpoints/last.ckpt            kept while a fit can be resumed
"""

from __future__ import annotations

from pathlib import Path

from inspectd.errors import ModelError

CARD_NAME = "model.json"
XML_IN_EXPORT = Path("weights/openvino/model.xml")
HASHES_NAME = "train_hashes.txt"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


def locate_xml(model_path: Path) -> Path:
    """Accept an export folder (anomalib layout or a bare folder) or the model.xml itself."""
    if model_path.is_file():
        if model_path.suffix != ".xml":
            raise ModelError(f"model.path {model_path} is not an OpenVINO .xml file")
        xml = model_path
    else:
        for candidate in (model_path / XML_IN_EXPORT, model_path / "model.xml"):
            if candidate.is_file():
                xml = candidate
                break
        else:
            raise ModelError(
                f"no exported model at {model_path} (looked for {XML_IN_EXPORT} and model.xml): "
                "train one with `inspectd train --normal DIR --output "
                f"{model_path}` or point model.path at an export folder"
            )
    if not xml.with_suffix(".bin").is_file():
        raise ModelError(f"{xml} has no weights file {xml.with_suffix('.bin').name} beside it")
    return xml


def card_path_for(xml: Path) -> Path | None:
    """The model.json for an xml: in the export root (two folders up) or beside the xml."""
    for folder in (xml.parent, *xml.parents[:3]):
        candidate = folder / CARD_NAME
        if candidate.is_file():
            return candidate
    return None


def export_root(model: Path) -> list[Path]:
    """Folders that may hold the export's side files, given the folder or its model.xml."""
    model = Path(model)
    return [model] if model.is_dir() else list(model.parents[:3])
