"""The frozen teacher's outputs on the training images, computed once instead of every epoch.

The teacher never changes during a fit and EfficientAD trains on the same images again and again
(a default run sees each of a few hundred images a dozen times), so its forward pass, a quarter to
a third of a step, only has to run the first time an image comes round. Outputs are keyed by the
input's bytes: the same image gives exactly the output the teacher would compute again, so a fit
with the memo follows the same course as one without. Memory is bounded; past the bound the
teacher simply runs as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

DEFAULT_BUDGET_BYTES = 2 * 1024**3  # about 850 images at 256 px in bf16 (2.4 MB each), half that in f32


class TeacherMemo:
    """Teacher outputs by input content, up to ``budget_bytes``."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self._outputs: dict[tuple[bytes, torch.dtype | None], torch.Tensor] = {}

    def __call__(self, batch: torch.Tensor, teacher: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``teacher(batch)``, from memory when this exact batch was seen before.

        The key includes the autocast dtype in effect, so that a bf16 fit never gets an f32 output
        or the other way round.
        """
        key = (_digest(batch), _autocast_dtype(batch.device))
        cached = self._outputs.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        output = teacher(batch)
        size = output.element_size() * output.nelement()
        if self.used_bytes + size <= self.budget_bytes:
            # a compact copy: the frozen Lite teacher returns a crop of a larger map, and keeping
            # the view would keep the whole map (30 % more than counted at 256 px)
            self._outputs[key] = output.detach().clone()
            self.used_bytes += size
        return output

    @property
    def held_bytes(self) -> int:
        """The memory the kept outputs really hold (``used_bytes`` is what was counted)."""
        return sum(output.untyped_storage().nbytes() for output in self._outputs.values())

    def clear(self) -> None:
        self._outputs.clear()
        self.used_bytes = 0


def _digest(batch: torch.Tensor) -> bytes:
    data = batch.detach().to("cpu").contiguous()
    digest = hashlib.blake2b(f"{tuple(data.shape)}{data.dtype}".encode(), digest_size=16)
    digest.update(data.reshape(-1).view(torch.uint8).numpy().data)  # its own bytes, no copy; any dtype
    return digest.digest()


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    kind = device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
