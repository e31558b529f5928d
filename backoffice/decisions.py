"""The back office's decisions as pure functions (no storage, no issuer, no clock).

The engine (:mod:`backoffice.engine`) calls these and carries out what they decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Final

from backoffice.policy import AggregationPolicy, RecoveryPolicy
from backoffice.pricing import FareCharge, Pricer, PricingError
from backoffice.records import Aggregate, Debt, PricedTap, TransitCard, from_us
from backoffice.taps import TapRecord

CLOSE_DAY_END: Final = "service_day_end"
CLOSE_MAX_TRAVEL: Final = "max_travel_time"
CLOSE_SPEND_LIMIT: Final = "spend_limit"


def close_before(
    agg: Aggregate, tap_us: int, service_day: str, policy: AggregationPolicy
) -> str | None:
    """Why ``agg`` must close before a tap at ``tap_us`` (microseconds since the epoch) of
    ``service_day`` can be added, or None when the tap fits.

    Late taps (older than the aggregate) join it: an aggregate only closes for taps that
    lie beyond its service day or its travel time.
    """
    return close_reason(agg, tap_us, service_day, policy.close_at_day_end,
                        duration_us(policy.max_travel_time))


def close_reason(
    agg: Aggregate, tap_us: int, service_day: str, close_at_day_end: bool, max_travel_us: int
) -> str | None:
    """:func:`close_before` with the policy's two figures given (the core's per-tap form)."""
    if close_at_day_end and service_day > agg.service_day:
        return CLOSE_DAY_END
    if tap_us - agg.first_us > max_travel_us:
        return CLOSE_MAX_TRAVEL
    return None


def duration_us(d: timedelta) -> int:
    """A duration in whole microseconds (exact)."""
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def deadline(agg: Aggregate, policy: AggregationPolicy) -> datetime:
    """When an open aggregate closes if no tap closes it earlier."""
    end = from_us(agg.first_us) + policy.max_travel_time
    if policy.close_at_day_end:
        end = min(end, policy.service_day.end_of(date.fromisoformat(agg.service_day)))
    return end


def due_reason(agg: Aggregate, now: datetime, policy: AggregationPolicy) -> str | None:
    """Why ``agg`` is due for closing at ``now`` (or None)."""
    if now < deadline(agg, policy):
        return None
    if policy.close_at_day_end and now >= policy.service_day.end_of(
        date.fromisoformat(agg.service_day)
    ):
        return CLOSE_DAY_END
    return CLOSE_MAX_TRAVEL


def total_of(charges: Sequence[FareCharge], currency: str) -> tuple[int, str]:
    """Sum and explanation of a tap's charges; a foreign currency is a pricing error."""
    if len(charges) == 1:
        c = charges[0]
        if c.currency != currency:
            raise PricingError(f"fare in {c.currency}, the back office settles in {currency}")
        return c.amount, c.explain
    amount = 0
    for c in charges:
        if c.currency != currency:
            raise PricingError(f"fare in {c.currency}, the back office settles in {currency}")
        amount += c.amount
    return amount, "; ".join(c.explain for c in charges)


def sort_key(p: PricedTap) -> tuple[int, str]:
    return (p.time_us, p.tap.tap_id)


def priced_alone(pricer: Pricer, tap: TapRecord) -> list[FareCharge]:
    """The charges of a tap the card's fare state has moved past (a late tap: it came after
    its aggregate closed, a journal resent after an outage), priced as a journey of its own.
    The card's state stays as it is: accepted and charged, not refused, though no transfer or
    cap reaches across it (backoffice/README.md, "Deferred authorization")."""
    return pricer.price(None, tap)[1]


def reprice(
    pricer: Pricer, start: object | None, taps: Sequence[PricedTap], currency: str
) -> tuple[object | None, list[tuple[PricedTap, int, str]]]:
    """Price an aggregate's taps again in time order from the state it opened with; a tap
    that state has moved past is :func:`priced_alone` and the sequence goes on without it."""
    state = start
    out: list[tuple[PricedTap, int, str]] = []
    for p in sorted(taps, key=sort_key):
        try:
            state, charges = pricer.price(state, p.tap)
        except PricingError:
            if state is None:
                raise
            charges = priced_alone(pricer, p.tap)
        amount, explain = total_of(charges, currency)
        out.append((p, amount, explain))
    return state, out


def next_retry(debt: Debt, policy: RecoveryPolicy) -> datetime | None:
    """When the next scheduled resubmission of a debt is due (None: retries exhausted)."""
    if debt.attempts >= len(policy.retry_after):
        return None
    return debt.created_at + policy.retry_after[debt.attempts]


def may_lift_deny(card: TransitCard) -> bool:
    """A card leaves the deny list when it owes nothing and its open aggregate is verified."""
    if card.debts:
        return False
    agg = card.open_agg
    return agg is None or agg.verified
