"""Taps -> legs -> effective legs.

A leg starts with a tap on and ends with the matching tap off (same network, within the tap-off
window), or with nothing: on a route whose fare does not depend on where the rider gets off, the
tap on alone is the whole leg.  Consecutive legs that match a fare_leg_join_rules.txt record are
one *effective fare leg* for rule matching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from fare.match import LegPrice
from fare.model import FareLegJoinRule

NO_SIG = -1  # "this dimension does not change the price here": used in cache keys


class Leg(NamedTuple):
    """One ride on one network, as far as the taps tell it."""

    on_tap: str
    on_ts: float  # POSIX seconds of the tap on
    route_id: str
    network: str | None
    from_stop: str
    from_sig: int  # interned set of areas of the boarding stop (NO_SIG when rules ignore it)
    from_tf: int  # interned set of timeframe groups at boarding (NO_SIG when rules ignore it)
    category: str | None
    media: str | None
    needs_tap_off: bool  # the fare depends on the destination
    off_tap: str | None = None
    off_ts: float | None = None
    to_stop: str | None = None
    to_sig: int = NO_SIG
    to_tf: int = NO_SIG
    price: LegPrice | None = None

    @property
    def arrival_ts(self) -> float:
        """Time of the arrival fare validation.

        A leg with no tap off has one validation only, at boarding: durations that start or
        end at its "arrival" use that one.
        """
        return self.off_ts if self.off_ts is not None else self.on_ts


class EffectiveLeg(NamedTuple):
    first: int  # index of its first leg in the journey
    last: int  # index of its last leg
    price: LegPrice | None


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
