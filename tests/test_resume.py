"""--resume refuses a checkpoint written for another network with one line (torch's own error read)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.resume import mismatch

CKPT = Path("out/checkpoints/last.ckpt")


class _Net(torch.nn.Module):
    def __init__(self, channels: int, autoencoder: bool = False) -> None:
        super().__init__()
        self.student = torch.nn.Conv2d(3, channels, 1)
        if autoencoder:
            self.ae = torch.nn.Linear(2, 2)


def _load_error(saved: torch.nn.Module, ours: torch.nn.Module) -> RuntimeError:
    with pytest.raises(RuntimeError) as err:
        ours.load_state_dict(saved.state_dict())
    return err.value


def test_a_wider_student_is_named_with_both_shapes_on_one_line() -> None:
    error = mismatch(_load_error(_Net(768), _Net(384)), CKPT)  # the pre-384-channel student
    assert error is not None
    message = str(error)
    assert "\n" not in message and message.startswith(f"--resume: {CKPT} was written for another network")
    assert "student.weight is [768, 3, 1, 1] there and [384, 3, 1, 1] here" in message


def test_parts_this_network_lacks_are_named() -> None:
    error = mismatch(_load_error(_Net(384, autoencoder=True), _Net(384)), CKPT)
    assert error is not None and "it holds ae.weight, which this network has not" in str(error)


def test_parts_the_checkpoint_lacks_are_named() -> None:
    error = mismatch(_load_error(_Net(384), _Net(384, autoencoder=True)), CKPT)
    assert error is not None and "it lacks ae.weight" in str(error)


def test_other_errors_are_left_alone() -> None:
    assert mismatch(RuntimeError("out of memory"), CKPT) is None


def test_the_time_stop_line_offers_resume_only_with_a_checkpoint(tmp_path: Path) -> None:
    from training.cli import time_stop_line

    checkpoints = tmp_path / "checkpoints"
    assert "--resume" not in time_stop_line(700, checkpoints)
    assert "--checkpoint-every 0" in time_stop_line(700, checkpoints)
    checkpoints.mkdir()
    (checkpoints / "last.ckpt").write_bytes(b"x")
    assert f"--resume with the same options trains on from {checkpoints}" in time_stop_line(700, checkpoints)
