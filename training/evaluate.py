"""``evaluate()``: how an exported model separates a normal from an abnormal folder."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from daemon.model_card import locate_xml, read_card
from training.images import checked_images
from training.metrics import Evaluation, evaluate_scores

Scorer = Callable[[Path, Iterable[Path]], list[float]]


def evaluate(
    model: Path, normal_dir: Path, abnormal_dir: Path, *, scorer: Scorer | None = None
) -> Evaluation:
    """Score both folders and compare; the threshold is the model card's (0.5 without a card)."""
    xml = locate_xml(Path(model))
    threshold = read_card(xml).threshold
    normals = checked_images(Path(normal_dir), "normal")
    abnormals = checked_images(Path(abnormal_dir), "abnormal")
    if scorer is None:
        from training.scoring import score_images

        scorer = score_images
    return evaluate_scores(scorer(xml, normals), scorer(xml, abnormals), threshold)


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
