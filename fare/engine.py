"""The pricer: taps in, charges out.  Pure: the same feed, state and tap give the same result.

Two forms over one core:

* ``price_tap(feed, state, tap) -> (state, charges)`` prices one tap of one card against the
  card's ``CardFareState`` (an immutable value the caller keeps — the transaction core stores
  one per card and feeds taps as they arrive, in time order per card).
* ``price(feed, taps) -> charges`` prices a whole batch (any cards, sorted by time) and closes
  what is left open at the end (incomplete journeys).

How a journey is charged (README: "Charging model"):

* A tap on a route whose fare does not depend on the destination is charged at once.
* A tap on where it does (distance or zone fares) charges the maximum fare; the tap off
  reprices the journey and charges the difference (a refund, usually).  No tap off within the
  tap-off window, or another tap on first: the journey is incomplete and the maximum fare stays,
  outside the caps.
* Every tap reprices the card's open journey (legs linked by possible transfers) and charges the
  difference to what the journey was already charged; tiers then caps act on that difference.
  Charges already made are never revised: a later tap only adds charges.
* Currencies: each network's legs are in one currency (``Feed.network_currency``, checked at
  load), and transfers and joins link only legs of one currency, so a journey is in one; its
  charges carry it, and only the caps and tiers of that currency count it.  Nothing adds amounts
  of two currencies: totals are per card and currency (fare.report).
"""

from __future__ import annotations

import gc
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Final

from mypy_extensions import mypyc_attr

from fare.caps import Tally, add, headroom, period_key
from fare.clock import posix_seconds
from fare.errors import TapError
from fare.explain import Charge, ChargeKind
from fare.index import Boarding, CapPlan, FareIndex
from fare.legs import NO_SIG, EffectiveLeg, Leg
from fare.model import Feed, Tap
from fare.transfers import START, Walk
from fare.values import Value


@mypyc_attr(acyclic=True)
class JourneyTerms(Value):
    """What is fixed when a journey starts: its number, and the caps and tier it counts to."""

    _fields = ("no", "card", "anchor_ts", "caps", "cap_keys", "tier", "tier_key", "tier_bp",
               "tier_id")
    __slots__ = _fields
    no: Final[int]
    card: Final[str]
    anchor_ts: Final[float]  # first tap: the period caps and tiers count it in
    caps: Final[tuple[int, ...]]  # feed.caps indexes that apply
    cap_keys: Final[tuple[int, ...]]  # the period of each
    tier: Final[int]  # tier table index, -1 for none
    tier_key: Final[int]  # calendar month
    tier_bp: Final[int]  # tier discount fixed when the journey started
    tier_id: Final[str | None]

    def __init__(self, no: int, card: str, anchor_ts: float, caps: tuple[int, ...],
                 cap_keys: tuple[int, ...], tier: int, tier_key: int, tier_bp: int,
                 tier_id: str | None) -> None:
        self.no = no
        self.card = card
        self.anchor_ts = anchor_ts
        self.caps = caps
        self.cap_keys = cap_keys
        self.tier = tier
        self.tier_key = tier_key
        self.tier_bp = tier_bp
        self.tier_id = tier_id

    def _values(self) -> tuple[object, ...]:
        return (self.no, self.card, self.anchor_ts, self.caps, self.cap_keys, self.tier,
                self.tier_key, self.tier_bp, self.tier_id)


@mypyc_attr(acyclic=True)
class OpenJourney(Value):
    """Legs of a card that later taps may still reprice, and what they were charged so far.

    ``base`` and ``walk`` are the transfer rules' walk (fare.transfers) over the journey's
    effective legs but the last, and over all of them: a tap that adds a leg, or closes the
    last one, continues from one of them instead of pricing the whole journey again.  They
    follow from the legs (:func:`open_journey` rebuilds them).
    """

    _fields = ("terms", "legs", "fare", "discounted", "charged", "base", "walk", "pending",
               "pending_charged")
    __slots__ = _fields
    terms: Final[JourneyTerms]
    legs: Final[tuple[Leg, ...]]
    fare: Final[int]  # the journey's fare as last priced (maximum fare included while pending)
    discounted: Final[int]  # after the monthly tier
    charged: Final[int]  # after caps: what the card paid for the journey
    base: Final[Walk]  # over every effective leg but the last
    walk: Final[Walk]  # over all of them; while pending (last leg not priced yet): ``base``
    pending: Final[int]  # maximum fare inside ``fare`` while the last leg is open, else -1
    pending_charged: Final[int]  # what the card paid at that tap on

    def __init__(self, terms: JourneyTerms, legs: tuple[Leg, ...], fare: int, discounted: int,
                 charged: int, base: Walk, walk: Walk, pending: int = -1,
                 pending_charged: int = 0) -> None:
        self.terms = terms
        self.legs = legs
        self.fare = fare
        self.discounted = discounted
        self.charged = charged
        self.base = base
        self.walk = walk
        self.pending = pending
        self.pending_charged = pending_charged

    def _values(self) -> tuple[object, ...]:
        return (self.terms, self.legs, self.fare, self.discounted, self.charged, self.base,
                self.walk, self.pending, self.pending_charged)


@mypyc_attr(acyclic=True)
class CardFareState(Value):
    """Everything the engine remembers about one card between taps (immutable)."""

    _fields = ("last_ts", "journeys", "journey", "caps", "tiers")
    __slots__ = _fields
    last_ts: Final[float]
    journeys: Final[int]
    journey: Final[OpenJourney | None]
    caps: Final[tuple[Tally, ...]]  # one tally per feed.caps entry
    tiers: Final[tuple[tuple[int, int], ...]]  # per tier table: (calendar month, spend in it)

    def __init__(self, last_ts: float = float("-inf"), journeys: int = 0,
                 journey: OpenJourney | None = None, caps: tuple[Tally, ...] = (),
                 tiers: tuple[tuple[int, int], ...] = ()) -> None:
        self.last_ts = last_ts
        self.journeys = journeys
        self.journey = journey
        self.caps = caps
        self.tiers = tiers

    def _values(self) -> tuple[object, ...]:
        return (self.last_ts, self.journeys, self.journey, self.caps, self.tiers)


# What _settle returns: discounted fare, amount charged now, caps that held it back, amount they
# waived, and the card's new cap and tier tallies.  A plain tuple: this runs for every tap.
_Settled = tuple[int, int, tuple[str, ...], int, tuple[Tally, ...], tuple[tuple[int, int], ...]]


def price_tap(feed: Feed, state: CardFareState | None, tap: Tap) -> tuple[CardFareState,
                                                                           list[Charge]]:
    """Price one tap of a card; returns the card's new state and the charges it causes."""
    charges: list[Charge] = []
    st = price_into(feed_index(feed), state, tap.tap_id, tap.card, tap.time, tap.stop_id,
                    tap.route_id, tap.action == "on", tap.rider_category, tap.fare_media,
                    charges)
    return st, charges


def price_event(feed: Feed, state: CardFareState | None, tap_id: str, card: str,
                time: datetime, stop_id: str, route_id: str, on: bool, category: str | None,
                media: str | None, ts: float | None = None) -> tuple[CardFareState, list[Charge]]:
    """:func:`price_tap` of the tap these fields describe (``on``: a tap on, else a tap off),
    for a caller that holds taps of its own type: no :class:`~fare.model.Tap` is built.  The
    caller answers for what ``Tap`` checks (``time`` has a UTC offset) and, when it gives
    ``ts``, for it being ``time.timestamp()``."""
    charges: list[Charge] = []
    st = price_into(feed_index(feed), state, tap_id, card, time, stop_id, route_id, on, category,
                    media, charges, ts)
    return st, charges


def open_journey(feed: Feed, terms: JourneyTerms, legs: tuple[Leg, ...], fare: int,
                 discounted: int, charged: int, pending: int = -1,
                 pending_charged: int = 0) -> OpenJourney:
    """An :class:`OpenJourney` from what defines it (a stored state read back): its transfer
    walks are priced again from the legs."""
    base, walk = feed_index(feed).walks(legs, pending >= 0)
    return OpenJourney(terms, legs, fare, discounted, charged, base, walk, pending,
                       pending_charged)


def price_into(ix: FareIndex, state: CardFareState | None, tap_id: str, card: str,
               time: datetime, stop_id: str, route_id: str, on: bool, category: str | None,
               media: str | None, out: list[Charge], posix: float | None = None) -> CardFareState:
    """The body of the pricers, for batch loops elsewhere in the package too (``fare.compare``
    prices two feeds in one pass): one tap of a card in state ``state`` (None: a new card)
    appends its charges to ``out`` (one list for a whole batch: first any incomplete journey
    the tap settles, last the tap's own charge) and returns the card's new state.  Taps of a
    card in time order; ``ix`` is :func:`feed_index` of the feed.  Called directly, not through
    a wrapper, so a caller's hot loop pays no extra frame (and compiled, a native call)."""
    if state is None:
        st = CardFareState(caps=ix.initial_caps, tiers=ix.initial_tiers)
    else:
        st = state
        if len(st.caps) != ix.n_caps or len(st.tiers) != ix.n_tiers:
            st = _rebase(ix, st)
    ts = posix if posix is not None else posix_seconds(time)
    if ts < st.last_ts:
        raise TapError(f"tap {tap_id}: earlier than the card's previous tap "
                       "(taps of a card must be priced in time order)")
    b = ix.boardings.get((route_id, stop_id, category, media))
    if b is None:
        if route_id not in ix.routes:
            raise TapError(f"tap {tap_id}: unknown route_id {route_id!r}")
        if stop_id not in ix.stop_sig:
            raise TapError(f"tap {tap_id}: unknown stop_id {stop_id!r}")
        b = ix.boarding(route_id, stop_id, category, media)
    j = st.journey
    if j is not None and j.pending >= 0:
        last = j.legs[-1]
        window = ix.tap_off_window(last.network, last.category, last.media)
        if on or ts - last.on_ts > window or last.network != b.network:
            st, charge = _incomplete(ix, st, time)
            out.append(charge)
    if on:
        st, charge = _tap_on(ix, st, tap_id, card, time, ts, route_id, stop_id, category, media,
                             b)
    else:
        st, charge = _tap_off(ix, st, tap_id, card, time, ts, stop_id, category, media, b)
    out.append(charge)
    return st


def _rebase(ix: FareIndex, st: CardFareState) -> CardFareState:
    """A state kept across a feed update whose caps or tiers changed: start the tallies afresh,
    and let an open journey finish outside them (its cap indexes mean nothing any more)."""
    j = st.journey
    if j is not None:
        t = j.terms
        terms = JourneyTerms(t.no, t.card, t.anchor_ts, (), (), -1, t.tier_key, t.tier_bp,
                             t.tier_id)
        j = OpenJourney(terms, j.legs, j.fare, j.discounted, j.charged, j.base, j.walk, j.pending,
                        j.pending_charged)
    return CardFareState(st.last_ts, st.journeys, j, ix.initial_caps, ix.initial_tiers)


_FARE: Final = ChargeKind.FARE
_MAX_FARE: Final = ChargeKind.MAX_FARE
_TAP_OFF: Final = ChargeKind.TAP_OFF
_UNPRICED: Final = ChargeKind.UNPRICED
_INCOMPLETE: Final = ChargeKind.INCOMPLETE
_MISSING_TAP_ON: Final = ChargeKind.MISSING_TAP_ON


def close_card(feed: Feed, state: CardFareState, now: datetime | None = None) -> tuple[
        CardFareState, list[Charge]]:
    """Settle a leg still waiting for its tap off: at ``now`` if the window has passed, or
    unconditionally when ``now`` is None (end of the data)."""
    ix = feed_index(feed)
    j = state.journey
    if j is None or j.pending < 0:
        return state, []
    last = j.legs[-1]
    window = ix.tap_off_window(last.network, last.category, last.media)
    expiry = last.on_ts + window
    if now is not None and posix_seconds(now) <= expiry:
        return state, []
    when = now if now is not None else ix.clock.to_datetime(expiry)
    st, charge = _incomplete(ix, state, when)
    return st, [charge]


def price(feed: Feed, taps: Iterable[Tap]) -> list[Charge]:
    """Price a batch of taps of any cards; open legs left at the end are incomplete."""
    ordered = sorted(taps, key=_tap_time)
    states: dict[str, CardFareState] = {}
    out: list[Charge] = []
    get = states.get
    ix = feed_index(feed)
    with _cycles_not_collected():
        for tap in ordered:
            card = tap.card
            states[card] = price_into(ix, get(card), tap.tap_id, card, tap.time, tap.stop_id,
                                      tap.route_id, tap.action == "on", tap.rider_category,
                                      tap.fare_media, out)
        for st in states.values():
            if st.journey is not None and st.journey.pending >= 0:
                out.extend(close_card(feed, st)[1])
    return out


def feed_index(feed: Feed) -> FareIndex:
    """The feed's pricing index (fare.index), built on first use and kept with the feed.

    The engine owns this cache; the Feed only lends it a slot, so fare.model imports nothing of
    the engine (no import cycle).  Pure memoisation: the index is a function of the feed.
    """
    ix = feed._index
    if isinstance(ix, FareIndex):
        return ix
    built = FareIndex(feed)
    object.__setattr__(feed, "_index", built)
    return built


@contextmanager
def cycles_not_collected() -> Iterator[None]:
    """:func:`_cycles_not_collected`, for other batch loops of the package."""
    with _cycles_not_collected():
        yield


@contextmanager
def _cycles_not_collected() -> Iterator[None]:
    """Pause the cyclic garbage collector for a batch.

    Pricing allocates millions of small tuples that form no reference cycles (reference counting
    frees them all); the cyclic collector would still walk every live one again and again, which
    halves throughput on a million-tap batch.  Restored on the way out, whatever happens.
    (``gc.freeze`` also moves objects of the caller made meanwhile to the oldest generation:
    harmless, they are still collected there.)
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # Everything allocated meanwhile sits in the youngest generation; the first collection
        # after enabling would walk all of it.  freeze + unfreeze moves it to the oldest
        # generation without a walk (the normal full-collection heuristics then apply).
        gc.freeze()
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def _tap_time(tap: Tap) -> datetime:
    return tap.time


# ---------------------------------------------------------------------------------------------


def _tap_on(ix: FareIndex, st: CardFareState, tap_id: str, card: str, time: datetime, ts: float,
            route_id: str, stop_id: str, category: str | None, media: str | None,
            b: Boarding) -> tuple[CardFareState, Charge]:
    # The hot path of the whole engine: method calls are inlined as dict lookups on purpose.
    network = b.network
    info = b.info
    from_sig = b.from_sig
    from_tf = ix.tf_sig(ts, stop_id) if info.from_tf else NO_SIG
    needs_off = b.needs_off
    price = b.price
    if not b.fixed and not needs_off:  # the price depends on the time of day
        price = ix.leg_price(network, from_sig, NO_SIG, from_tf, NO_SIG, category, media)
    leg = Leg(tap_id, ts, route_id, network, stop_id, from_sig, from_tf, category, media,
              needs_off, None, None, None, NO_SIG, NO_SIG, price)
    j = st.journey
    journeys = st.journeys
    linked = False  # the new leg may still join the open journey (a transfer or a join)
    if j is not None:
        prev = j.legs[-1]
        prev_price = prev.price
        if prev_price is not None and prev_price.leg_group_id is not None and \
                prev_price.product.currency == b.currency:  # no transfer across currencies
            # Might this leg still be a transfer from prev?  An optimistic bound that keeps the
            # journey open: the gap since prev's last validation is within the longest duration
            # limit of the rules out of prev's group (every duration type spans at least it).
            gap = ix.transfers.gaps.get(prev_price.leg_group_id)
            if gap is None:
                gap = ix.transfers.longest_gap(prev_price.leg_group_id)
            off = prev.off_ts
            linked = ts - (off if off is not None else prev.on_ts) <= gap
        if not linked and ix.join_pairs and (prev.network, network) in ix.join_pairs:
            linked = True
    if needs_off:
        to_tf = ix.tf_sig(ts, stop_id) if info.to_tf else NO_SIG
        mx = ix.max_fare(network, from_sig, from_tf, to_tf, category, media)
        if j is None or not linked:
            journeys += 1
            terms = _terms(ix, st, b.plan, card, ts, journeys)
            legs: tuple[Leg, ...] = (leg,)
            before, disc, charged, base = 0, 0, 0, START
        else:
            terms, before, disc, charged = j.terms, j.fare, j.discounted, j.charged
            base = j.base if ix.join_pairs and ix.joins(j.legs[-1], leg) else j.walk
            legs = (*j.legs, leg)
        new_fare = before + mx.amount
        new_disc, c, capped, waived, caps, tiers = _settle(ix, st, terms, disc, charged,
                                                           new_fare)
        j = OpenJourney(terms, legs, new_fare, new_disc, charged + c, base, base, mx.amount, c)
        return (CardFareState(ts, journeys, j, caps, tiers),
                Charge(tap_id, card, c, b.currency, _MAX_FARE, terms.no, time, before, new_fare,
                       legs, (), terms.tier_id, terms.tier_bp, capped, waived, mx.amount,
                       mx.source))
    walk: Walk | None = None
    if j is not None and linked:
        legs = (*j.legs, leg)
        n = len(legs) - 1
        if ix.join_pairs and ix.joins(j.legs[-1], leg):
            base = j.base
            walk = ix.walk_on(base, legs, ix.effective_leg(legs, j.walk.steps[-1].leg.first, n))
        else:
            base = j.walk
            walk = ix.walk_on(base, legs, EffectiveLeg(n, n, price))
        last = walk.steps[-1]
        if last.transfer is None and last.leg.first == n:
            walk = None  # no transfer after all: a journey of its own
    if walk is None or j is None:
        journeys += 1
        terms = _terms(ix, st, b.plan, card, ts, journeys)
        legs = (leg,)
        base = START
        if price is not None:
            walk = ix.solo_walks.get(id(price))
            if walk is None:
                walk = ix.solo_walk(price)
        else:
            walk = ix.walk_on(START, legs, EffectiveLeg(0, 0, None))
        before = disc = charged = 0
    else:
        terms, before, disc, charged = j.terms, j.fare, j.discounted, j.charged
    total = walk.total
    new_disc, c, capped, waived, caps, tiers = _settle(ix, st, terms, disc, charged, total)
    j = OpenJourney(terms, legs, total, new_disc, charged + c, base, walk, -1, 0)
    return (CardFareState(ts, journeys, j, caps, tiers),
            Charge(tap_id, card, c, b.currency, _FARE if price is not None else _UNPRICED,
                   terms.no, time, before, total, legs, walk.steps, terms.tier_id, terms.tier_bp,
                   capped, waived, 0, ""))


def _tap_off(ix: FareIndex, st: CardFareState, tap_id: str, card: str, time: datetime,
             ts: float, stop_id: str, category: str | None, media: str | None,
             b: Boarding) -> tuple[CardFareState, Charge]:
    network = b.network
    j = st.journey
    leg = j.legs[-1] if j is not None else None
    if j is None or leg is None or leg.off_ts is not None or leg.network != network or \
            ts - leg.on_ts > ix.tap_off_window(network, leg.category, leg.media):
        return _missing_tap_on(ix, st, tap_id, card, time, ts, network, category, media,
                               stop_id)
    info = b.info
    to_sig = b.stop_sig if info.to_area else NO_SIG
    to_tf = ix.tf_sig(ts, stop_id) if info.to_tf else NO_SIG
    price = leg.price
    if leg.needs_tap_off:
        price = ix.leg_price(network, leg.from_sig, to_sig, leg.from_tf, to_tf, leg.category,
                             leg.media)
    closed = leg.closed(tap_id, ts, stop_id, to_sig, to_tf, price)
    legs = (*j.legs[:-1], closed)
    # The legs before the last are as they were: continue their walk over the last run of
    # joined legs (the closed leg alone, unless it was joined to those before it).
    base = j.base
    n = len(legs) - 1
    first = base.steps[-1].leg.last + 1 if base.steps else 0
    eff = EffectiveLeg(n, n, price) if first == n else ix.effective_leg(legs, first, n)
    walk = ix.walk_on(base, legs, eff)
    total = walk.total
    terms = j.terms
    new_disc, c, capped, waived, caps, tiers = _settle(ix, st, terms, j.discounted, j.charged,
                                                       total)
    nj = OpenJourney(terms, legs, total, new_disc, j.charged + c, base, walk, -1, 0)
    kind = _TAP_OFF if price is not None else _UNPRICED
    return (CardFareState(ts, st.journeys, nj, caps, tiers),
            Charge(tap_id, card, c, b.currency, kind, terms.no, time, j.fare, total, legs,
                   walk.steps, terms.tier_id, terms.tier_bp, capped, waived, 0, ""))


def _missing_tap_on(ix: FareIndex, st: CardFareState, tap_id: str, card: str, time: datetime,
                    ts: float, network: str | None, category: str | None,
                    media: str | None, stop_id: str) -> tuple[CardFareState, Charge]:
    info = ix.net(network)
    amount, source = 0, ""
    if info.needs_tap_off:
        tf = ix.tf_sig(ts, stop_id) if (info.from_tf or info.to_tf) else NO_SIG
        mx = ix.missing_tap_on_fare(network, category, media, tf)
        amount, source = mx.amount, mx.source
    no = st.journeys + 1
    charge = Charge(tap_id, card, amount, ix.currency_of(network), _MISSING_TAP_ON, no, time,
                    0, amount, max_fare=amount, max_source=source)
    return CardFareState(ts, no, st.journey, st.caps, st.tiers), charge


def _incomplete(ix: FareIndex, st: CardFareState, when: datetime) -> tuple[CardFareState, Charge]:
    """The open leg will get no tap off: its maximum fare stands, outside caps and tiers."""
    j = st.journey
    assert j is not None
    terms = j.terms
    paid = j.pending_charged
    caps = st.caps
    if paid and terms.caps:
        feed_caps = ix.feed.caps
        lst = list(caps)
        for i, key in zip(terms.caps, terms.cap_keys, strict=True):
            lst[i] = add(feed_caps[i], lst[i], key, terms.anchor_ts, -paid)
        caps = tuple(lst)
    tiers = st.tiers
    if paid and terms.tier >= 0:
        tiers = _tier_add(tiers, terms.tier, terms.tier_key, -paid)
    leg = j.legs[-1]
    mx = ix.max_fare(leg.network, leg.from_sig, leg.from_tf,
                     ix.tf_sig(leg.on_ts, leg.from_stop) if ix.net(leg.network).to_tf
                     else NO_SIG,
                     leg.category, leg.media)
    charge = Charge(leg.on_tap, terms.card, j.pending - paid, ix.currency_of(leg.network),
                    _INCOMPLETE, terms.no, when, j.fare, j.fare, j.legs, max_fare=j.pending,
                    max_source=mx.source)
    return CardFareState(st.last_ts, st.journeys, None, caps, tiers), charge


def _terms(ix: FareIndex, st: CardFareState, plan: CapPlan, card: str, ts: float,
           no: int) -> JourneyTerms:
    if plan.simple:
        return JourneyTerms(no, card, ts, (), (), -1, 0, 0, None)
    info = ix.clock.buckets.get(int(ts // 900)) or ix.clock.bucket(ts)
    local = ts + info[0]
    keys: tuple[int, ...] = ()
    if plan.caps:
        feed_caps = ix.feed.caps
        keys = tuple([period_key(feed_caps[i], local, no) for i in plan.caps])
    tier = plan.tier
    if tier < 0:
        return JourneyTerms(no, card, ts, plan.caps, keys, -1, 0, 0, None)
    month = info[2]
    last_month, spend = st.tiers[tier]
    table = ix.tiers[tier]
    bp = table.bps[bisect_right(table.thresholds, spend)] if last_month == month else 0
    return JourneyTerms(no, card, ts, plan.caps, keys, tier, month, bp, table.cap_id)


def _settle(ix: FareIndex, st: CardFareState, terms: JourneyTerms, old_disc: int,
            charged: int, new_fare: int) -> _Settled:
    """Charge the change of a journey's fare through its tier and caps.

    An increase is charged up to the smallest headroom of the journey's caps; a decrease refunds
    down to the new discounted fare, never more than was paid.
    """
    tier_bp = terms.tier_bp
    new_disc = new_fare - (new_fare * tier_bp + 5000) // 10000 if tier_bp else new_fare
    delta = new_disc - old_disc
    if delta >= 0 and not terms.caps:
        tier = terms.tier
        if delta and tier >= 0:
            tiers = st.tiers
            if len(tiers) == 1:  # the usual single tier table, inline
                month, spend = tiers[0]
                key = terms.tier_key
                return new_disc, delta, (), 0, st.caps, (
                    (key, (spend if month == key else 0) + delta),)
            return new_disc, delta, (), 0, st.caps, _tier_add(tiers, tier, terms.tier_key, delta)
        return new_disc, delta, (), 0, st.caps, st.tiers
    capped: tuple[str, ...] = ()
    waived = 0
    caps = st.caps
    if delta >= 0:
        c = delta
        if terms.caps:
            feed_caps = ix.feed.caps
            for i, key in zip(terms.caps, terms.cap_keys, strict=True):
                cap = feed_caps[i]
                room = headroom(cap, caps[i], key, terms.anchor_ts)
                if room < delta:
                    capped = (*capped, cap.cap_id)
                    c = min(c, room)
            waived = delta - c
    else:
        c = min(charged, new_disc) - charged
    tiers = st.tiers
    if c:
        if terms.caps:
            feed_caps = ix.feed.caps
            lst = list(caps)
            for i, key in zip(terms.caps, terms.cap_keys, strict=True):
                lst[i] = add(feed_caps[i], lst[i], key, terms.anchor_ts, c)
            caps = tuple(lst)
        if terms.tier >= 0:
            tiers = _tier_add(tiers, terms.tier, terms.tier_key, c)
    return new_disc, c, capped, waived, caps, tiers


def _tier_add(tiers: tuple[tuple[int, int], ...], index: int, month: int,
              amount: int) -> tuple[tuple[int, int], ...]:
    """Count ``amount`` as spend of ``month`` (the open journey's, always the card's latest)."""
    old_month, spend = tiers[index]
    entry = (month, (spend if old_month == month else 0) + amount)
    if len(tiers) == 1:
        return (entry,)
    return (*tiers[:index], entry, *tiers[index + 1:])
