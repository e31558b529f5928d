"""Random numbers drawn from numpy in blocks: numpy per single value is slow, so a stream
draws 4096 at a time and hands them out one by one (same values, same order)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

Draw = Callable[[int], NDArray[np.float64]]
BLOCK = 4096


class BlockDraws:
    """One stream of draws from ``draw(n)``, read ``BLOCK`` values at a time."""

    __slots__ = ("_buf", "_draw", "_i")

    def __init__(self, draw: Draw) -> None:
        self._draw = draw
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._draw(BLOCK).tolist()
            self._i = 0
        v = self._buf[self._i]
        self._i += 1
        return v
