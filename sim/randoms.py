"""Random draws for the hot path: numpy in bulk, handed out one at a time.

A numpy call costs about a microsecond whatever its size, so drawing one value per call
would dominate a stop event.  :class:`Uniforms` draws 64 Ki uniforms at a time from the
shard's seeded ``numpy.random.Generator`` and the few laws the model needs are built on
them (Poisson by multiplication for the small means of one stop interval, geometric by
inversion).  Same seed, same stream, same results.
"""

from __future__ import annotations

import math

import numpy as np

_BLOCK = 65_536


class Uniforms:
    __slots__ = ("_buf", "_i", "rng")

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._buf: list[float] = []
        self._i = 0

    def u(self) -> float:
        """One uniform in [0, 1)."""
        i = self._i
        if i >= len(self._buf):
            self._buf = self.rng.random(_BLOCK).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]

    def poisson(self, lam: float) -> int:
        """One Poisson(lam) draw (Knuth's product method below 30, numpy above)."""
        if lam <= 0.0:
            return 0
        if lam >= 30.0:
            return int(self.rng.poisson(lam))
        limit = math.exp(-lam)
        k = 0
        p = self.u()
        while p > limit:
            k += 1
            p *= self.u()
        return k

    def geometric(self, p: float) -> int:
        """Trials to the first success, >= 1 (mean 1/p)."""
        if p >= 1.0:
            return 1
        return 1 + int(math.log(1.0 - self.u()) / math.log(1.0 - p))

    def exponential(self, mean: float) -> float:
        return -mean * math.log(1.0 - self.u())

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return min(int(self.u() * n), n - 1)
