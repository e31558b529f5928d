"""Charges, and the sentence that says why each one is what it is.

A charge keeps the facts (which legs, rules, products, transfer, tier and caps were involved) as
plain values; the text is only rendered when asked for, so pricing a million taps does not build
a million sentences nobody reads.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime
from typing import Final, NamedTuple

from mypy_extensions import mypyc_attr

from fare.currency import format_minor
from fare.legs import Leg
from fare.transfers import Step
from fare.values import Value


class ChargeKind(enum.StrEnum):
    FARE = "fare"  # a tap on, priced (with any transfer it makes)
    MAX_FARE = "max_fare"  # a tap on where the fare needs the tap off: the maximum, for now
    TAP_OFF = "tap_off"  # a tap off: the journey repriced, usually a refund of the max fare
    INCOMPLETE = "incomplete"  # no tap off came: the maximum fare stands, outside the caps
    MISSING_TAP_ON = "missing_tap_on"  # a tap off with no tap on
    UNPRICED = "unpriced"  # no fare leg rule matches: the fare table has a gap


class Detail(NamedTuple):
    """Why a charge is what it is (``Charge.detail``)."""

    fare_before: int  # the journey's fare before this tap (uncapped, before tiers)
    fare_after: int
    legs: tuple[Leg, ...]
    steps: tuple[Step, ...]
    tier_id: str | None = None
    tier_bp: int = 0
    capped_by: tuple[str, ...] = ()
    waived: int = 0  # what caps took off this charge
    max_fare: int = 0
    max_source: str = ""


@mypyc_attr(acyclic=True)
class Charge(Value):
    """An amount (minor units; negative = refund) charged to a card because of one tap.

    The fields after ``time`` are the facts behind it (also as ``detail``); they are flat here
    because a charge is made for every tap and one object is cheaper than two.
    """

    _fields = ("tap_id", "card", "amount", "currency", "kind", "journey", "time", "fare_before",
               "fare_after", "legs", "steps", "tier_id", "tier_bp", "capped_by", "waived",
               "max_fare", "max_source")
    __slots__ = _fields
    tap_id: Final[str]
    card: Final[str]
    amount: Final[int]
    currency: Final[str]
    kind: Final[ChargeKind]
    journey: Final[int]  # the card's journey number the charge belongs to
    time: Final[datetime]
    fare_before: Final[int]
    fare_after: Final[int]
    legs: Final[tuple[Leg, ...]]
    steps: Final[tuple[Step, ...]]
    tier_id: Final[str | None]
    tier_bp: Final[int]
    capped_by: Final[tuple[str, ...]]
    waived: Final[int]
    max_fare: Final[int]
    max_source: Final[str]

    def __init__(
        self, tap_id: str, card: str, amount: int, currency: str, kind: ChargeKind, journey: int,
        time: datetime, fare_before: int = 0, fare_after: int = 0, legs: tuple[Leg, ...] = (),
        steps: tuple[Step, ...] = (), tier_id: str | None = None, tier_bp: int = 0,
        capped_by: tuple[str, ...] = (), waived: int = 0, max_fare: int = 0, max_source: str = "",
    ) -> None:
        self.tap_id = tap_id
        self.card = card
        self.amount = amount
        self.currency = currency
        self.kind = kind
        self.journey = journey
        self.time = time
        self.fare_before = fare_before
        self.fare_after = fare_after
        self.legs = legs
        self.steps = steps
        self.tier_id = tier_id
        self.tier_bp = tier_bp
        self.capped_by = capped_by
        self.waived = waived
        self.max_fare = max_fare
        self.max_source = max_source

    def _values(self) -> tuple[object, ...]:
        return (self.tap_id, self.card, self.amount, self.currency, self.kind, self.journey,
                self.time, self.fare_before, self.fare_after, self.legs, self.steps, self.tier_id,
                self.tier_bp, self.capped_by, self.waived, self.max_fare, self.max_source)

    @property
    def detail(self) -> Detail:
        return Detail(self.fare_before, self.fare_after, self.legs, self.steps, self.tier_id,
                      self.tier_bp, self.capped_by, self.waived, self.max_fare, self.max_source)

    @property
    def explain(self) -> str:
        return render(self)

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of the CLI: tap_id, card, amount, currency, explain."""
        return {"tap_id": self.tap_id, "card": self.card, "amount": self.amount,
                "currency": self.currency, "explain": self.explain}


def render(charge: Charge) -> str:
    d = charge
    cur = charge.currency

    def money(v: int) -> str:
        return f"{format_minor(v, cur)} {cur}"

    parts: list[str] = []
    kind = charge.kind
    if kind is ChargeKind.MAX_FARE:
        parts.append(f"tap on, fare depends on the tap off: {money(d.max_fare)} charged for now "
                     f"({d.max_source})")
    elif kind is ChargeKind.INCOMPLETE:
        parts.append(f"incomplete journey (no tap off): {money(d.max_fare)} ({d.max_source}), "
                     "not counted towards caps")
        return "; ".join(parts)
    elif kind is ChargeKind.MISSING_TAP_ON:
        if d.max_fare:
            parts.append(f"tap off without a tap on: {money(d.max_fare)} ({d.max_source}), "
                         "not counted towards caps")
        else:
            parts.append("tap off without a tap on: the fare does not depend on it, "
                         "nothing charged")
        return "; ".join(parts)
    if kind is not ChargeKind.MAX_FARE and d.steps:
        parts.append(_steps(d, money))
    if d.fare_before and d.fare_after != d.fare_before:
        parts.append(f"journey fare {money(d.fare_before)} -> {money(d.fare_after)}")
    if d.tier_bp:
        parts.append(f"monthly tier {d.tier_id}: {d.tier_bp / 100:g}% off")
    if d.capped_by:
        parts.append(f"capped by {', '.join(d.capped_by)} ({money(d.waived)} waived)")
    return "; ".join(parts)


def _steps(d: Charge, fmt: Callable[[int], str]) -> str:
    out: list[str] = []
    for step in d.steps:
        eff = step.leg
        legs = d.legs[eff.first:eff.last + 1]
        where = "route " + "+".join(leg.route_id for leg in legs)
        price = eff.price
        if price is None:
            out.append(f"{where}: no fare leg rule matches (unpriced)")
            continue
        rule = price.rule
        desc = f"{where}: {price.product.fare_product_id} {fmt(price.amount)}"
        desc += f" (fare_leg_rules line {rule.line}"
        if price.leg_group_id:
            desc += f", group {price.leg_group_id}"
        if price.product.fare_media_id:
            desc += f", media {price.product.fare_media_id}"
        if price.product.rider_category_id:
            desc += f", category {price.product.rider_category_id}"
        desc += ")"
        tr = step.transfer
        if tr is not None:
            desc += (f", transfer type {int(tr.fare_transfer_type)} "
                     f"(fare_transfer_rules line {tr.line}"
                     + (f", product {tr.fare_product_id} {fmt(step.transfer_cost)}"
                        if tr.fare_product_id else "")
                     + f") adds {fmt(step.added)}")
        elif len(out) > 0:
            desc += ", no transfer applies"
        out.append(desc)
    return "; ".join(out)
