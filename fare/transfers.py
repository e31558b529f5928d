"""fare_transfer_rules.txt: the price of a journey of several legs.

Walking the effective legs in order, each transfer from leg P to leg L looks up the rules from
P's leg group to L's leg group.  Rules are directional: a rule from A to B says nothing about B
to A.  An empty from_leg_group_id "corresponds to all leg groups defined under
fare_leg_rules.leg_group_id excluding the ones listed under fare_transfer_rules.from_leg_group_id"
(anywhere in the file), and the same for to_leg_group_id: each side is matched on its own, so
with rules (ferry, -) and (-, metro) a ferry -> metro transfer matches neither.

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

Currencies: every product row has its own ("currency: The currency of the cost of the fare
product"), and each transfer type is a sum of products (A + AB, A + AB + B, AB in place of A).
The reference converts no currency, so a sum of two currencies is undefined: a rule is not
applied between legs whose products are in different currencies, nor when the rider's row of
its transfer product is in another currency than the legs'.  The legs are then separate
sub-journeys, each charged in its own currency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

from mypy_extensions import mypyc_attr

from fare.legs import EffectiveLeg, Leg
from fare.model import DurationType, FareProduct, FareTransferRule, TransferType
from fare.values import Value

_NO_LIMIT: Final = 1 << 30
_A_PLUS_AB: Final = int(TransferType.A_PLUS_AB)
_A_PLUS_AB_PLUS_B: Final = int(TransferType.A_PLUS_AB_PLUS_B)


@mypyc_attr(acyclic=True)
class Step(Value):
    """What one effective leg added to its journey's total, and by which transfer rule."""

    _fields = ("leg", "transfer", "transfer_cost", "added")
    __slots__ = _fields
    leg: Final[EffectiveLeg]
    transfer: Final[FareTransferRule | None]
    transfer_cost: Final[int]  # the transfer product's price (AB)
    added: Final[int]

    def __init__(self, leg: EffectiveLeg, transfer: FareTransferRule | None, transfer_cost: int,
                 added: int) -> None:
        self.leg = leg
        self.transfer = transfer
        self.transfer_cost = transfer_cost
        self.added = added

    def _values(self) -> tuple[object, ...]:
        return (self.leg, self.transfer, self.transfer_cost, self.added)


class JourneyPrice(NamedTuple):
    total: int
    steps: tuple[Step, ...]


@mypyc_attr(acyclic=True)
class Walk(Value):
    """Where :func:`price_journey` stands after some effective legs of a journey.

    Pricing is a left fold over the effective legs, so a journey that grows by a leg continues
    from the walk of its earlier legs (:func:`walk_on`) and gets exactly what pricing all of
    them afresh gives, at the cost of the one new leg.
    """

    _fields = ("total", "steps", "prev", "prev_charged", "run_pair", "run_first", "run_count")
    __slots__ = _fields
    total: Final[int]
    steps: Final[tuple[Step, ...]]
    prev: Final[EffectiveLeg | None]  # the last effective leg, None after an unpriced one
    prev_charged: Final[bool]  # the previous leg's own product is in the total
    run_pair: Final[tuple[str, str] | None]  # leg groups of the current run of transfers
    run_first: Final[EffectiveLeg | None]  # the leg that run started from
    run_count: Final[int]

    def __init__(self, total: int, steps: tuple[Step, ...], prev: EffectiveLeg | None,
                 prev_charged: bool, run_pair: tuple[str, str] | None,
                 run_first: EffectiveLeg | None, run_count: int) -> None:
        self.total = total
        self.steps = steps
        self.prev = prev
        self.prev_charged = prev_charged
        self.run_pair = run_pair
        self.run_first = run_first
        self.run_count = run_count

    def _values(self) -> tuple[object, ...]:
        return (self.total, self.steps, self.prev, self.prev_charged, self.run_pair,
                self.run_first, self.run_count)


START: Final = Walk(0, (), None, False, None, None, 0)


@mypyc_attr(acyclic=True)
class TransferOption:
    """A transfer rule as :func:`walk_on` weighs it, its fields resolved once."""

    __slots__ = ("costs", "duration", "from_departure", "has_duration", "kind", "limit",
                 "product", "rank", "rule", "to_departure")

    def __init__(self, rule: FareTransferRule) -> None:
        self.rule = rule
        count = rule.transfer_count
        limited = count is not None and count != -1
        self.limit: Final[int] = count if count is not None and limited else -1  # -1: none
        self.rank: Final[int] = self.limit if limited else _NO_LIMIT  # fewer transfers first
        self.has_duration: Final[bool] = rule.duration_limit is not None
        self.duration: Final[int] = rule.duration_limit or 0
        kind = rule.duration_limit_type
        self.from_departure: Final[bool] = kind in (DurationType.DEPARTURE_TO_ARRIVAL,
                                                    DurationType.DEPARTURE_TO_DEPARTURE)
        self.to_departure: Final[bool] = kind in (DurationType.DEPARTURE_TO_DEPARTURE,
                                                  DurationType.ARRIVAL_TO_DEPARTURE)
        self.product: Final[str | None] = rule.fare_product_id
        self.kind: Final[int] = int(rule.fare_transfer_type)
        # category -> medium -> the transfer product's row (None: not eligible), as found
        self.costs: Final[dict[str | None, dict[str | None, FareProduct | None]]] = {}

    def cost(self, leg: Leg, transfer_cost: Callable[[FareTransferRule, Leg], FareProduct | None]
             ) -> FareProduct | None:
        """The row of this rule's product for the rider of ``leg`` (memoised)."""
        by_media = self.costs.get(leg.category)
        if by_media is None:
            by_media = self.costs[leg.category] = {}
        media = leg.media
        if media in by_media:
            return by_media[media]
        found = by_media[media] = transfer_cost(self.rule, leg)
        return found


class TransferIndex:
    """Transfer rules by (from leg group, to leg group), with the empty-field fallback."""

    def __init__(self, rules: Sequence[FareTransferRule]) -> None:
        self.rules = tuple(rules)
        # The groups named anywhere in each column: what an empty entry excludes.
        self.from_named = frozenset(
            r.from_leg_group_id for r in rules if r.from_leg_group_id is not None)
        self.to_named = frozenset(r.to_leg_group_id for r in rules if r.to_leg_group_id is not None)
        self._cache: dict[tuple[str, str], tuple[FareTransferRule, ...]] = {}
        self._options: dict[str, dict[str, tuple[TransferOption, ...]]] = {}
        self._from: dict[str, tuple[FareTransferRule, ...]] = {}
        self.gaps: dict[str, float] = {}

    def between(self, from_group: str, to_group: str) -> tuple[FareTransferRule, ...]:
        key = (from_group, to_group)
        found = self._cache.get(key)
        if found is None:
            other_to = to_group not in self.to_named
            found = tuple(
                r for r in self.leaving(from_group)
                if (r.to_leg_group_id == to_group if r.to_leg_group_id is not None else other_to))
            self._cache[key] = found
        return found

    def options(self, from_group: str, to_group: str) -> tuple[TransferOption, ...]:
        """``between`` as :class:`TransferOption` values (two lookups, no key to build)."""
        by_to = self._options.get(from_group)
        if by_to is None:
            by_to = self._options[from_group] = {}
        found = by_to.get(to_group)
        if found is None:
            found = by_to[to_group] = tuple(
                TransferOption(r) for r in self.between(from_group, to_group))
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
            named = from_group in self.from_named
            found = tuple(r for r in self.rules
                          if (r.from_leg_group_id == from_group if named
                              else r.from_leg_group_id is None))
            self._from[from_group] = found
        return found


def price_journey(
    legs: Sequence[Leg],
    effective: Sequence[EffectiveLeg],
    index: TransferIndex,
    transfer_cost: Callable[[FareTransferRule, Leg], FareProduct | None],
) -> JourneyPrice:
    """Total of a sequence of effective legs with the transfer rules applied."""
    walk = START
    all_legs = tuple(legs)
    for eff in effective:
        walk = walk_on(walk, all_legs, eff, index, transfer_cost)
    return JourneyPrice(walk.total, walk.steps)


def walk_on(
    walk: Walk,
    legs: tuple[Leg, ...],
    eff: EffectiveLeg,
    index: TransferIndex,
    transfer_cost: Callable[[FareTransferRule, Leg], FareProduct | None],
) -> Walk:
    """The walk one effective leg further (``legs``: the journey's legs ``eff`` indexes)."""
    price = eff.price
    steps = walk.steps
    if price is None:
        return Walk(walk.total, (*steps, Step(eff, None, 0, 0)), None, walk.prev_charged, None,
                    walk.run_first, walk.run_count)
    prev = walk.prev
    prev_price = prev.price if prev is not None else None
    group = price.leg_group_id
    chosen: TransferOption | None = None
    best_rank = best_added = best_cost = 0
    same = False
    count = 1
    from_group = to_group = ""
    currency = price.product.currency
    if prev is not None and prev_price is not None and prev_price.leg_group_id is not None \
            and group is not None and prev_price.product.currency == currency:
        from_group, to_group = prev_price.leg_group_id, group
        run_pair = walk.run_pair
        same = run_pair is not None and run_pair[0] == from_group and run_pair[1] == to_group
        count = walk.run_count + 1 if same else 1
        run_first = walk.run_first
        first = run_first if same and run_first is not None else prev
        for opt in index.options(from_group, to_group):
            limit = opt.limit
            if limit != -1 and count > limit:
                continue
            if opt.has_duration and not _within(opt, legs, first, eff):
                continue
            cost = 0
            if opt.product is not None:
                found = opt.cost(legs[eff.first], transfer_cost)
                if found is None:  # the rider is not eligible for the transfer product
                    continue
                if found.currency != currency:  # AB cannot be added to A or B: not applied
                    continue
                cost = found.amount
            kind = opt.kind
            if kind == _A_PLUS_AB:
                added = cost
            elif kind == _A_PLUS_AB_PLUS_B:
                added = cost + price.amount
            else:
                added = cost - (prev_price.amount if walk.prev_charged else 0)
            rank = opt.rank
            if chosen is None or rank < best_rank or (rank == best_rank and added < best_added):
                chosen, best_rank, best_added, best_cost = opt, rank, added, cost
    if chosen is None:
        return Walk(walk.total + price.amount, (*steps, Step(eff, None, 0, price.amount)), eff,
                    True, None, None, 0)
    step = Step(eff, chosen.rule, best_cost, best_added)
    charged = chosen.kind == _A_PLUS_AB_PLUS_B
    if same:
        return Walk(walk.total + best_added, (*steps, step), eff, charged, walk.run_pair,
                    walk.run_first, count)
    return Walk(walk.total + best_added, (*steps, step), eff, charged, (from_group, to_group),
                prev, 1)


def _within(opt: TransferOption, legs: tuple[Leg, ...], first: EffectiveLeg,
            current: EffectiveLeg) -> bool:
    start = legs[first.first].on_ts if opt.from_departure else legs[first.last].arrival_ts
    end = legs[current.first].on_ts if opt.to_departure else legs[current.last].arrival_ts
    return end - start <= opt.duration
