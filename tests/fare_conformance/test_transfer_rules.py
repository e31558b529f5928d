"""fare_transfer_rules.txt: empty leg groups.

Reference: "An empty entry in fare_transfer_rules.from_leg_group_id corresponds to all leg
groups defined under fare_leg_rules.leg_group_id excluding the ones listed under
fare_transfer_rules.from_leg_group_id", and the same for to_leg_group_id.
"""

from __future__ import annotations

from fare.engine import price
from tests.fare_helpers import Taps, at, feed

FILES = dict(
    routes="route_id,route_short_name,route_type,network_id\n"
           "f,F,4,ferry\nm,M,1,metro\nb,B,3,bus\n",
    fare_products="fare_product_id,amount,currency\n"
                  "ferry,3.00,USD\nmetro,4.00,USD\nbus,2.00,USD\n",
    fare_leg_rules="leg_group_id,network_id,fare_product_id\n"
                   "ferry,ferry,ferry\nmetro,metro,metro\nbus,bus,bus\n",
    # Type 0 with no product: "A + AB", AB costing nothing -- the second leg is free.
    fare_transfer_rules="from_leg_group_id,to_leg_group_id,fare_transfer_type\n"
                        "ferry,,0\n,metro,0\n",
)


def journey(first: str, second: str, card: str) -> int:
    f = feed(**FILES)
    t = Taps(at(2024, 3, 4, 8), card=card)
    return sum(c.amount for c in price(f, [t(0, "s1", first), t(20, "s2", second)]))


def test_ferry_to_metro_matches_neither_rule() -> None:
    # (ferry,): its empty to_leg_group_id excludes metro, "listed under
    # fare_transfer_rules.to_leg_group_id".  (,metro): its empty from_leg_group_id excludes
    # ferry, listed under from_leg_group_id.  No transfer: 3.00 + 4.00.
    assert journey("f", "m", "c1") == 700


def test_ferry_to_bus_and_bus_to_metro_are_free_transfers() -> None:
    # ferry -> bus: (ferry,) matches, bus being listed under no to_leg_group_id: 3.00 + 0.
    assert journey("f", "b", "c2") == 300
    # bus -> metro: (,metro) matches, bus being listed under no from_leg_group_id: 2.00 + 0.
    assert journey("b", "m", "c3") == 200
    # metro -> bus: (ferry,) names another from group; (,metro) takes metro as a from group
    # (not listed there) but names another to group.  No transfer: 4.00 + 2.00.
    assert journey("m", "b", "c4") == 600
