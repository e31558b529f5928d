"""Each bus's cellular link, up and down, and what validators know of the deny list.

A link alternates between up and down periods drawn from the outage model (exponential
by default: a memoryless on/off process, starting in its stationary state).  While it is
down the validator journals its taps and hears nothing from the back office; when it comes
back the journal is sent and the deny-list changes published meanwhile arrive.

:class:`DenyView` answers "does this bus's validator know that this token is deny-listed
at time t?" exactly, from the time each entry was published and the bus's own outage
history: an entry reaches a bus ``latency`` after it is published, or after the outage it
was published in ends.

The outage statistics (:attr:`Links.outages`, :attr:`Links.down_seconds`) cover the service
period only: the links keep cycling while journals and queues drain after the last trip, but
what happens then is not the service the riders had.  An outage counts if it begins before
service ends (one in progress when service starts begins at its start), and its down time is
clipped to the service period.
"""

from __future__ import annotations

import bisect
import math
from array import array
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from sim.errors import ConfigError
from sim.randoms import Uniforms

OutageLaw = Literal["exp", "none"]


@dataclass(frozen=True, slots=True)
class LinkConfig:
    law: OutageLaw = "exp"
    mean_up: float = 2 * 3600.0  # s between outages
    mean_down: float = 300.0  # s an outage lasts
    latency: float = 0.3  # s for a message (tap upload, deny-list delta) over the link
    max_batch: int = 500  # taps per uplink message when a journal is flushed

    def __post_init__(self) -> None:
        if self.law not in ("exp", "none"):
            raise ConfigError(f"link.law must be 'exp' or 'none', not {self.law!r}")
        if self.mean_up <= 0 or self.mean_down <= 0:
            raise ConfigError("link.mean_up and link.mean_down must be positive")
        if self.latency < 0:
            raise ConfigError("link.latency must not be negative")
        if self.max_batch < 1:
            raise ConfigError("link.max_batch must be at least 1")

    @property
    def availability(self) -> float:
        if self.law == "none":
            return 1.0
        return self.mean_up / (self.mean_up + self.mean_down)


class Links:
    """Link state of every bus of a shard: current outage end and outage history.

    ``service`` is the period the statistics cover, ``(start, end)`` in simulated seconds
    (default: all of it)."""

    def __init__(self, cfg: LinkConfig, buses: int,
                 service: tuple[float, float] = (-math.inf, math.inf)) -> None:
        self.cfg = cfg
        self.service = service
        self.down_until: NDArray[np.float64] = np.zeros(buses)  # 0 while up
        self._until: list[float] = [0.0] * buses  # the same, for one bus at a time (faster)
        self._starts: list[array[float]] = [array("d") for _ in range(buses)]
        self._ends: list[array[float]] = [array("d") for _ in range(buses)]
        self.outages = 0  # outages overlapping the service period
        self.down_seconds = 0.0  # bus-seconds down within the service period

    def is_up(self, bus: int, now: float) -> bool:
        return self._until[bus] <= now

    def go_down(self, bus: int, now: float, until: float) -> None:
        self.down_until[bus] = self._until[bus] = until
        self._starts[bus].append(now)
        self._ends[bus].append(until)
        start, end = self.service
        clipped = min(until, end) - max(now, start)
        if clipped > 0.0:
            self.outages += 1
            self.down_seconds += clipped

    def come_up(self, bus: int) -> None:
        self.down_until[bus] = self._until[bus] = 0.0

    def delivered(self, bus: int, published: float) -> float:
        """When a message published at ``published`` reaches ``bus``."""
        starts = self._starts[bus]
        i = bisect.bisect_right(starts, published) - 1
        if i >= 0 and self._ends[bus][i] > published:
            return self._ends[bus][i] + self.cfg.latency
        return published + self.cfg.latency

    def propagation(self, published: float) -> NDArray[np.float64]:
        """Delay until each bus has a message published now (vectorised over the fleet)."""
        return self.cfg.latency + np.maximum(self.down_until - published, 0.0)

    def first_state(self, u: Uniforms) -> bool:
        """Up or down at the start, from the stationary probabilities."""
        return self.cfg.law == "none" or u.u() < self.cfg.availability

    def up_time(self, u: Uniforms) -> float:
        return math.inf if self.cfg.law == "none" else u.exponential(self.cfg.mean_up)

    def down_time(self, u: Uniforms) -> float:
        return u.exponential(self.cfg.mean_down)


class DenyView:
    """The deny list as published by the back office, with publication times."""

    def __init__(self, links: Links) -> None:
        self.links = links
        self.added: dict[str, float] = {}
        self.removed: dict[str, float] = {}

    def add(self, token: str, now: float) -> None:
        self.added[token] = now
        self.removed.pop(token, None)

    def remove(self, token: str, now: float) -> None:
        if token in self.added:
            self.removed[token] = now

    def refuses(self, bus: int, token: str, now: float) -> bool:
        """True when ``bus``'s validator has the entry for ``token`` and not its removal."""
        added = self.added.get(token)
        if added is None or self.links.delivered(bus, added) > now:
            return False
        removed = self.removed.get(token)
        return removed is None or self.links.delivered(bus, removed) > now
