"""Scoring the held-out images through the exported model, the way the daemon will score them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.calibrate import Policy, choose_threshold, validation_figures
from training.scoring import score_images


def held_out_images(datamodule: Any) -> tuple[list[Path], list[Path]]:
    """(normal, abnormal) image paths anomalib held out of training (its validation split).

    Resolved, because training reads the normal images through links and the daemon, whose
    reader is used to score them, refuses to follow links.
    """
    samples = datamodule.val_data.samples
    normal: list[Path] = []
    abnormal: list[Path] = []
    for path, label in zip(samples.image_path, samples.label_index, strict=True):
        (abnormal if int(label) else normal).append(Path(path).resolve())
    return normal, abnormal


def calibrate_export(
    export: Path, normal: list[Path], abnormal: list[Path], policy: Policy
) -> tuple[float, dict[str, Any]]:
    """The threshold ``policy`` picks on the exported model's scores, and the figures behind it.

    Scoring through ``daemon.inference.Model`` (not the torch model) means the threshold is
    compared later with exactly the numbers it was chosen from, fp16 export included.
    """
    scores = score_images(export, [*normal, *abnormal])
    normal_scores, abnormal_scores = scores[: len(normal)], scores[len(normal) :]
    threshold = choose_threshold(policy, normal_scores, abnormal_scores)
    return threshold, validation_figures(policy, threshold, normal_scores, abnormal_scores)
