"""Image-level quality numbers from two score sets; pure functions, no model involved.

Convention: a higher score means more anomalous, abnormal is the positive class, and an image is
rejected when ``score >= threshold`` (anomalib's ``pred_label``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


@dataclass(frozen=True)
class Evaluation:
    """The keys of ``inspectd evaluate --json``, in that order."""

    auroc: float
    eer: float
    far: float
    frr: float
    threshold: float
    n_normal: int
    n_abnormal: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _labelled(normal: Sequence[float], abnormal: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if not normal or not abnormal:
        raise ValueError("both a normal and an abnormal score are needed")
    scores = np.concatenate([np.asarray(normal, float), np.asarray(abnormal, float)])
    labels = np.concatenate([np.zeros(len(normal)), np.ones(len(abnormal))])
    return labels, scores


def auroc(normal: Sequence[float], abnormal: Sequence[float]) -> float:
    """Probability that a random abnormal image scores above a random normal one (ties count half)."""
    labels, scores = _labelled(normal, abnormal)
    return float(roc_auc_score(labels, scores))


def eer(normal: Sequence[float], abnormal: Sequence[float]) -> float:
    """Equal error rate: where the ROC curve crosses FAR == FRR, interpolated between its corners.

    Along each ROC segment both rates move linearly, so the crossing is exact, not the nearest
    threshold's value.
    """
    labels, scores = _labelled(normal, abnormal)
    frr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)  # fpr: normals rejected
    far = 1.0 - tpr  # abnormals accepted
    gap = far - frr  # starts at 1 (reject nothing), ends at -1 (reject everything)
    i = int(np.argmax(gap <= 0))
    if gap[i] == 0 or i == 0:
        return float(frr[i])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(frr[i - 1] + t * (frr[i] - frr[i - 1]))


def rates_at(normal: Sequence[float], abnormal: Sequence[float], threshold: float) -> tuple[float, float]:
    """(FAR, FRR) at ``threshold``: abnormal images accepted, normal images rejected."""
    _labelled(normal, abnormal)
    far = float(np.mean(np.asarray(abnormal, float) < threshold))
    frr = float(np.mean(np.asarray(normal, float) >= threshold))
    return far, frr


def evaluate_scores(normal: Sequence[float], abnormal: Sequence[float], threshold: float) -> Evaluation:
    far, frr = rates_at(normal, abnormal, threshold)
    return Evaluation(
        auroc=auroc(normal, abnormal),
        eer=eer(normal, abnormal),
        far=far,
        frr=frr,
        threshold=threshold,
        n_normal=len(normal),
        n_abnormal=len(abnormal),
    )
