"""Choosing the accept/reject threshold from held-out scores; pure functions, no model involved.

Same convention as ``training.metrics``: higher scores are more anomalous, abnormal is the
positive class, and an image is rejected when ``score >= threshold``. The scores are the
exported model's normalised ``pred_score``, exactly what the daemon compares with the card's
threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.errors import TrainingError
from training.metrics import auroc, rates_at

F1 = "f1"
TARGET_FRR = "target-frr"
NORMAL_QUANTILE = "normal-quantile"
DEFAULT_QUANTILE = 0.99
POLICY_HELP = "f1 | target-frr=X | normal-quantile=Q"


@dataclass(frozen=True)
class Policy:
    """A parsed ``--threshold-policy``; ``value`` is X for target-frr and Q for normal-quantile."""

    name: str
    value: float | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}={self.value:g}"


def parse_policy(text: str) -> Policy:
    """``f1``, ``target-frr=0.01`` or ``normal-quantile=0.99``; anything else is refused."""
    name, sep, raw = text.strip().partition("=")
    name = name.strip().lower()
    if name == F1 and not sep:
        return Policy(F1)
    if name in (TARGET_FRR, NORMAL_QUANTILE) and sep:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        low_ok = value >= 0.0 if name == TARGET_FRR else value > 0.0
        if low_ok and value < 1.0:
            return Policy(name, value)
        kind = "a fraction X with 0 <= X < 1" if name == TARGET_FRR else "a quantile Q with 0 < Q < 1"
        raise TrainingError(f"--threshold-policy {text}: {name} needs {kind}, e.g. {_example(name)}")
    raise TrainingError(
        f"--threshold-policy {text!r} is not understood; use one of f1 (needs --abnormal images), "
        "target-frr=X (reject at most the fraction X of good parts, e.g. target-frr=0.01) or "
        "normal-quantile=Q (e.g. normal-quantile=0.99)"
    )


def _example(name: str) -> str:
    return "target-frr=0.01" if name == TARGET_FRR else "normal-quantile=0.99"


def default_policy(has_abnormal: bool) -> Policy:
    """F1 when defective examples exist; otherwise a high quantile of the good parts' scores."""
    return Policy(F1) if has_abnormal else Policy(NORMAL_QUANTILE, DEFAULT_QUANTILE)


def check_policy(policy: Policy, has_abnormal: bool) -> None:
    """Refuse before training what cannot be computed after it."""
    if policy.name == F1 and not has_abnormal:
        raise TrainingError(
            "--threshold-policy f1 needs defective examples: pass --abnormal DIR, or choose "
            "target-frr=X or normal-quantile=Q, which use the good parts only"
        )


def choose_threshold(policy: Policy, normal: Sequence[float], abnormal: Sequence[float]) -> float:
    """The threshold ``policy`` picks for these held-out scores."""
    if not normal:
        raise TrainingError("no held-out normal images were scored; the threshold cannot be calibrated")
    if policy.name == F1:
        if not abnormal:
            raise TrainingError("the f1 threshold policy needs abnormal images")
        return f1_threshold(normal, abnormal)
    assert policy.value is not None
    if policy.name == TARGET_FRR:
        return target_frr_threshold(normal, policy.value)
    return float(np.quantile(np.asarray(normal, float), policy.value))


def f1_threshold(normal: Sequence[float], abnormal: Sequence[float]) -> float:
    """The cut with the best F1 (abnormal = positive), halfway between two neighbouring scores.

    Halfway leaves equal room on both sides for scores that move slightly on new parts; among
    equally good cuts the lowest wins, i.e. the one that accepts fewer defects.
    """
    values = np.unique(np.concatenate([np.asarray(normal, float), np.asarray(abnormal, float)]))
    cuts = np.concatenate([[values[0]], (values[:-1] + values[1:]) / 2, [np.nextafter(values[-1], np.inf)]])
    positives = np.asarray(abnormal, float)
    negatives = np.asarray(normal, float)
    best, best_f1 = float(cuts[0]), -1.0
    for cut in cuts:
        tp = int(np.sum(positives >= cut))
        fp = int(np.sum(negatives >= cut))
        fn = len(positives) - tp
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = float(cut), f1
    return best


def target_frr_threshold(normal: Sequence[float], max_frr: float) -> float:
    """The lowest threshold that rejects at most ``max_frr`` of the held-out good parts.

    The lowest such threshold is the safest: it rejects as many defects as the budget of false
    rejects allows. It sits just above the highest normal score that must still be accepted.
    """
    ordered = np.sort(np.asarray(normal, float))[::-1]
    allowed = math.floor(max_frr * len(ordered) + 1e-9)
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.inf))


def validation_figures(
    policy: Policy, threshold: float, normal: Sequence[float], abnormal: Sequence[float]
) -> dict[str, Any]:
    """What the model card records about the held-out set at the chosen threshold."""
    figures: dict[str, Any] = {
        "policy": str(policy),
        "threshold": threshold,
        "n_normal": len(normal),
        "n_abnormal": len(abnormal),
        "frr": float(np.mean(np.asarray(normal, float) >= threshold)) if normal else None,
        "normal_score_max": max(normal) if normal else None,
        # the reference the daemon's drift alarm compares accepted parts with
        "normal_scores": [round(float(x), 6) for x in sorted(normal)],
    }
    if normal and abnormal:
        far, _ = rates_at(normal, abnormal, threshold)
        figures.update(auroc=auroc(normal, abnormal), far=far, abnormal_score_min=min(abnormal))
    return figures
