"""The exported score scale: anomalib's normalisation, without its clipping.

anomalib maps a raw score ``x`` to ``(x - threshold) / (max - min) + 0.5`` and clips it to [0, 1],
where ``min``/``max``/``threshold`` come from held-out normal images. With normal-only held-out
images the threshold is their maximum, so every image scoring below the middle of the normal range
becomes exactly 0: on ELPV cells all test normals and two thirds of the defective cells tied at 0,
which no threshold can separate (AUROC 0.67 where the raw scores gave 0.78).

Here the same quantities feed ``sigmoid(asinh(4 z))`` with ``z = (x - threshold) / (max - min)``:
the same slope as anomalib's line at the threshold, 0.5 there, always inside (0, 1), and strictly
increasing, so images keep the order of their raw scores and the calibrated threshold can fall
anywhere. ``asinh`` makes the tails fall off like ``1 / (8 |z|)`` instead of exponentially, so
scores far from the threshold stay distinct in float32 and spread out in the report's histogram
(a plain logistic would squeeze every clear normal into the first bin).
"""

from __future__ import annotations

import math

import torch
from anomalib.post_processing import PostProcessor

# sigmoid(asinh(k*z)) has slope k/4 at z = 0; anomalib's linear map has slope 1 there
SLOPE_MATCH = 4.0


def unclipped_normalize(
    preds: torch.Tensor | None,
    norm_min: torch.Tensor,
    norm_max: torch.Tensor,
    threshold: torch.Tensor,
) -> torch.Tensor | None:
    """anomalib's ``PostProcessor._normalize`` with an unclipped curve in place of the clipped line."""
    if preds is None:
        return preds
    threshold = torch.where(torch.isnan(threshold), (norm_max + norm_min) / 2, threshold)
    value_range = norm_max - norm_min
    zero_range = value_range == 0
    safe_range = torch.where(zero_range, torch.ones_like(value_range), value_range)
    normalized = torch.sigmoid(torch.asinh(SLOPE_MATCH * (preds - threshold) / safe_range))
    degenerate = torch.where(preds > threshold, 1.0, torch.where(preds < threshold, 0.0, 0.5))
    normalized = torch.where(zero_range, degenerate, normalized)
    has_range = ~torch.isnan(norm_min) & ~torch.isnan(norm_max)
    return torch.where(has_range, normalized, preds)


class UnclippedPostProcessor(PostProcessor):
    """anomalib's post-processor (thresholds, statistics, export) with an unclipped score scale."""

    @staticmethod
    def _normalize(
        preds: torch.Tensor | None,
        norm_min: torch.Tensor,
        norm_max: torch.Tensor,
        threshold: torch.Tensor,
    ) -> torch.Tensor | None:
        return unclipped_normalize(preds, norm_min, norm_max, threshold)


def anomalib_clipped(score: float) -> float:
    """The score anomalib's own (clipped) normalisation gives the same image, from ours.

    Our curve is invertible: ``z = sinh(logit(score)) / 4``; anomalib's score is ``z + 0.5``
    clipped to [0, 1]. Benchmarks use it as a same-run baseline.
    """
    if score <= 0.0 or score >= 1.0:  # the degenerate zero-range case: already 0 / 1
        return min(max(score, 0.0), 1.0)
    z = math.sinh(math.log(score / (1.0 - score))) / SLOPE_MATCH
    return min(max(z + 0.5, 0.0), 1.0)
