"""Threshold policies on synthetic score sets whose right answer is known by hand."""

from __future__ import annotations

import pytest

from training.calibrate import (
    Policy,
    check_policy,
    choose_threshold,
    default_policy,
    f1_threshold,
    parse_policy,
    target_frr_threshold,
    validation_figures,
)
from training.errors import TrainingError

NORMAL = [0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90, 0.95]


def rejected(scores: list[float], threshold: float) -> int:
    return sum(s >= threshold for s in scores)


def test_parse_policy_accepts_the_three_forms() -> None:
    assert parse_policy("f1") == Policy("f1")
    assert parse_policy(" F1 ") == Policy("f1")
    assert parse_policy("target-frr=0.01") == Policy("target-frr", 0.01)
    assert parse_policy("target-frr=0") == Policy("target-frr", 0.0)
    assert parse_policy("normal-quantile=0.99") == Policy("normal-quantile", 0.99)
    assert str(parse_policy("target-frr=0.05")) == "target-frr=0.05"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("f2", "not understood"),
        ("f1=3", "not understood"),
        ("target-frr", "not understood"),
        ("target-frr=abc", "fraction X"),
        ("target-frr=1", "fraction X"),
        ("target-frr=-0.1", "fraction X"),
        ("normal-quantile=0", "quantile Q"),
        ("normal-quantile=1.5", "quantile Q"),
    ],
)
def test_parse_policy_refuses_with_an_example(text: str, match: str) -> None:
    with pytest.raises(TrainingError, match=match):
        parse_policy(text)


def test_default_and_f1_without_abnormal() -> None:
    assert default_policy(True) == Policy("f1")
    assert default_policy(False) == Policy("normal-quantile", 0.99)
    with pytest.raises(TrainingError, match="--abnormal"):
        check_policy(Policy("f1"), has_abnormal=False)
    check_policy(Policy("target-frr", 0.1), has_abnormal=False)


def test_f1_splits_separable_sets_halfway() -> None:
    assert f1_threshold([0.1, 0.2, 0.3], [0.7, 0.8]) == pytest.approx(0.5)


def test_f1_on_overlapping_sets_maximises_f1() -> None:
    # normal 0.1 0.2 0.6 | abnormal 0.5 0.7 0.8: cut at 0.45 -> tp 3, fp 1, F1 6/7;
    # cut at 0.65 -> tp 2, fp 0, fn 1, F1 4/5. 6/7 wins.
    threshold = f1_threshold([0.1, 0.2, 0.6], [0.5, 0.7, 0.8])
    assert threshold == pytest.approx(0.35)  # 0.35 and 0.45 tie on F1; the lower one is safer
    assert rejected([0.5, 0.7, 0.8], threshold) == 3


def test_target_frr_is_the_lowest_threshold_within_budget() -> None:
    assert rejected(NORMAL, target_frr_threshold(NORMAL, 0.0)) == 0
    assert target_frr_threshold(NORMAL, 0.0) == pytest.approx(0.95)
    t = target_frr_threshold(NORMAL, 0.2)  # 2 of 10 good parts may be rejected
    assert rejected(NORMAL, t) == 2
    assert t == pytest.approx(0.80) and t > 0.80  # any lower would reject the 0.80 part too
    assert rejected(NORMAL, target_frr_threshold(NORMAL, 0.25)) == 2  # floor(2.5)
    assert rejected(NORMAL, target_frr_threshold(NORMAL, 0.01)) == 0


def test_normal_quantile() -> None:
    assert choose_threshold(Policy("normal-quantile", 0.5), [0.1, 0.2, 0.3], []) == pytest.approx(0.2)
    assert choose_threshold(Policy("normal-quantile", 0.99), NORMAL, []) == pytest.approx(0.9455)


def test_choose_threshold_needs_normal_scores() -> None:
    with pytest.raises(TrainingError, match="held-out normal"):
        choose_threshold(Policy("target-frr", 0.1), [], [0.9])


def test_validation_figures() -> None:
    figures = validation_figures(Policy("f1"), 0.5, [0.1, 0.2, 0.6], [0.4, 0.7, 0.8])
    assert figures["policy"] == "f1"
    assert (figures["n_normal"], figures["n_abnormal"]) == (3, 3)
    assert figures["frr"] == pytest.approx(1 / 3)
    assert figures["far"] == pytest.approx(1 / 3)
    assert figures["auroc"] == pytest.approx(8 / 9)
    only_normal = validation_figures(Policy("normal-quantile", 0.99), 0.9, [0.1, 0.95], [])
    assert "auroc" not in only_normal and only_normal["frr"] == 0.5
