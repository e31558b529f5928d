"""Rider categories and fare products.

Reference, fare_products.txt, rider_category_id: "Identifies a rider category eligible for the
fare product.  If fare_products.rider_category_id is empty, the fare product is eligible for any
rider_category_id."  A category named on no row of a product is not eligible for it: no
fallback to another category's price.
"""

from __future__ import annotations

from fare.engine import price
from fare.explain import ChargeKind
from tests.fare_helpers import Taps, at, feed

FILES = dict(
    rider_categories="rider_category_id,rider_category_name,is_default_fare_category\n"
                     "adult,Adult,1\nstudent,Student,0\nvisitor,Visitor,0\n",
    routes="route_id,route_short_name,route_type,network_id\nb,B,3,bus\nx,X,3,express\n",
    fare_products="fare_product_id,amount,currency,rider_category_id\n"
                  "bus,2.00,USD,adult\nbus,1.00,USD,student\n"
                  "express,5.00,USD,\n"
                  "xfer,-0.50,USD,adult\n",
    fare_leg_rules="leg_group_id,network_id,fare_product_id\nbus,bus,bus\nexpress,express,express\n",
    # Type 1: "A + AB + B", AB being the transfer product.
    fare_transfer_rules="from_leg_group_id,to_leg_group_id,transfer_count,duration_limit,"
                        "duration_limit_type,fare_transfer_type,fare_product_id\n"
                        "bus,bus,1,3600,1,1,xfer\n",
)


def test_a_category_with_no_row_is_not_eligible() -> None:
    f = feed(**FILES)
    t = Taps(at(2024, 3, 4, 8), category="visitor")
    charges = price(f, [t(0, "s1", "b")])
    # Visitors are named on no row of "bus": not eligible, the fare is unknown (not adult 2.00).
    assert [(c.kind, c.amount) for c in charges] == [(ChargeKind.UNPRICED, 0)]
    # "express" has a row with no category: "eligible for any rider_category_id".
    t = Taps(at(2024, 3, 4, 8), card="c2", category="visitor")
    assert [c.amount for c in price(f, [t(0, "s1", "x")])] == [500]


def test_a_transfer_product_follows_the_same_rule() -> None:
    f = feed(**FILES)
    # Adult: 2.00 + (-0.50 + 2.00) = 3.50 ("A + AB + B").
    t = Taps(at(2024, 3, 4, 8), category="adult")
    assert sum(c.amount for c in price(f, [t(0, "s1", "b"), t(20, "s2", "b")])) == 350
    # Student: eligible for "bus" (1.00) but named on no row of "xfer": no transfer, 1 + 1.
    t = Taps(at(2024, 3, 4, 8), card="c2", category="student")
    assert sum(c.amount for c in price(f, [t(0, "s1", "b"), t(20, "s2", "b")])) == 200
