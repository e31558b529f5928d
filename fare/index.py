"""Lookup tables built once per feed so that pricing a tap is a handful of dict hits.

Everything here is memoisation of pure functions of the feed: a leg's price depends only on
(network, boarding areas, alighting areas, timeframe groups at both ends, rider category, fare
media), and each of those that no rule of the network looks at is left out of the cache key
(``NO_SIG``), so a city of flat fares needs one entry per network, category and medium.
"""

from __future__ import annotations

from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

from fare.caps import Tally, TierTable, applies, tier_tables
from fare.clock import DAY, LocalClock, TimeframeIndex
from fare.legs import NO_SIG, EffectiveLeg, Leg, join_applies
from fare.match import LegMatcher, LegPrice, resolve_product
from fare.model import FareProduct, FareTransferRule, Feed, MaxFare
from fare.transfers import START, JourneyPrice, TransferIndex, Walk, walk_on

DEFAULT_TAP_OFF_WINDOW: Final = 3 * 3600

_BOARDINGS_LIMIT: Final = 1 << 18  # (route, stop, category, medium) kept; beyond, not memoised
_LegKey = tuple[str | None, int, int, int, int, str | None, str | None]


class NetInfo(NamedTuple):
    """What the leg rules that can match a network look at."""

    from_area: bool
    to_area: bool
    from_tf: bool
    to_tf: bool

    @property
    def needs_tap_off(self) -> bool:
        return self.to_area or self.to_tf


class CapPlan(NamedTuple):
    """The caps (indexes into feed.caps) and tier table (index or -1) of a category + medium."""

    caps: tuple[int, ...]
    tier: int
    simple: bool  # neither: nothing to count


class Boarding(NamedTuple):
    """What a tap at (route, stop) by a rider (category, medium) needs from the feed, resolved
    once: the engine prices a tap with one lookup of this instead of a handful."""

    network: str | None
    info: NetInfo
    stop_sig: int  # the stop's interned areas
    from_sig: int  # ... or NO_SIG when no rule of the network looks at the boarding area
    needs_off: bool  # the fare depends on the destination
    fixed: bool  # the leg's price depends on nothing else (not on the time): ``price`` is it
    price: LegPrice | None
    plan: CapPlan
    currency: str  # the network's (Feed.network_currency): what the tap's charges are in


class MaxFareInfo(NamedTuple):
    amount: int
    source: str  # for explanations: which max_fare row, or "highest fare from this stop"


class FareIndex:
    """The per-feed pricing index (see module docstring)."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.currency = feed.currency
        self.net_currency: dict[str | None, str] = feed.network_currency
        self.clock = LocalClock(feed.timezone)
        # Stops whose timeframes are read in another zone than the agency's (stop_timezone).
        self.stop_clocks: dict[str, LocalClock] = stop_clocks(feed)
        self.tf = TimeframeIndex(feed.timeframes, feed.services) if feed.timeframes else None
        self.matcher = LegMatcher(feed.leg_rules, feed.leg_rules_have_priority)
        self.transfers = TransferIndex(feed.transfer_rules)
        self.default_category = feed.default_rider_category
        self.route_network: dict[str, str | None] = {
            rid: r.network_id for rid, r in feed.routes.items()}
        self.nets: dict[str | None, NetInfo] = {}
        # route -> (network, what its leg rules look at): one lookup per tap
        self.routes: dict[str, tuple[str | None, NetInfo]] = {
            rid: (net, self.net(net)) for rid, net in self.route_network.items()}
        self.area_sets: list[frozenset[str]] = [frozenset()]
        ids: dict[frozenset[str], int] = {frozenset(): 0}
        self.stop_sig: dict[str, int] = {}
        for sid in feed.stops:
            areas = feed.stop_areas.get(sid, frozenset())
            if areas not in ids:
                ids[areas] = len(self.area_sets)
                self.area_sets.append(areas)
            self.stop_sig[sid] = ids[areas]
        self._station = {
            sid: (s.parent_station if s.parent_station is not None and s.location_type == 0
                  else sid)
            for sid, s in feed.stops.items()}
        self.join_pairs = {(r.from_network_id, r.to_network_id) for r in feed.join_rules}
        self.tiers: tuple[TierTable, ...] = tier_tables(feed.spend_tiers)
        self.n_caps = len(feed.caps)
        self.n_tiers = len(self.tiers)
        # A new card's tallies (fare.engine.CardFareState.caps / .tiers): nothing counted yet.
        self.initial_caps: tuple[Tally, ...] = ((),) * self.n_caps
        self.initial_tiers: tuple[tuple[int, int], ...] = ((-1, 0),) * self.n_tiers
        self.leg_cache: dict[_LegKey, LegPrice | None] = {}
        self.solo_walks: dict[int, Walk] = {}  # id(LegPrice) -> the walk of a one-leg journey
        self.boardings: dict[tuple[str, str, str | None, str | None], Boarding] = {}
        self._max: dict[tuple[object, ...], MaxFareInfo] = {}
        self._windows: dict[tuple[str | None, str | None, str | None], int] = {}
        self._costs: dict[tuple[str, str | None, str | None], FareProduct | None] = {}
        self.plans: dict[tuple[str | None, str | None, str], CapPlan] = {}
        self._transfer_cost = self.transfer_cost  # bound once, not for every walk

    def __reduce__(self) -> tuple[object, tuple[()]]:
        """Pickled, an index is dropped (a feed rebuilds it on first use): it is memoisation,
        and compiled (mypyc) it could not be rebuilt field by field."""
        return _no_index, ()

    # ---- stops, networks, time ----

    def station(self, stop_id: str) -> str:
        return self._station.get(stop_id, stop_id)

    def currency_of(self, network: str | None) -> str:
        """The currency a network's legs are charged in (a network no rule prices: the
        feed's first; its charges are all 0)."""
        return self.net_currency.get(network, self.currency)

    def net(self, network: str | None) -> NetInfo:
        info = self.nets.get(network)
        if info is None:
            info = NetInfo(*self.matcher.uses(network))
            self.nets[network] = info
        return info

    def tf_sig(self, ts: float, stop_id: str | None = None) -> int:
        """Interned set of timeframe groups in effect at POSIX time ``ts`` at a stop: "the event
        time is computed in local time ... as determined by the stop_timezone, if specified, of
        the stop or parent station for the fare event" (reference, timeframes.txt)."""
        if self.tf is None:
            return 0
        clock = self.clock
        if self.stop_clocks and stop_id is not None:
            clock = self.stop_clocks.get(stop_id, clock)
        local = clock.local(ts)
        day = int(local // DAY)
        return self.tf.signature(day, int(local - day * DAY))

    def boarding(self, route_id: str, stop_id: str, category: str | None,
                 media: str | None) -> Boarding:
        """The :class:`Boarding` of a known route and stop (memoised in ``boardings``)."""
        key = (route_id, stop_id, category, media)
        found = self.boardings.get(key)
        if found is not None:
            return found
        network, info = self.routes[route_id]
        stop_sig = self.stop_sig[stop_id]
        from_sig = stop_sig if info.from_area else NO_SIG
        needs_off = info.to_area or info.to_tf
        fixed = not needs_off and not info.from_tf
        price = None
        if fixed:
            price = self.leg_price(network, from_sig, NO_SIG, NO_SIG, NO_SIG, category, media)
        currency = self.currency_of(network)
        found = Boarding(network, info, stop_sig, from_sig, needs_off, fixed, price,
                         self.plan(category, media, currency), currency)
        if len(self.boardings) < _BOARDINGS_LIMIT:
            self.boardings[key] = found
        return found

    # ---- legs ----

    def leg_price(
        self, network: str | None, from_sig: int, to_sig: int, from_tf: int, to_tf: int,
        category: str | None, media: str | None,
    ) -> LegPrice | None:
        key = (network, from_sig, to_sig, from_tf, to_tf, category, media)
        try:
            return self.leg_cache[key]
        except KeyError:
            pass
        price = self._price_leg(network, from_sig, to_sig, from_tf, to_tf, category, media)
        self.leg_cache[key] = price
        return price

    def _price_leg(
        self, network: str | None, from_sig: int, to_sig: int, from_tf: int, to_tf: int,
        category: str | None, media: str | None,
    ) -> LegPrice | None:
        tf_sets = self.tf.sets if self.tf is not None else [frozenset()]
        rules = self.matcher.candidates(
            network,
            self.area_sets[from_sig] if from_sig != NO_SIG else frozenset(),
            self.area_sets[to_sig] if to_sig != NO_SIG else frozenset(),
            tf_sets[from_tf] if from_tf != NO_SIG else frozenset(),
            tf_sets[to_tf] if to_tf != NO_SIG else frozenset(),
        )
        best: LegPrice | None = None
        for rule in rules:
            product = resolve_product(self.feed.fare_products[rule.fare_product_id], category,
                                      media, self.default_category)
            if product is None:
                continue
            if best is None or product.amount < best.amount:
                best = LegPrice(product.amount, rule, product, rule.leg_group_id)
        return best

    def price_stops(
        self, network: str | None, from_stop: str, to_stop: str | None, on_ts: float,
        off_ts: float | None, category: str | None, media: str | None,
    ) -> LegPrice | None:
        """A leg's price from its stops and times (used for joined legs)."""
        info = self.net(network)
        return self.leg_price(
            network,
            self.stop_sig[from_stop] if info.from_area else NO_SIG,
            self.stop_sig[to_stop] if info.to_area and to_stop is not None else NO_SIG,
            self.tf_sig(on_ts, from_stop) if info.from_tf else NO_SIG,
            self.tf_sig(off_ts if off_ts is not None else on_ts,
                        to_stop if off_ts is not None else from_stop) if info.to_tf else NO_SIG,
            category, media)

    # ---- journeys ----

    def price_legs(self, legs: tuple[Leg, ...]) -> JourneyPrice:
        """The journey price of closed legs: join rules, then transfer rules."""
        walk = self.walks(legs, False)[1]
        return JourneyPrice(walk.total, walk.steps)

    def joins(self, before: Leg, after: Leg) -> bool:
        """fare_leg_join_rules: are ``before`` and the next leg ``after`` one effective leg?"""
        return bool(self.join_pairs) and join_applies(self.feed.join_rules, self.station,
                                                      before, after)

    def groups(self, legs: tuple[Leg, ...]) -> list[tuple[int, int]]:
        """(first, last) index of each run of joined legs, in order."""
        out: list[tuple[int, int]] = []
        i = 0
        n = len(legs)
        while i < n:
            j = i
            while j + 1 < n and self.joins(legs[j], legs[j + 1]):
                j += 1
            out.append((i, j))
            i = j + 1
        return out

    def effective_leg(self, legs: tuple[Leg, ...], first: int, last: int) -> EffectiveLeg:
        """Legs ``first..last`` (joined) as one effective leg, priced from end to end."""
        if first == last:
            return EffectiveLeg(first, last, legs[first].price)
        a, b = legs[first], legs[last]
        nets = {leg.network for leg in legs[first:last + 1]}
        network = nets.pop() if len(nets) == 1 else None
        price = self.price_stops(network, a.from_stop, b.to_stop, a.on_ts, b.off_ts, a.category,
                                 a.media)
        return EffectiveLeg(first, last, price)

    def effective(self, legs: tuple[Leg, ...]) -> list[EffectiveLeg]:
        return [self.effective_leg(legs, i, j) for i, j in self.groups(legs)]

    def walk_on(self, walk: Walk, legs: tuple[Leg, ...], eff: EffectiveLeg) -> Walk:
        """``walk`` continued over one more effective leg of ``legs`` (fare.transfers)."""
        return walk_on(walk, legs, eff, self.transfers, self._transfer_cost)

    def solo_walk(self, price: LegPrice) -> Walk:
        """The walk of a journey of one priced leg (memoised by the price object)."""
        found = self.solo_walks.get(id(price))
        if found is None:
            found = walk_on(START, (), EffectiveLeg(0, 0, price), self.transfers,
                            self.transfer_cost)
            self.solo_walks[id(price)] = found
        return found

    def walks(self, legs: tuple[Leg, ...], pending: bool) -> tuple[Walk, Walk]:
        """The walks over all effective legs of a journey but the last, and over all of them
        (while the last leg waits for its tap off, it is not priced: both are the first)."""
        groups = self.groups(legs)
        base = START
        for first, last in groups[:-1]:
            base = self.walk_on(base, legs, self.effective_leg(legs, first, last))
        if pending or not groups:
            return base, base
        first, last = groups[-1]
        return base, self.walk_on(base, legs, self.effective_leg(legs, first, last))

    def transfer_cost(self, rule: FareTransferRule, leg: Leg) -> FareProduct | None:
        """The row of a transfer rule's product for the rider of ``leg`` (None: not
        eligible); fare.transfers.walk_on reads its amount and currency."""
        assert rule.fare_product_id is not None
        key = (rule.fare_product_id, leg.category, leg.media)
        if key in self._costs:
            return self._costs[key]
        found = resolve_product(self.feed.fare_products[rule.fare_product_id], leg.category,
                                leg.media, self.default_category)
        self._costs[key] = found
        return found

    # ---- incomplete legs ----

    def _max_row(self, network: str | None, category: str | None,
                 media: str | None) -> MaxFare | None:
        cat = category if category is not None else self.default_category
        best: MaxFare | None = None
        best_rank = 99
        currency = self.currency_of(network)
        for row in self.feed.max_fares:
            if row.network_id is not None and row.network_id != network:
                continue
            if row.currency and row.currency != currency:
                continue  # a max_fare row of another currency's networks
            if not applies(row.rider_category_id, row.fare_media_id, cat, media):
                continue
            rank = (row.network_id is None) * 4 + (row.rider_category_id is None) * 2 + \
                (row.fare_media_id is None)
            if rank < best_rank:
                best, best_rank = row, rank
        return best

    def tap_off_window(self, network: str | None, category: str | None, media: str | None) -> int:
        key = (network, category, media)
        window = self._windows.get(key)
        if window is None:
            row = self._max_row(network, category, media)
            window = row.tap_off_window if row is not None else DEFAULT_TAP_OFF_WINDOW
            self._windows[key] = window
        return window

    def max_fare(self, network: str | None, from_sig: int, from_tf: int, to_tf: int,
                 category: str | None, media: str | None) -> MaxFareInfo:
        """What a tap on charges when the fare depends on a destination not yet known.

        A max_fare row of fare_caps.txt when one applies; otherwise the highest fare from this
        boarding stop (and time) to any area of the feed.
        """
        key = ("on", network, from_sig, from_tf, to_tf, category, media)
        found = self._max.get(key)
        if found is None:
            row = self._max_row(network, category, media)
            if row is not None:
                found = MaxFareInfo(row.amount, f"max fare {row.cap_id}")
            else:
                amounts = [
                    p.amount for to_sig in range(len(self.area_sets))
                    if (p := self.leg_price(network, from_sig, to_sig, from_tf, to_tf,
                                            category, media)) is not None]
                found = MaxFareInfo(max(amounts, default=0), "highest fare from this stop")
            self._max[key] = found
        return found

    def missing_tap_on_fare(self, network: str | None, category: str | None,
                            media: str | None, tf: int) -> MaxFareInfo:
        """What a tap off with no tap on charges: the max_fare row, or the network's highest."""
        key = ("off", network, tf, category, media)
        found = self._max.get(key)
        if found is None:
            row = self._max_row(network, category, media)
            if row is not None:
                found = MaxFareInfo(row.amount, f"max fare {row.cap_id}")
            else:
                found = MaxFareInfo(max(
                    (self.max_fare(network, sig, tf, tf, category, media).amount
                     for sig in range(len(self.area_sets))), default=0),
                    "highest fare of the network")
            self._max[key] = found
        return found

    # ---- caps ----

    def plan(self, category: str | None, media: str | None, currency: str) -> CapPlan:
        """The caps and tier table of a rider's journeys in ``currency``: a cap or tier of
        another currency never counts them (amounts of two currencies are never added)."""
        key = (category, media, currency)
        plan = self.plans.get(key)
        if plan is None:
            cat = category if category is not None else self.default_category
            caps = tuple(i for i, c in enumerate(self.feed.caps)
                         if c.currency in ("", currency)
                         and applies(c.rider_category_id, c.fare_media_id, cat, media))
            tier = -1
            best_rank = 99
            for i, t in enumerate(self.tiers):
                if t.currency in ("", currency) and \
                        applies(t.rider_category_id, t.fare_media_id, cat, media):
                    rank = (t.rider_category_id is None) * 2 + (t.fare_media_id is None)
                    if rank < best_rank:
                        tier, best_rank = i, rank
            plan = CapPlan(caps, tier, not caps and tier < 0)
            self.plans[key] = plan
        return plan


def stop_clocks(feed: Feed) -> dict[str, LocalClock]:
    """A clock for each stop whose time zone is not the agency's.  A stop with a parent station
    takes the station's zone ("it inherits the parent station's timezone instead of applying
    its own"); a station or parentless stop without one takes the agency's (stops.txt)."""
    agency = feed.timezone.key
    clocks: dict[str, LocalClock] = {}
    out: dict[str, LocalClock] = {}
    for sid, stop in feed.stops.items():
        zone = stop.timezone
        parent = feed.stops.get(stop.parent_station) if stop.parent_station else None
        if parent is not None:
            zone = parent.timezone
        if zone is None or zone == agency:
            continue
        clock = clocks.get(zone)
        if clock is None:
            clock = clocks[zone] = LocalClock(ZoneInfo(zone))
        out[sid] = clock
    return out


def _no_index() -> None:
    """What a pickled :class:`FareIndex` loads as (see ``FareIndex.__reduce__``)."""
    return None
