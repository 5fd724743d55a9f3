"""``evaluate()``: how an exported model separates a normal from an abnormal folder."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from inspectd.card import ModelCard, read_card
from inspectd.export import locate_xml
from training.images import checked_images
from training.metrics import Evaluation, evaluate_scores

Scorer = Callable[[Path, Iterable[Path]], list[float]]


@dataclass(frozen=True)
class Scored:
    """Every image with its score, kept for the report (which shows the worst mistakes)."""

    xml: Path
    card: ModelCard
    normal: list[tuple[Path, float]]
    abnormal: list[tuple[Path, float]]

    def evaluation(self) -> Evaluation:
        return evaluate_scores(
            [s for _, s in self.normal], [s for _, s in self.abnormal], self.card.threshold
        )


def score_folders(
    model: Path, normal_dir: Path, abnormal_dir: Path, *, scorer: Scorer | None = None
) -> Scored:
    """Check both folders, then score them; the threshold is the model card's (0.5 without one)."""
    xml = locate_xml(Path(model))
    card = read_card(xml)
    normals = checked_images(Path(normal_dir), "normal")
    abnormals = checked_images(Path(abnormal_dir), "abnormal")
    if scorer is None:
        from training.scoring import score_images

        scorer = score_images
    scores = scorer(xml, [*normals, *abnormals])  # one model load for both folders
    return Scored(
        xml=xml,
        card=card,
        normal=list(zip(normals, scores[: len(normals)], strict=True)),
        abnormal=list(zip(abnormals, scores[len(normals) :], strict=True)),
    )


def evaluate(
    model: Path, normal_dir: Path, abnormal_dir: Path, *, scorer: Scorer | None = None
) -> Evaluation:
    """Score both folders and compare; the threshold is the model card's (0.5 without a card)."""
    return score_folders(model, normal_dir, abnormal_dir, scorer=scorer).evaluation()


def teacher_warning(card: ModelCard) -> str | None:
    """Why the figures may understate the method: only a pretrained teacher gives EfficientAD's
    published accuracy. ``None`` when the card names a pretrained teacher."""
    if card.teacher == "pretrained" or card.teacher.startswith(("path:", "frozen-")):
        return None  # anomalib's, the user's own file (a distilled one too), or a frozen Lite teacher
    if card.teacher.startswith("random"):
        return (
            f"this model was trained with a random teacher ({card.teacher}), not the pretrained "
            "one: expect clearly lower accuracy than `inspectd train --teacher auto` (or "
            "--teacher PATH) would give; retrain with the pretrained teacher before trusting "
            "these figures for production"
        )
    return (
        f"the model card does not name a pretrained teacher (teacher: {card.teacher}); if it was "
        "trained with a random teacher, expect clearly lower accuracy than with the pretrained one"
    )


def format_report(result: Evaluation, model: Path) -> str:
    """The human-readable summary printed by ``inspectd evaluate``."""
    accepted = round(result.far * result.n_abnormal)
    rejected = round(result.frr * result.n_normal)
    return "\n".join(
        [
            f"model      {model}",
            f"images     {result.n_normal} normal, {result.n_abnormal} abnormal",
            f"AUROC      {result.auroc:.3f}   (1.0 = every abnormal image scores above every normal one)",
            f"EER        {result.eer:.3f}   (error rate where the two kinds of mistake are equal)",
            f"threshold  {result.threshold:.3f}",
            f"  FAR      {result.far:.3f}   ({accepted}/{result.n_abnormal} abnormal images accepted)",
            f"  FRR      {result.frr:.3f}   ({rejected}/{result.n_normal} normal images rejected)",
        ]
    )
