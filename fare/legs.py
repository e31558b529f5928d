"""Taps -> legs -> effective legs.

A leg starts with a tap on and ends with the matching tap off (same network, within the tap-off
window), or with nothing: on a route whose fare does not depend on where the rider gets off, the
tap on alone is the whole leg.  Consecutive legs that match a fare_leg_join_rules.txt record are
one *effective fare leg* for rule matching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from mypy_extensions import mypyc_attr

from fare.match import LegPrice
from fare.model import FareLegJoinRule
from fare.values import Value

NO_SIG: Final = -1  # "this dimension does not change the price here": used in cache keys


@mypyc_attr(acyclic=True)
class Leg(Value):
    """One ride on one network, as far as the taps tell it."""

    _fields = ("on_tap", "on_ts", "route_id", "network", "from_stop", "from_sig", "from_tf",
               "category", "media", "needs_tap_off", "off_tap", "off_ts", "to_stop", "to_sig",
               "to_tf", "price")
    __slots__ = _fields
    on_tap: Final[str]
    on_ts: Final[float]  # POSIX seconds of the tap on
    route_id: Final[str]
    network: Final[str | None]
    from_stop: Final[str]
    from_sig: Final[int]  # interned set of areas of the boarding stop (NO_SIG: rules ignore it)
    from_tf: Final[int]  # interned set of timeframe groups at boarding (NO_SIG: rules ignore it)
    category: Final[str | None]
    media: Final[str | None]
    needs_tap_off: Final[bool]  # the fare depends on the destination
    off_tap: Final[str | None]
    off_ts: Final[float | None]
    to_stop: Final[str | None]
    to_sig: Final[int]
    to_tf: Final[int]
    price: Final[LegPrice | None]

    def __init__(
        self, on_tap: str, on_ts: float, route_id: str, network: str | None, from_stop: str,
        from_sig: int, from_tf: int, category: str | None, media: str | None,
        needs_tap_off: bool, off_tap: str | None = None, off_ts: float | None = None,
        to_stop: str | None = None, to_sig: int = NO_SIG, to_tf: int = NO_SIG,
        price: LegPrice | None = None,
    ) -> None:
        self.on_tap = on_tap
        self.on_ts = on_ts
        self.route_id = route_id
        self.network = network
        self.from_stop = from_stop
        self.from_sig = from_sig
        self.from_tf = from_tf
        self.category = category
        self.media = media
        self.needs_tap_off = needs_tap_off
        self.off_tap = off_tap
        self.off_ts = off_ts
        self.to_stop = to_stop
        self.to_sig = to_sig
        self.to_tf = to_tf
        self.price = price

    def _values(self) -> tuple[object, ...]:
        return (self.on_tap, self.on_ts, self.route_id, self.network, self.from_stop,
                self.from_sig, self.from_tf, self.category, self.media, self.needs_tap_off,
                self.off_tap, self.off_ts, self.to_stop, self.to_sig, self.to_tf, self.price)

    def closed(self, off_tap: str, off_ts: float, to_stop: str, to_sig: int, to_tf: int,
               price: LegPrice | None) -> Leg:
        """This leg ended by a tap off, with the price that gives it."""
        return Leg(self.on_tap, self.on_ts, self.route_id, self.network, self.from_stop,
                   self.from_sig, self.from_tf, self.category, self.media, self.needs_tap_off,
                   off_tap, off_ts, to_stop, to_sig, to_tf, price)

    @property
    def arrival_ts(self) -> float:
        """Time of the arrival fare validation.

        A leg with no tap off has one validation only, at boarding: durations that start or
        end at its "arrival" use that one.
        """
        off = self.off_ts
        return off if off is not None else self.on_ts


@mypyc_attr(acyclic=True)
class EffectiveLeg(Value):
    """Legs ``first..last`` of a journey (joined, or one leg alone) and their price."""

    _fields = ("first", "last", "price")
    __slots__ = _fields
    first: Final[int]  # index of its first leg in the journey
    last: Final[int]  # index of its last leg
    price: Final[LegPrice | None]

    def __init__(self, first: int, last: int, price: LegPrice | None) -> None:
        self.first = first
        self.last = last
        self.price = price

    def _values(self) -> tuple[object, ...]:
        return (self.first, self.last, self.price)


def join_applies(
    rules: Sequence[FareLegJoinRule], station: Callable[[str], str], before: Leg, after: Leg
) -> bool:
    """fare_leg_join_rules: does the transfer ``before`` -> ``after`` merge the two legs?"""
    if before.to_stop is None:
        return False
    for rule in rules:
        if rule.from_network_id != before.network or rule.to_network_id != after.network:
            continue
        if rule.from_stop_id is not None and rule.to_stop_id is not None:
            # The rule may name a platform or its station.
            if rule.from_stop_id in (before.to_stop, station(before.to_stop)) and \
                    rule.to_stop_id in (after.from_stop, station(after.from_stop)):
                return True
        elif station(before.to_stop) == station(after.from_stop):
            # Without stops, the rider must change at the same station.
            return True
    return False
