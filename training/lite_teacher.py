"""EfficientAD teachers made of pretrained EfficientNet-Lite features.

``LiteFeatures`` is what EfficientAD's paper distils its teacher from, with EfficientNet-Lite in
place of WideResNet-101: the image at twice the model's input size, the stride-8 and stride-16
outputs (the latter upsampled), each position described by its 3x3 neighbourhood and pooled to
384 channels the way the paper's aggregator pools (PatchCore's adaptive average pooling over the
flattened patch, per layer to 1024, then to 384). All of that is linear after the backbone, so it
is folded into two fixed 3x3 convolutions computed once from the pooling itself: cheap, exact and
exportable. At 256 px the output is a 64x64 grid, one cell per 4 input pixels, like the PDN's.

``FrozenLiteTeacher`` uses those features directly as ``EfficientAdModel.teacher``: frozen,
always in eval mode (its batch norms must never see training batches) and cropped to the
student's output grid (a PDN without padding loses 4 cells on each side).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from training.lite import LiteWeights, lite_features, tf_scale

OUT_CHANNELS = 384  # EfficientAD's teacher width
LAYER_DIM = 1024  # the paper's per-layer pooling width
STAGES = (2, 3)  # timm feature indices of strides 8 and 16 (1: stride 4)
GRID_STRIDE = 8  # the output grid: stride 8 of the doubled input, i.e. one cell per 4 input pixels
PATCH = 3
PDN_BORDER = 4  # cells an unpadded PDN loses on each side against the padded 64x64 grid


def aggregator_weights(
    channels: tuple[int, ...], out_channels: int = OUT_CHANNELS, patch: int = PATCH
) -> list[torch.Tensor]:
    """One conv weight ``(out, C, patch, patch)`` per layer that equals unfold -> pool -> concat ->
    pool."""
    per_layer = [_pool_matrix(c * patch * patch, LAYER_DIM) for c in channels]  # (1024, C patch²) each
    final = _pool_matrix(LAYER_DIM * len(channels), out_channels)  # (out, 1024 * layers)
    weights = []
    for index, (c, pool) in enumerate(zip(channels, per_layer, strict=True)):
        block = final[:, index * LAYER_DIM : (index + 1) * LAYER_DIM] @ pool  # (out, C patch²)
        weights.append(block.reshape(out_channels, c, patch, patch).contiguous())
    return weights


def _pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``adaptive_avg_pool1d(x, n_out)`` as a matrix ``(n_out, n_in)``."""
    eye = torch.eye(n_in, dtype=torch.float64).unsqueeze(1)  # (n_in, 1, n_in): one basis vector per row
    return functional.adaptive_avg_pool1d(eye, n_out).squeeze(1).T.float()


def student_grid(size: int) -> int:
    """Output side of anomalib's PDN (small or medium) without padding for a square input."""
    side = (size - 3) // 2  # conv 4x4, avg-pool 2
    side = (side - 3) // 2  # conv 4x4, avg-pool 2
    return side - 2 - 3  # conv 3x3, conv 4x4


class LiteFeatures(nn.Module):
    """Pretrained EfficientNet-Lite features as a 384-channel map at 1/4 of the input size."""

    def __init__(self, weights: LiteWeights, stages: tuple[int, ...] = STAGES, patch: int = PATCH) -> None:
        super().__init__()
        self.stages = stages
        self.padding = patch // 2
        self.body = lite_features(weights, stages)
        channels = tuple(self.body.feature_info.channels())  # type: ignore[union-attr, operator]
        for index, weight in enumerate(aggregator_weights(channels, patch=patch)):
            self.register_buffer(f"project{index}", weight)
        self.train(False)

    def train(self, mode: bool = True) -> LiteFeatures:
        """Always eval: the backbone's batch norms keep their ImageNet statistics."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` or one ``(3, H, W)`` image (anomalib passes single images when it
        computes the map quantiles, as a PDN accepts them) in [0, 1]."""
        single = images.dim() == 3
        x = images.unsqueeze(0) if single else images
        x = functional.interpolate(tf_scale(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        grid = (-(-x.shape[-2] // GRID_STRIDE), -(-x.shape[-1] // GRID_STRIDE))  # TF "same": ceil
        out = None
        for index, features in enumerate(self.body(x)):
            z = functional.conv2d(features, getattr(self, f"project{index}"), padding=self.padding)
            if z.shape[-2:] != grid:
                z = functional.interpolate(z, size=grid, mode="bilinear", align_corners=False)
            out = z if out is None else out + z
        assert out is not None
        return out.squeeze(0) if single else out


class FrozenLiteTeacher(LiteFeatures):
    """``LiteFeatures`` on the student's grid: the teacher module of ``EfficientAdModel``."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = super().forward(images)
        side = student_grid(images.shape[-1])
        return features[..., PDN_BORDER : PDN_BORDER + side, PDN_BORDER : PDN_BORDER + side]
