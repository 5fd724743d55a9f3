"""Drift alarm: do the accepted parts still score like the good parts the model was calibrated on?

A rolling window of the line's latest accepted-part scores is compared with a reference sample by
the two-sample Kolmogorov-Smirnov test. The reference is the model card's held-out good-part
scores (``validation.normal_scores``, written by ``inspectd train``); a card without enough of them
(older exports, tiny sets) makes the first full window of accepted parts the reference, and the log
says so. The test runs every ``window // 10`` accepted parts once the window is full; the alarm is
on while its p-value is below ``alpha``. With unchanged inputs each check raises a false alarm with
probability ``alpha`` (default 0.001), so a line judging 10,000 parts a day at window 200 (50 checks)
sees one false alarm in about 20 days.

``action: hold`` latches: from the first alarm on, parts the model accepts are filed into
``review/`` instead of ``accepted/`` (their rows still say accepted, with that final_path) until an
operator clears it with ``systemctl reload inspectd`` (SIGHUP), which starts a fresh window.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

MIN_REFERENCE = 30


@dataclass(frozen=True)
class DriftState:
    alarm: bool
    statistic: float  # KS distance D in [0, 1]
    p_value: float
    holding: bool
    changed: bool  # the alarm went on or off with this check


class DriftMonitor:
    """Fed one accepted score at a time; says when the distribution has moved."""

    def __init__(
        self,
        reference: Sequence[float] | None,
        *,
        window: int = 200,
        alpha: float = 0.001,
        hold: bool = False,
    ) -> None:
        self.window = window
        self.alpha = alpha
        self.hold = hold
        self.reference: list[float] | None = (
            sorted(reference) if reference is not None and len(reference) >= MIN_REFERENCE else None
        )
        self.reference_source = "model card" if self.reference is not None else "first accepted parts"
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self._since_check = 0
        self.state = DriftState(False, 0.0, 1.0, False, False)

    @property
    def holding(self) -> bool:
        return self.state.holding

    def observe(self, score: float) -> DriftState | None:
        """Add an accepted part's score; the new state when a check ran, else None."""
        self._recent.append(score)
        if len(self._recent) < self.window:
            return None
        if self.reference is None:  # the first full window is the baseline
            self.reference = sorted(self._recent)
            self._recent.clear()
            return None
        self._since_check += 1
        if self._since_check < max(1, self.window // 10):
            return None
        self._since_check = 0
        return self._check()

    def _check(self) -> DriftState:
        from scipy.stats import ks_2samp

        assert self.reference is not None
        result = ks_2samp(list(self._recent), self.reference)
        alarm = bool(result.pvalue < self.alpha)
        holding = self.state.holding or (alarm and self.hold)
        self.state = DriftState(
            alarm, float(result.statistic), float(result.pvalue), holding, alarm != self.state.alarm
        )
        return self.state
