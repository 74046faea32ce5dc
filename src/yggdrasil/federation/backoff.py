"""Exponential backoff with jitter, for reconnecting to the broker and retrying publishes."""

from __future__ import annotations

import random


class Backoff:
    """Delays `initial`, `2 * initial`, ... up to `cap`, each drawn from [delay / 2, delay]
    ("equal jitter"): never zero, so a failing peer is not hammered, and spread out, so that
    many sidecars that lost the same broker do not come back in lockstep."""

    def __init__(self, initial: float, cap: float, *, rng: random.Random | None = None):
        if not 0 < initial <= cap:
            raise ValueError("backoff needs 0 < initial <= cap")
        self.initial = initial
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap, self.initial * 2 ** min(self.failures, 62))

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0
