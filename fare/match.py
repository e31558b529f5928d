"""Which fare leg rule prices a leg, and which row of its fare product the rider pays.

The spec gives an empty field two meanings, chosen by the presence of the ``rule_priority``
column in fare_leg_rules.txt:

* without it, an empty network_id / from_area_id / to_area_id means "every value not listed
  elsewhere".  Read as the spec's own procedure: among the rules still in play, if any names the
  leg's value exactly, only those stay; otherwise the ones left empty do.  Fields are narrowed in
  the order network, from area, to area.  Timeframe fields never compete this way: empty there
  means the time does not matter.
* with it, an empty field simply does not take part in matching, every rule whose given fields
  all match is a match, and the matches with the highest ``rule_priority`` win.

When several rules survive (different fare products for the same leg) the rider is charged the
cheapest product they are eligible for: what a fair validator would pick for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from fare.model import FareLegRule, FareProduct


class LegPrice(NamedTuple):
    """The price of one (effective) leg and where it came from."""

    amount: int
    rule: FareLegRule
    product: FareProduct
    leg_group_id: str | None
    category_fallback: bool  # the rider's category had no row: the default category's was used


def resolve_product(
    rows: Sequence[FareProduct], category: str | None, media: str | None, default: str | None
) -> tuple[FareProduct, bool] | None:
    """The row of a fare product for a rider category and fare media, most specific first.

    A row with no category is for everyone; a row with no media is for an unknown medium
    (cash, or a tap that did not say).  A rider whose category has no row pays the default
    category's price (the second value says so).
    """
    cat = category if category is not None else default
    found = _pick(rows, cat, media)
    if found is not None:
        return found, False
    if cat != default and default is not None:
        found = _pick(rows, default, media)
        if found is not None:
            return found, True
    return None


def _pick(rows: Sequence[FareProduct], cat: str | None, media: str | None) -> FareProduct | None:
    best: FareProduct | None = None
    best_rank = 9
    for row in rows:
        if row.rider_category_id is not None and row.rider_category_id != cat:
            continue
        if row.fare_media_id is not None and row.fare_media_id != media:
            continue
        rank = (row.rider_category_id is None) * 2 + (row.fare_media_id is None)
        if rank < best_rank:
            best, best_rank = row, rank
    return best


class LegMatcher:
    """fare_leg_rules.txt, queried by the characteristics of a leg."""

    def __init__(self, rules: Sequence[FareLegRule], priority: bool) -> None:
        self.rules = tuple(rules)
        self.priority = priority

    def candidates(
        self,
        network: str | None,
        from_areas: frozenset[str],
        to_areas: frozenset[str],
        from_tfs: frozenset[str],
        to_tfs: frozenset[str],
    ) -> list[FareLegRule]:
        """Every rule that matches the leg (before choosing among products)."""
        rules = [
            r for r in self.rules
            if (r.from_timeframe_group_id is None or r.from_timeframe_group_id in from_tfs)
            and (r.to_timeframe_group_id is None or r.to_timeframe_group_id in to_tfs)
        ]
        if self.priority:
            rules = [
                r for r in rules
                if (r.network_id is None or r.network_id == network)
                and (r.from_area_id is None or r.from_area_id in from_areas)
                and (r.to_area_id is None or r.to_area_id in to_areas)
            ]
            if not rules:
                return []
            top = max(r.rule_priority for r in rules)
            return [r for r in rules if r.rule_priority == top]
        exact = [r for r in rules if r.network_id is not None and r.network_id == network]
        rules = exact or [r for r in rules if r.network_id is None]
        exact = [r for r in rules if r.from_area_id is not None and r.from_area_id in from_areas]
        rules = exact or [r for r in rules if r.from_area_id is None]
        exact = [r for r in rules if r.to_area_id is not None and r.to_area_id in to_areas]
        return exact or [r for r in rules if r.to_area_id is None]

    def uses(self, network: str | None) -> tuple[bool, bool, bool, bool]:
        """Whether rules that could match a leg on ``network`` look at (from area, to area,
        from timeframe, to timeframe): what a price can depend on, hence what to cache by."""
        rules = [r for r in self.rules if r.network_id is None or r.network_id == network]
        return (
            any(r.from_area_id is not None for r in rules),
            any(r.to_area_id is not None for r in rules),
            any(r.from_timeframe_group_id is not None for r in rules),
            any(r.to_timeframe_group_id is not None for r in rules),
        )
