"""Running a network in eval mode for a while, then giving every module back its own mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluating(network: nn.Module) -> Iterator[nn.Module]:
    """``network`` in eval mode inside the block; afterwards each module is in the mode it had
    (a frozen teacher stays in eval while the student goes back to training)."""
    modes = {module: module.training for module in network.modules()}
    network.eval()
    try:
        yield network
    finally:
        for module, mode in modes.items():
            module.train(mode)
