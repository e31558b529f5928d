"""Which fare leg rule prices a leg, and which row of its fare product the rider pays.

The spec gives an empty field two meanings, chosen by the presence of the ``rule_priority``
column in fare_leg_rules.txt:

* without it, an empty network_id / from_area_id / to_area_id "corresponds to all networks
  [areas] ... excluding the ones listed under" that column -- anywhere in the file, not only
  among the rules of the leg's network.  Each field is matched on its own: a rule naming a value
  matches a leg with that value; an empty one matches a leg whose value (or, for areas, none of
  whose stop's areas) is named by no rule in that column.  So exact and empty never both match
  one field, and the reference's "exact match first, else the empty entries" falls out.
  Timeframe fields never compete this way: empty there means the time does not matter.
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


def resolve_product(
    rows: Sequence[FareProduct], category: str | None, media: str | None, default: str | None
) -> FareProduct | None:
    """The row of a fare product for a rider category and fare media, most specific first.

    A row with no category is for everyone; a row with no media is for an unknown medium
    (cash, or a tap that did not say).  A tap with no category rides as the default category.
    A rider whose category has no row is not eligible for the product (the reference's
    ``rider_category_id``: "Identifies a rider category eligible for the fare product"): None.
    """
    return _pick(rows, category if category is not None else default, media)


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
        # The values named anywhere in each column: what an empty entry excludes.
        self.networks = frozenset(r.network_id for r in rules if r.network_id is not None)
        self.from_areas = frozenset(r.from_area_id for r in rules if r.from_area_id is not None)
        self.to_areas = frozenset(r.to_area_id for r in rules if r.to_area_id is not None)

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
        other_net = network is None or network not in self.networks
        other_from = from_areas.isdisjoint(self.from_areas)
        other_to = to_areas.isdisjoint(self.to_areas)
        return [
            r for r in rules
            if (r.network_id == network if r.network_id is not None else other_net)
            and (r.from_area_id in from_areas if r.from_area_id is not None else other_from)
            and (r.to_area_id in to_areas if r.to_area_id is not None else other_to)
        ]

    def network_rules(self, network: str | None) -> list[FareLegRule]:
        """The rules that can match some leg on ``network``."""
        if self.priority:
            return [r for r in self.rules if r.network_id is None or r.network_id == network]
        if network is not None and network in self.networks:
            return [r for r in self.rules if r.network_id == network]
        return [r for r in self.rules if r.network_id is None]

    def uses(self, network: str | None) -> tuple[bool, bool, bool, bool]:
        """Whether rules that could match a leg on ``network`` look at (from area, to area,
        from timeframe, to timeframe): what a price can depend on, hence what to cache by.

        Without rule_priority an empty from_area_id still looks at the boarding stop (is it in
        an area named elsewhere?), so any named from area makes the boarding area count.  The
        destination counts only when a rule of the network names a to area itself: a network
        priced without its destination (no tap off) takes the unknown destination as an area
        named by no rule, so its empty to_area_id entries match.
        """
        rules = self.network_rules(network)
        from_area = any(r.from_area_id is not None for r in rules)
        if not self.priority and rules and self.from_areas:
            from_area = True
        return (
            from_area,
            any(r.to_area_id is not None for r in rules),
            any(r.from_timeframe_group_id is not None for r in rules),
            any(r.to_timeframe_group_id is not None for r in rules),
        )
