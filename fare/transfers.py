"""fare_transfer_rules.txt: the price of a journey of several legs.

Walking the effective legs in order, each transfer from leg P to leg L looks up the rules from
P's leg group to L's leg group.  Rules are directional: a rule from A to B says nothing about B
to A.  An empty from/to group means "any group not named elsewhere", read like the leg rules:
among the rules, the ones naming the group exactly win; if none does, the empty ones apply.

* transfer_count counts consecutive transfers between the same pair of groups (it may only be
  given when from = to); -1 is no limit.  The rule with the smallest count that still covers the
  transfer is chosen.
* duration_limit is measured from the first leg of that run of consecutive transfers (spec), from
  its departure (types 0, 1) or arrival (2, 3) validation, to the current leg's departure (1, 2)
  or arrival (0, 3).  The limit is inclusive.
* fare_transfer_type 0: A + AB; 1: A + AB + B; 2: AB, where AB replaces the from-leg's own product
  if that product was charged (the first transfer of a sub-journey), and is added otherwise —
  matching the spec's table (A>B: AB, then B>C: S + BC).
* No matching rule: the legs are separate; the later one starts a new sub-journey.
A leg whose fare is unknown (no leg rule matched) adds nothing and breaks the chain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from fare.legs import EffectiveLeg, Leg
from fare.model import DurationType, FareTransferRule, TransferType

_NO_LIMIT = 1 << 30


class Step(NamedTuple):
    """What one effective leg added to its journey's total, and by which transfer rule."""

    leg: EffectiveLeg
    transfer: FareTransferRule | None
    transfer_cost: int  # the transfer product's price (AB)
    added: int


class JourneyPrice(NamedTuple):
    total: int
    steps: tuple[Step, ...]


class TransferIndex:
    """Transfer rules by (from leg group, to leg group), with the empty-field fallback."""

    def __init__(self, rules: Sequence[FareTransferRule]) -> None:
        self.rules = tuple(rules)
        self._cache: dict[tuple[str, str], tuple[FareTransferRule, ...]] = {}
        self._from: dict[str, tuple[FareTransferRule, ...]] = {}
        self.gaps: dict[str, float] = {}

    def between(self, from_group: str, to_group: str) -> tuple[FareTransferRule, ...]:
        key = (from_group, to_group)
        found = self._cache.get(key)
        if found is None:
            rules = [r for r in self.rules if r.from_leg_group_id == from_group] or [
                r for r in self.rules if r.from_leg_group_id is None
            ]
            rules = [r for r in rules if r.to_leg_group_id == to_group] or [
                r for r in rules if r.to_leg_group_id is None
            ]
            found = tuple(rules)
            self._cache[key] = found
        return found

    def longest_gap(self, from_group: str) -> float:
        """The longest duration limit of the rules out of a group (inf: no limit; -inf: no
        rule)."""
        gap = self.gaps.get(from_group)
        if gap is None:
            rules = self.leaving(from_group)
            gap = max((float(r.duration_limit) if r.duration_limit is not None else float("inf")
                       for r in rules), default=float("-inf"))
            self.gaps[from_group] = gap
        return gap

    def leaving(self, from_group: str) -> tuple[FareTransferRule, ...]:
        """Every rule that could apply to a transfer out of ``from_group`` (any to group)."""
        found = self._from.get(from_group)
        if found is None:
            found = tuple(r for r in self.rules if r.from_leg_group_id == from_group) or tuple(
                r for r in self.rules if r.from_leg_group_id is None
            )
            self._from[from_group] = found
        return found


class Walk(NamedTuple):
    """Where :func:`price_journey` stands after some effective legs of a journey.

    Pricing is a left fold over the effective legs, so a journey that grows by a leg continues
    from the walk of its earlier legs (:func:`walk_on`) and gets exactly what pricing all of
    them afresh gives, at the cost of the one new leg.
    """

    total: int
    steps: tuple[Step, ...]
    prev: EffectiveLeg | None  # the last effective leg, None after an unpriced one
    prev_charged: bool  # the previous leg's own product is in the total
    run_pair: tuple[str, str] | None  # leg groups of the current run of transfers
    run_first: EffectiveLeg | None  # the leg that run started from
    run_count: int


START = Walk(0, (), None, False, None, None, 0)


def price_journey(
    legs: Sequence[Leg],
    effective: Sequence[EffectiveLeg],
    index: TransferIndex,
    transfer_cost: Callable[[FareTransferRule, Leg], int | None],
) -> JourneyPrice:
    """Total of a sequence of effective legs with the transfer rules applied."""
    walk = START
    for eff in effective:
        walk = walk_on(walk, legs, eff, index, transfer_cost)
    return JourneyPrice(walk.total, walk.steps)


def walk_on(
    walk: Walk,
    legs: Sequence[Leg],
    eff: EffectiveLeg,
    index: TransferIndex,
    transfer_cost: Callable[[FareTransferRule, Leg], int | None],
) -> Walk:
    """The walk one effective leg further (``legs``: the journey's legs ``eff`` indexes)."""
    price = eff.price
    if price is None:
        return Walk(walk.total, (*walk.steps, Step(eff, None, 0, 0)), None, walk.prev_charged,
                    None, walk.run_first, walk.run_count)
    prev = walk.prev
    run_pair = walk.run_pair
    chosen: tuple[FareTransferRule, int, int] | None = None
    pair: tuple[str, str] | None = None
    count = 1
    if prev is not None and prev.price is not None and prev.price.leg_group_id is not None \
            and price.leg_group_id is not None:
        pair = (prev.price.leg_group_id, price.leg_group_id)
        same = pair == run_pair
        count = walk.run_count + 1 if same else 1
        run_first = walk.run_first
        first = run_first if same and run_first is not None else prev
        best_key: tuple[int, int] | None = None
        for rule in index.between(*pair):
            limit = rule.transfer_count
            if limit is not None and limit != -1 and count > limit:
                continue
            if rule.duration_limit is not None and not _within(rule, legs, first, eff):
                continue
            cost = 0
            if rule.fare_product_id is not None:
                found = transfer_cost(rule, legs[eff.first])
                if found is None:  # the rider is not eligible for the transfer product
                    continue
                cost = found
            kind = rule.fare_transfer_type
            if kind == TransferType.A_PLUS_AB:
                added = cost
            elif kind == TransferType.A_PLUS_AB_PLUS_B:
                added = cost + price.amount
            else:
                added = cost - (prev.price.amount if walk.prev_charged else 0)
            key = (limit if limit is not None and limit != -1 else _NO_LIMIT, added)
            if best_key is None or key < best_key:
                best_key, chosen = key, (rule, cost, added)
    if chosen is None:
        return Walk(walk.total + price.amount,
                    (*walk.steps, Step(eff, None, 0, price.amount)), eff, True, None, None, 0)
    rule, cost, added = chosen
    step = Step(eff, rule, cost, added)
    charged = rule.fare_transfer_type == TransferType.A_PLUS_AB_PLUS_B
    if pair == run_pair:
        return Walk(walk.total + added, (*walk.steps, step), eff, charged, run_pair,
                    walk.run_first, count)
    return Walk(walk.total + added, (*walk.steps, step), eff, charged, pair, prev, 1)


def _within(rule: FareTransferRule, legs: Sequence[Leg], first: EffectiveLeg,
            current: EffectiveLeg) -> bool:
    kind = rule.duration_limit_type
    assert rule.duration_limit is not None
    from_departure = kind in (DurationType.DEPARTURE_TO_ARRIVAL,
                              DurationType.DEPARTURE_TO_DEPARTURE)
    to_departure = kind in (DurationType.DEPARTURE_TO_DEPARTURE, DurationType.ARRIVAL_TO_DEPARTURE)
    start = legs[first.first].on_ts if from_departure else legs[first.last].arrival_ts
    end = legs[current.first].on_ts if to_departure else legs[current.last].arrival_ts
    return end - start <= rule.duration_limit
