"""Passenger demand by time of day, drawn in bulk with numpy (never a process per rider).

Riders arrive at a stop as a Poisson process whose rate follows the day: a base level plus a
morning and an evening peak (Gaussian bumps).  A bus arriving at a stop takes everyone who
came since the last bus of the same pattern (up to its free capacity; the rest wait for the
next), so the number of boardings is one Poisson draw of the rate's integral over that
interval, computed from a cumulative table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sim.errors import ConfigError

_STEP = 60.0  # seconds per cell of the cumulative table
_SPAN = 30 * 3600  # service days run past midnight (GTFS times up to 30:00)


@dataclass(frozen=True, slots=True)
class DemandProfile:
    """Arrival rate at one stop, riders per hour: ``peak_rate`` x shape(t).

    shape(t) = base + am * bump(t; am_hour, am_width) + pm * bump(t; pm_hour, pm_width),
    normalised so its maximum over the day is 1.
    """

    peak_rate: float = 12.0  # riders per hour per stop (one direction) at the busiest time
    base: float = 0.25
    am: float = 1.0
    am_hour: float = 8.0
    am_width: float = 1.0
    pm: float = 0.85
    pm_hour: float = 18.0
    pm_width: float = 1.3
    mean_ride_stops: float = 6.0  # mean stops travelled (geometric, cut at the terminal)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.peak_rate) and self.peak_rate >= 0):
            raise ConfigError("demand peak rate (--peak-rate) must be a finite number of "
                              f"riders per hour, not negative: got {self.peak_rate}")
        for name in ("base", "am", "pm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"demand.{name} must not be negative")
        if self.am_width <= 0 or self.pm_width <= 0:
            raise ConfigError("demand.am_width and demand.pm_width must be positive")
        if self.mean_ride_stops < 1:
            raise ConfigError("demand.mean_ride_stops must be at least 1")

    def shape(self, hours: NDArray[np.float64]) -> NDArray[np.float64]:
        h = np.asarray(hours, dtype=float)
        raw = (self.base
               + self.am * np.exp(-0.5 * ((h - self.am_hour) / self.am_width) ** 2)
               + self.pm * np.exp(-0.5 * ((h - self.pm_hour) / self.pm_width) ** 2))
        return raw

    def table(self) -> CumulativeDemand:
        edges = np.arange(0.0, _SPAN + _STEP, _STEP)
        mid = (edges[:-1] + _STEP / 2) / 3600.0
        shape = self.shape(mid)
        peak = float(shape.max()) if shape.size else 1.0
        per_second = self.peak_rate / 3600.0 * shape / (peak if peak > 0 else 1.0)
        cum = np.concatenate(([0.0], np.cumsum(per_second * _STEP)))
        return CumulativeDemand(cum, self.mean_ride_stops)


class CumulativeDemand:
    """Expected riders arriving at one stop between two times, by table look-up."""

    __slots__ = ("_cum", "_last", "mean_ride_stops", "ride_p")

    def __init__(self, cum: NDArray[np.float64], mean_ride_stops: float) -> None:
        # A list of Python floats: the same doubles, read several times faster than numpy
        # scalars (two look-ups per bus stop).
        self._cum: list[float] = cum.tolist()
        self._last = len(self._cum) - 2
        self.mean_ride_stops = mean_ride_stops
        self.ride_p = 1.0 / mean_ride_stops

    def at(self, t: float) -> float:
        x = min(max(t, 0.0), _SPAN) / _STEP
        i = min(int(x), self._last)
        frac = x - i
        c = self._cum
        return c[i] + (c[i + 1] - c[i]) * frac

    def expected(self, t0: float, t1: float) -> float:
        return self.at(t1) - self.at(t0) if t1 > t0 else 0.0


def destinations(rng: np.random.Generator, origin: int, n_stops: int, count: int,
                 ride_p: float) -> NDArray[np.int64]:
    """Alighting stop indexes for ``count`` riders boarding at ``origin`` (geometric length)."""
    if count == 0:
        return np.empty(0, dtype=np.int64)
    hops = rng.geometric(ride_p, size=count)
    return np.minimum(origin + hops, n_stops - 1)


def stop_weights(rng: np.random.Generator, n: int, spread: float = 0.5) -> NDArray[np.float64]:
    """Relative busyness of ``n`` stops (mean 1; gamma with coefficient of variation
    ``spread``), the terminal where nobody boards included (the caller zeroes it)."""
    if spread <= 0:
        return np.ones(n)
    shape = 1.0 / (spread * spread)
    return rng.gamma(shape, 1.0 / shape, size=n)


def expected_daily_riders(profile: DemandProfile, stops: int, start: float, end: float) -> float:
    """Expected arrivals at ``stops`` stops over [start, end) seconds (for sizing)."""
    return profile.table().expected(start, end) * stops


def poisson(rng: np.random.Generator, lam: float) -> int:
    return int(rng.poisson(lam)) if lam > 0 and math.isfinite(lam) else 0
