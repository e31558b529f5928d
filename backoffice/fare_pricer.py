"""The back office's :class:`~backoffice.pricing.Pricer` over the real fare engine (``fare/``).

The engine prices one card as a pure fold ``(CardFareState, fare.Tap) -> (state, charges)``;
this adapter maps a :class:`~backoffice.taps.TapRecord` onto a ``fare.Tap`` (the card is the
PAN token, ``tap``/``tap_on`` board, ``tap_off`` alights, an empty category or medium is
"not given"), turns the engine's refusals (:class:`fare.TapError`: unknown stop or route, a
tap older than the card's last one) into :class:`~backoffice.pricing.PricingError` so the
core rejects the tap with its reason, and stores the card state compactly (msgpack).

Speed: it runs for every tap the core ingests, so the sentence explaining a charge is
memoised by what it depends on (kind, journey fares, route ids, leg prices, transfer, tier,
caps) rather than rendered for each tap; and the core asks for it only when the tap's row is
written or its explanation read (:meth:`FarePricer.price_lazily`, ``PricedTap.explain``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from datetime import datetime
from typing import Any, Final

import msgspec

from backoffice.pricing import FareCharge, PricingError
from backoffice.taps import Action, TapRecord
from fare.engine import (
    CardFareState,
    JourneyTerms,
    close_card,
    feed_index,
    open_journey,
    price_into,
)
from fare.errors import TapError
from fare.explain import Charge, ChargeKind, render
from fare.legs import NO_SIG, Leg
from fare.model import Feed, Tap

STATE_VERSION: Final = 1
# Final module constants are read as C statics when compiled (others: a dict lookup each time).
_MEMO_LIMIT: Final = 50_000
_INCOMPLETE: Final = ChargeKind.INCOMPLETE
_MISSING_TAP_ON: Final = ChargeKind.MISSING_TAP_ON
_MAX_FARE: Final = ChargeKind.MAX_FARE
_TAP_OFF: Final = Action.TAP_OFF
_new_tap: Final = object.__new__
# The slot setters of the frozen fare.Tap, in field order (see FarePricer.fare_tap).
(_set_tap_id, _set_card, _set_time, _set_stop, _set_route, _set_action, _set_category,
 _set_media) = (getattr(Tap, f.name).__set__ for f in dataclasses.fields(Tap))  # fmt: skip
_new_charge: Final = tuple.__new__  # FareCharge without its generated __new__ (a Python frame)
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class FarePricer:
    """Prices taps with a GTFS-Fares v2 feed (see the module docstring).

    ``strict_labels``: a rider category or fare medium the feed does not know is refused
    (a typo would otherwise pay the default category's or an unknown medium's price).
    """

    __slots__ = ("_categories", "_explains", "_ix", "_media", "currency", "feed", "strict_labels")

    def __init__(self, feed: Feed, *, strict_labels: bool = True) -> None:
        self.feed = feed
        self.currency = feed.currency
        self.strict_labels = strict_labels
        self._categories = frozenset(feed.rider_categories)
        self._media = frozenset(feed.fare_media)
        self._ix = feed_index(feed)  # price_into's index, looked up once, not on every tap
        # explanation key -> (text, the objects whose ids are in the key, kept alive)
        self._explains: dict[Hashable, tuple[str, tuple[object, ...]]] = {}

    def __repr__(self) -> str:
        return f"FarePricer(currency={self.currency!r}, routes={len(self.feed.routes)})"

    def __reduce__(self) -> tuple[object, tuple[Feed, bool]]:
        # Rebuilt from what defines it (the memo is not kept): compiled (mypyc) instances
        # cannot be pickled field by field.
        return _pricer, (self.feed, self.strict_labels)

    # -- pricing ---------------------------------------------------------------------------

    def fare_tap(self, tap: TapRecord) -> Tap:
        """The fare engine's view of a tap record (PricingError for labels the feed lacks)."""
        category = tap.rider_category or None
        media = tap.fare_media or None
        if self.strict_labels:
            if category is not None and category not in self._categories:
                raise PricingError(
                    f"tap {tap.tap_id}: rider_category {category!r} is not in the fare feed"
                )
            if media is not None and media not in self._media:
                raise PricingError(
                    f"tap {tap.tap_id}: fare_media {media!r} is not in the fare feed"
                )
        when = tap.time
        if when.tzinfo is None or when.utcoffset() is None:
            raise PricingError(f"tap {tap.tap_id}: time {when.isoformat()} has no UTC offset")
        # What Tap.__init__ would do, minus its checks (made above; the action comes from an
        # enum): the frozen dataclass's generated __init__ costs twice as much, on every tap.
        fare_tap = _new_tap(Tap)
        _set_tap_id(fare_tap, tap.tap_id)
        _set_card(fare_tap, tap.pan_token)
        _set_time(fare_tap, when)
        _set_stop(fare_tap, tap.stop_id)
        _set_route(fare_tap, tap.route_id)
        _set_action(fare_tap, "off" if tap.action is _TAP_OFF else "on")
        _set_category(fare_tap, category)
        _set_media(fare_tap, media)
        return fare_tap

    def price(self, state: object | None, tap: TapRecord) -> tuple[object, list[FareCharge]]:
        return self.price_at_us(state, tap, None)

    def price_at_us(
        self, state: object | None, tap: TapRecord, tap_us: int | None
    ) -> tuple[object, list[FareCharge]]:
        """:meth:`price`, for a caller that already has the tap's time as microseconds since
        the epoch (``to_us(tap.time)``; None: work it out)."""
        state, charges = self.price_facts(state, tap, tap_us)
        return state, self._charges(charges)

    def price_lazily(
        self, state: object | None, tap: TapRecord, tap_us: int, currency: str
    ) -> tuple[object, int, object, list[FareCharge] | None]:
        """:meth:`price_at_us` for the transaction core, which keeps a tap's explanation
        until someone reads it: a tap whose one charge is in ``currency`` (the usual case)
        comes back as ``(state, amount, fact, None)``, its sentence being
        :meth:`render` ``(fact)``; any other as ``(state, 0, None, charges)``."""
        state, charges = self.price_facts(state, tap, tap_us)
        if len(charges) == 1:
            c = charges[0]
            if c.currency == currency:
                return state, c.amount, c, None
        return state, 0, None, self._charges(charges)

    def render(self, fact: object) -> str:
        """The sentence of a fact :meth:`price_lazily` returned (memoised, :meth:`explain`)."""
        if not isinstance(fact, Charge):
            raise TypeError(f"not a fare-engine charge: {type(fact).__name__}")
        return self.explain(fact)

    def price_facts(
        self, state: object | None, tap: TapRecord, tap_us: int | None
    ) -> tuple[CardFareState, list[Charge]]:
        """The fare engine's own charges for a tap (the facts, no sentence made yet)."""
        # fare_tap's mapping, inline and without building the fare.Tap: this runs for every tap.
        category = tap.rider_category or None
        media = tap.fare_media or None
        if self.strict_labels and (
            (category is not None and category not in self._categories)
            or (media is not None and media not in self._media)
        ):
            self.fare_tap(tap)  # raises, naming the label
        when = tap.time
        # A time made into microseconds is aware (a naive one cannot be).
        if tap_us is None and (when.tzinfo is None or when.utcoffset() is None):
            raise PricingError(f"tap {tap.tap_id}: time {when.isoformat()} has no UTC offset")
        if state is not None and not isinstance(state, CardFareState):
            raise PricingError(f"not a fare-engine card state: {type(state).__name__}")
        charges: list[Charge] = []
        try:
            new = price_into(
                self._ix, state, tap.tap_id, tap.pan_token, when, tap.stop_id, tap.route_id,
                tap.action is not _TAP_OFF, category, media, charges,
                tap_us / 1_000_000 if tap_us is not None else None,
            )  # fmt: skip
        except TapError as exc:
            raise PricingError(str(exc)) from None
        return new, charges

    def close(self, state: object | None, now: datetime) -> tuple[object, list[FareCharge]]:
        """An open leg whose tap-off window has passed is settled at its maximum fare."""
        st = _state(state)
        if st is None:
            return state, []
        new, charges = close_card(self.feed, st, now)
        return new, self._charges(charges)

    def _charges(self, charges: list[Charge]) -> list[FareCharge]:
        out: list[FareCharge] = []
        for c in charges:
            out.append(_new_charge(FareCharge, (c.tap_id, c.amount, c.currency, self.explain(c))))
        return out

    def explain(self, charge: Charge) -> str:
        """``charge.explain``, memoised by everything the sentence depends on.

        The key is one flat tuple (its length tells the three shapes apart); the ids in it
        are of the leg prices and transfer rules, kept alive by the memo entry.
        """
        kind = charge.kind
        keep: tuple[object, ...] = ()
        if kind is _INCOMPLETE or kind is _MISSING_TAP_ON:
            key: Hashable = (kind, charge.max_fare, charge.max_source)
        else:
            steps = charge.steps if kind is not _MAX_FARE else ()
            legs = charge.legs
            if not steps:
                key = (kind, charge.fare_before, charge.fare_after, charge.tier_id,
                       charge.tier_bp, charge.capped_by, charge.waived, charge.max_fare,
                       charge.max_source)  # fmt: skip
            elif len(steps) == 1 and len(legs) == 1:  # one leg, the usual case
                step = steps[0]
                price, transfer = step.leg.price, step.transfer
                keep = (price, transfer)
                key = (kind, charge.fare_before, charge.fare_after, charge.tier_id,
                       charge.tier_bp, charge.capped_by, charge.waived, charge.max_fare,
                       charge.max_source, legs[0].route_id, id(price), id(transfer),
                       step.transfer_cost, step.added)  # fmt: skip
            else:
                parts: list[object] = [
                    kind, charge.fare_before, charge.fare_after, charge.tier_id, charge.tier_bp,
                    charge.capped_by, charge.waived, charge.max_fare, charge.max_source,
                    len(legs),
                ]  # fmt: skip
                for leg in legs:
                    parts.append(leg.route_id)
                kept: list[object] = []
                for s in steps:
                    eff = s.leg
                    price, transfer = eff.price, s.transfer
                    parts.append(eff.first)
                    parts.append(eff.last)
                    parts.append(id(price))
                    parts.append(id(transfer))
                    parts.append(s.transfer_cost)
                    parts.append(s.added)
                    kept.append(price)
                    kept.append(transfer)
                key = tuple(parts)
                keep = tuple(kept)
        hit = self._explains.get(key)
        if hit is not None:
            return hit[0]
        text = render(charge)
        if len(self._explains) < _MEMO_LIMIT:
            # ``keep`` holds the objects whose ids are in the key: while the entry lives no
            # other object can take one of those ids.
            self._explains[key] = (text, keep)
        return text

    # -- the card state codec ----------------------------------------------------------------

    def encode_state(self, state: object) -> bytes:
        """msgpack of the state; a leg keeps its stops and times, not the feed's interned
        area/timeframe numbers or price objects (those are rebuilt from the feed on decode)."""
        if state is None:
            return b""
        st = _state(state)
        assert st is not None
        j = st.journey
        journey: list[Any] | None = None
        if j is not None:
            legs = [
                (leg.on_tap, leg.on_ts, leg.route_id, leg.network, leg.from_stop, leg.category,
                 leg.media, leg.needs_tap_off, leg.off_tap, leg.off_ts, leg.to_stop)
                for leg in j.legs
            ]  # fmt: skip
            journey = [tuple(j.terms), legs, j.fare, j.discounted, j.charged, j.pending,
                       j.pending_charged]  # fmt: skip
        return _encoder.encode((STATE_VERSION, st.last_ts, st.journeys, journey, st.caps, st.tiers))

    def decode_state(self, data: bytes) -> object:
        if not data:
            return None
        try:
            raw = _decoder.decode(data)
            version, last_ts, journeys, journey, caps, tiers = raw
            if version != STATE_VERSION:
                raise PricingError(f"stored fare state has version {version}, need {STATE_VERSION}")
            j = None
            if journey is not None:
                terms, legs, fare, discounted, charged, pending, pending_charged = journey
                t = list(terms)
                t[3], t[4] = tuple(t[3]), tuple(t[4])
                j = open_journey(
                    self.feed, JourneyTerms(*t), tuple(self._leg(*leg) for leg in legs), fare,
                    discounted, charged, pending, pending_charged,
                )  # fmt: skip
            return CardFareState(
                last_ts, journeys, j,
                tuple(tuple(tuple(entry) for entry in tally) for tally in caps),
                tuple((int(m), int(s)) for m, s in tiers),
            )  # fmt: skip
        except PricingError:
            raise
        except (msgspec.DecodeError, ValueError, TypeError, KeyError) as exc:
            raise PricingError(
                f"stored fare state does not fit this fare feed ({type(exc).__name__}: {exc})"
            ) from None

    def _leg(
        self, on_tap: str, on_ts: float, route_id: str, network: str | None, from_stop: str,
        category: str | None, media: str | None, needs_tap_off: bool, off_tap: str | None,
        off_ts: float | None, to_stop: str | None,
    ) -> Leg:  # fmt: skip
        """A leg as the engine built it: interned signatures and price from this feed."""
        feed = self.feed
        for kind, value, known in (("route", route_id, feed.routes), ("stop", from_stop,
                                   feed.stops), ("stop", to_stop, feed.stops)):  # fmt: skip
            if value is not None and value not in known:
                raise KeyError(f"{kind} {value!r} is not in the feed")
        ix = feed_index(feed)
        info = ix.net(network)
        from_sig = ix.stop_sig[from_stop] if info.from_area else NO_SIG
        from_tf = ix.tf_sig(on_ts, from_stop) if info.from_tf else NO_SIG
        to_sig = to_tf = NO_SIG
        if off_tap is not None:
            if info.to_area and to_stop is not None:
                to_sig = ix.stop_sig[to_stop]
            if info.to_tf and off_ts is not None:
                to_tf = ix.tf_sig(off_ts, to_stop)
        price = None
        if off_tap is not None or not needs_tap_off:
            price = ix.leg_price(network, from_sig, to_sig, from_tf, to_tf, category, media)
        return Leg(on_tap, on_ts, route_id, network, from_stop, from_sig, from_tf, category, media,
                   needs_tap_off, off_tap, off_ts, to_stop, to_sig, to_tf, price)  # fmt: skip


def _pricer(feed: Feed, strict_labels: bool) -> FarePricer:
    return FarePricer(feed, strict_labels=strict_labels)


def _state(state: object | None) -> CardFareState | None:
    if state is None or isinstance(state, CardFareState):
        return state
    raise PricingError(f"not a fare-engine card state: {type(state).__name__}")
