"""How the back office asks for a fare: the :class:`Pricer` protocol and a flat-fare pricer.

The fare engine (``fare/``) prices one card's taps as a pure fold
``(card_state, tap) -> (new_state, charges)``.  The core depends only on this protocol, so
it runs with :class:`FlatFarePricer` (a real, simple tariff: flat fare per route or
operator, concession discounts, an optional daily cap) until the ``fare/`` adapter is
wired in.  The card state is opaque here; the pricer encodes it for storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple, Protocol

from backoffice.policy import ServiceDay
from backoffice.taps import Action, TapRecord


class PricingError(ValueError):
    """A tap the pricer cannot price (unknown route, bad category...): the tap is rejected."""


class FareCharge(NamedTuple):
    """One line of what a tap costs (amount may be negative: a refund or an adjustment)."""

    tap_id: str
    amount: int
    currency: str
    explain: str


class Pricer(Protocol):
    """Pure per-card pricing; ``state`` is ``None`` for a card never seen."""

    currency: str

    def price(self, state: object | None, tap: TapRecord) -> tuple[object, list[FareCharge]]:
        """Charges for ``tap`` given the card's fare state, and the state after it."""
        ...

    def close(self, state: object | None, now: datetime) -> tuple[object, list[FareCharge]]:
        """Charges that fall due without a tap (an unfinished journey's maximum fare) when
        the card's aggregate closes at ``now``; each names the tap it belongs to."""
        ...

    def encode_state(self, state: object) -> bytes:
        """Bytes for storage; :meth:`decode_state` gives the state back."""
        ...

    def decode_state(self, data: bytes) -> object: ...


@dataclass(frozen=True, slots=True)
class FlatState:
    """Spend so far on one service day (what the daily cap needs)."""

    day: date
    spent: int


@dataclass(frozen=True, slots=True)
class FlatFarePricer:
    """Flat fares by route (else by operator, else ``default``), discounts, a daily cap.

    ``discounts`` maps a rider category to the percentage paid (senior 0, student 50).
    Tap-offs cost nothing (a flat tariff charges at boarding).
    """

    default: int
    currency: str = "CNY"
    by_route: Mapping[str, int] = field(default_factory=dict)
    by_operator: Mapping[str, int] = field(default_factory=dict)
    discounts: Mapping[str, int] = field(default_factory=dict)
    daily_cap: int | None = None
    service_day: ServiceDay = field(default_factory=ServiceDay)
    strict: bool = False  # unknown route and operator: refuse instead of the default fare
    _memo: dict[tuple[str, str, str], tuple[int, str]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        for name, fares in (("by_route", self.by_route), ("by_operator", self.by_operator)):
            for key, fare in fares.items():
                if fare < 0:
                    raise PricingError(f"FlatFarePricer.{name}[{key!r}] is negative")
        if self.default < 0:
            raise PricingError("FlatFarePricer.default is negative")
        for category, pct in self.discounts.items():
            if not 0 <= pct <= 100:
                raise PricingError(f"FlatFarePricer.discounts[{category!r}] must be 0..100 (%)")
        if self.daily_cap is not None and self.daily_cap < 0:
            raise PricingError("FlatFarePricer.daily_cap is negative")

    def _base(self, tap: TapRecord) -> tuple[int, str]:
        """Fare and explanation before the cap, memoised per (route, operator, category)."""
        key = (tap.route_id, tap.operator_id, tap.rider_category)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        fare = self.by_route.get(tap.route_id)
        basis = f"route {tap.route_id}"
        if fare is None:
            fare = self.by_operator.get(tap.operator_id)
            basis = f"operator {tap.operator_id}"
        if fare is None:
            if self.strict:
                raise PricingError(f"no fare for route {tap.route_id!r} of {tap.operator_id!r}")
            fare = self.default
            basis = "default fare"
        explain = f"{basis} {fare}"
        if tap.rider_category and tap.rider_category in self.discounts:
            pct = self.discounts[tap.rider_category]
            fare = fare * pct // 100
            explain += f", {tap.rider_category} pays {pct}%"
        if len(self._memo) < 100_000:
            self._memo[key] = (fare, explain)
        return fare, explain

    def price(self, state: object | None, tap: TapRecord) -> tuple[object, list[FareCharge]]:
        if tap.action is Action.TAP_OFF:
            return state, [FareCharge(tap.tap_id, 0, self.currency, "tap-off: flat fare")]
        fare, explain = self._base(tap)
        if self.daily_cap is None:
            return state, [FareCharge(tap.tap_id, fare, self.currency, explain)]
        day = self.service_day.day_of(tap.time)
        spent = state.spent if isinstance(state, FlatState) and state.day == day else 0
        if spent + fare > self.daily_cap:
            fare = max(0, self.daily_cap - spent)
            explain += f", capped at {self.daily_cap} a day"
        return FlatState(day, spent + fare), [FareCharge(tap.tap_id, fare, self.currency, explain)]

    def close(self, state: object | None, now: datetime) -> tuple[object, list[FareCharge]]:
        """A flat tariff charges at boarding: nothing is ever left open."""
        return state, []

    def encode_state(self, state: object) -> bytes:
        if state is None:
            return b""
        if not isinstance(state, FlatState):
            raise PricingError(f"not a flat-fare state: {type(state).__name__}")
        return f"{state.day.isoformat()}|{state.spent}".encode("ascii")

    def decode_state(self, data: bytes) -> object:
        if not data:
            return None
        try:
            day, spent = data.decode("ascii").split("|")
            return FlatState(date.fromisoformat(day), int(spent))
        except ValueError:
            raise PricingError("stored flat-fare state is corrupt") from None
