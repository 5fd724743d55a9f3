"""The one retry mechanism: per key, how often it failed and when it may be tried again.

Files that cannot be judged yet (database locked, model busy), moves that failed (destination
unmounted, disk full) and the start-up recovery all back off on the same schedule, capped at
30 s, and nothing is ever dropped: a key is only forgotten once it succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
K = TypeVar("K", bound=Hashable)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based), capped at 30 s."""
    return RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]


@dataclass(frozen=True)
class Attempt:
    number: int  # 1 for the first failure
    delay_s: float


class Retries(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[K, int] = {}
        self._not_before: dict[K, float] = {}

    def failed(self, key: K) -> Attempt:
        """Count a failure and hold ``key`` back for the next step of the schedule."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = backoff(n)
        self._not_before[key] = self._clock() + delay
        return Attempt(n + 1, delay)

    def hold(self, key: K, seconds: float) -> None:
        """Hold ``key`` back without counting a failure (it is waiting for something else)."""
        self._not_before[key] = max(self._not_before.get(key, 0.0), self._clock() + seconds)

    def forget(self, key: K) -> None:
        """``key`` succeeded: its next failure starts the schedule again."""
        self._failures.pop(key, None)
        self._not_before.pop(key, None)

    def attempts(self, key: K) -> int:
        return self._failures.get(key, 0)

    def wait_s(self, key: K) -> float:
        """Seconds until ``key`` may be tried again; 0 when it may be tried now."""
        until = self._not_before.get(key)
        return 0.0 if until is None else max(0.0, until - self._clock())

    def due(self, key: K) -> bool:
        return self.wait_s(key) == 0.0

    def clear_waits(self) -> None:
        """Make every held key due now (an operator's 'retry now'; tests that skip the waits)."""
        self._not_before.clear()
