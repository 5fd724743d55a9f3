"""ELPV runs of two changes to how the student learns, neither of which shipped (RESULTS.md,
"Two ways to learn more per step").

    python benchmarks/student_variants.py --hard-quantile 0.99 -- --cell-type mono --seed 1 --out DIR
    python benchmarks/student_variants.py --ema-decay 0.995 -- --cell-type mono --seed 1 --out DIR

Everything after ``--`` goes to ``benchmarks/elpv.py`` (same split, same defaults otherwise).

``--hard-quantile Q``: EfficientAD's hard-feature loss averages the student's squared misses at
or above their Q-quantile (anomalib and the paper: 0.999, about 1,200 of 1.2 million per step).
A lower Q gives the gradient more of them, which might learn faster in the few steps a slow CPU
fits; 0 is the plain mean (every miss is at or above the smallest). The script sets
``StudentTeacherScoring.hard_quantile``, which the training reads.

``--ema-decay D``: keeps an exponential moving average of the student's weights (decay D per
step) and copies it into the student when training ends. Lightning calls ``on_train_end`` after
the validation that measures the map scale and the score quantiles, so those come from the last
weights, not the average; the threshold is calibrated afterwards on the export, which scores with
the average. The two weights differ little (D = 0.995: the last 200 or so steps).
"""

from __future__ import annotations

import argparse
from typing import Any

import elpv  # this folder: run as a script
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch import nn

import training.fit
from training.model import StudentTeacherScoring


class StudentEma(Callback):
    """An exponential moving average of the student's weights, copied into it at the end."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.average: list[torch.Tensor] | None = None
        self.updates = 0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        weights = [p.detach() for p in _student(pl_module).parameters()]
        with torch.no_grad():
            if self.average is None:
                self.average = [w.clone() for w in weights]
            else:
                torch._foreach_lerp_(self.average, weights, 1 - self.decay)
        self.updates += 1

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.average is None:
            return
        with torch.no_grad():
            for weight, average in zip(_student(pl_module).parameters(), self.average, strict=True):
                weight.copy_(average)
        print(f"ema: the student's weights are their average over {self.updates} steps", flush=True)


def _student(pl_module: LightningModule) -> nn.Module:
    model = pl_module.model
    if not isinstance(model, StudentTeacherScoring):
        raise TypeError("the EMA screen needs the student-teacher map (the default --anomaly-map)")
    return model.student


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hard-quantile", type=float, help="0 (plain mean) to below 1; anomalib: 0.999")
    parser.add_argument("--ema-decay", type=float, help="between 0 and 1, e.g. 0.995")
    parser.add_argument("elpv_args", nargs=argparse.REMAINDER, help="-- then benchmarks/elpv.py's arguments")
    args = parser.parse_args()
    if args.hard_quantile is not None:
        if not 0 <= args.hard_quantile < 1:
            parser.error("--hard-quantile must be at least 0 and below 1")
        StudentTeacherScoring.hard_quantile = args.hard_quantile
    if args.ema_decay is not None:
        if not 0 < args.ema_decay < 1:
            parser.error("--ema-decay must be between 0 and 1")
        engine = training.fit.Engine

        def engine_with_ema(**kwargs: Any) -> Any:
            kwargs["callbacks"] = [*kwargs["callbacks"], StudentEma(args.ema_decay)]
            return engine(**kwargs)

        training.fit.Engine = engine_with_ema  # type: ignore[assignment,misc]
    quantile = StudentTeacherScoring.hard_quantile
    print(f"hard-feature quantile {quantile}, student EMA decay {args.ema_decay}", flush=True)
    rest = args.elpv_args[1:] if args.elpv_args[:1] == ["--"] else args.elpv_args
    return elpv.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
