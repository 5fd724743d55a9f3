"""The exported score scale: anomalib's normalisation without its clip at 0 and 1."""

from __future__ import annotations

import pytest
import torch
from anomalib.post_processing import PostProcessor

from training.score_scale import UnclippedPostProcessor, anomalib_clipped, unclipped_normalize

NAN = torch.tensor(float("nan"))


def stats(low: float, high: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.tensor(low), torch.tensor(high), torch.tensor(threshold)


def test_clear_normals_no_longer_tie_at_zero() -> None:
    """Normal-only held-out images: threshold = their max, so anomalib clips the lower half to 0."""
    raw = torch.tensor([-50.0, 0.05, 0.2, 0.4, 0.5, 1.0, 3.0, 400.0])
    low, high, threshold = stats(0.0, 1.0, 1.0)
    clipped = PostProcessor._normalize(raw, low, high, threshold)
    assert clipped is not None and (clipped[:5] == 0).all()  # the ties this module removes

    scaled = unclipped_normalize(raw, low, high, threshold)
    assert scaled is not None
    assert (scaled > 0).all() and (scaled < 1).all()
    assert (scaled.diff() > 0).all()  # strictly increasing: the raw order survives
    assert scaled[5].item() == 0.5  # anomalib's threshold still reads 0.5


def test_same_slope_as_anomalib_at_the_threshold() -> None:
    low, high, threshold = stats(2.0, 6.0, 5.0)
    near = torch.tensor([4.99, 5.0, 5.01])
    ours = unclipped_normalize(near, low, high, threshold)
    theirs = PostProcessor._normalize(near, low, high, threshold)
    assert ours is not None and theirs is not None
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_degenerate_statistics_behave_like_anomalib() -> None:
    raw = torch.tensor([1.0, 2.0, 3.0])
    zero_range = stats(2.0, 2.0, 2.0)
    assert unclipped_normalize(raw, *zero_range).tolist() == [0.0, 0.5, 1.0]  # type: ignore[union-attr]
    missing = (NAN, NAN, NAN)  # never calibrated: raw scores pass through
    assert unclipped_normalize(raw, *missing).tolist() == raw.tolist()  # type: ignore[union-attr]
    assert unclipped_normalize(None, *missing) is None


def test_post_processor_uses_the_unclipped_scale() -> None:
    post = UnclippedPostProcessor()
    assert isinstance(post, PostProcessor)
    low, high, threshold = stats(0.0, 1.0, 1.0)
    assert post._normalize(torch.tensor([0.0]), low, high, threshold).item() > 0  # type: ignore[union-attr]


def test_anomalib_clipped_inverts_our_scale() -> None:
    raw = torch.tensor([-3.0, 0.2, 0.6, 0.9, 1.0, 1.3, 2.0], dtype=torch.float64)
    low, high, threshold = (torch.tensor(v, dtype=torch.float64) for v in (0.0, 1.0, 1.0))
    ours = unclipped_normalize(raw, low, high, threshold)
    theirs = PostProcessor._normalize(raw, low, high, threshold)
    assert ours is not None and theirs is not None
    back = [anomalib_clipped(s) for s in ours.tolist()]
    assert back == pytest.approx(theirs.tolist(), abs=1e-9)
