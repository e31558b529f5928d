"""fare_leg_rules.txt: which rule matches a leg, with and without rule_priority.

Reference (fare_leg_rules.txt, network_id): "An empty entry in fare_leg_rules.network_id
corresponds to all networks defined in routes.txt or networks.txt excluding the ones listed
under fare_leg_rules.network_id", and the same for from_area_id / to_area_id ("all areas
defined in areas.area_id excluding the ones listed under ...").  google/transit issue #399:
"since empty value semantics apply to the entire fare_leg_rules file".
"""

from __future__ import annotations

from fare.engine import price
from fare.explain import Charge, ChargeKind
from tests.fare_helpers import Taps, at, feed

AREAS = dict(
    areas="area_id\na1\ninner\nouter\n",
    # s1, s2 in a1; s3 in inner; s4 in outer.  Stops of other names are in no area.
    stops="stop_id,stop_name\ns1,One\ns2,Two\ns3,Three\ns4,Four\nfree,Free\n",
    stop_areas="area_id,stop_id\na1,s1\na1,s2\ninner,s3\nouter,s4\n",
    routes="route_id,route_short_name,route_type,network_id\nrA,A,3,A\nrB,B,3,B\n",
)


def fares(charges: list[Charge]) -> list[tuple[ChargeKind, int]]:
    return [(c.kind, c.amount) for c in charges]


def total(charges: list[Charge]) -> int:
    return sum(c.amount for c in charges)


def test_network_rule_does_not_take_legs_from_an_area_rule_without_priority() -> None:
    # OTP FareLookupServiceTest.presenceOfAreaAndAbsenceOfPriorityLeadsToEmptyResults; issue 14.
    # Rules (A,,) 5.00 and (,a1,a1) 2.00; a network-A leg a1 -> a1.
    # (A,,): its empty from_area_id means areas "excluding the ones listed under
    # fare_leg_rules.from_area_id" -- a1 is listed, so no match.  (,a1,a1): its empty network_id
    # means networks "excluding the ones listed under fare_leg_rules.network_id" -- A is listed.
    # "If the leg does not match any of the rules described above, then the fare is unknown."
    f = feed(**AREAS,
             fare_products="fare_product_id,amount,currency\nnet,5.00,USD\narea,2.00,USD\n",
             fare_leg_rules="network_id,from_area_id,to_area_id,fare_product_id\n"
                            "A,,,net\n,a1,a1,area\n")
    t = Taps(at(2024, 3, 4, 8))
    charges = price(f, [t(0, "s1", "rA"), t(10, "s2", "rA", "off")])
    assert total(charges) == 0
    assert ChargeKind.UNPRICED in {c.kind for c in charges}
    # The same rules on network B (not listed): (,a1,a1) matches a1 -> a1 at 2.00.
    t = Taps(at(2024, 3, 4, 8), card="c2")
    assert total(price(f, [t(0, "s1", "rB"), t(10, "s2", "rB", "off")])) == 200


def test_priority_lets_an_empty_field_not_affect_matching() -> None:
    # OTP FareLookupServiceTest.priorityLeadsToResults.  "If the rule_priority field exists in
    # the file, an empty fare_leg_rules.network_id indicates that the route network of the leg
    # does not affect the matching of this rule" and "the rule or set of rules with the highest
    # value for rule_priority will be selected": (,a1,a1) at priority 2 beats (A,,) at 0.
    f = feed(**AREAS,
             fare_products="fare_product_id,amount,currency\nnet,5.00,USD\narea,2.00,USD\n",
             fare_leg_rules="network_id,from_area_id,to_area_id,fare_product_id,rule_priority\n"
                            "A,,,net,0\n,a1,a1,area,2\n")
    t = Taps(at(2024, 3, 4, 8))
    assert total(price(f, [t(0, "s1", "rA"), t(10, "s2", "rA", "off")])) == 200
    # a1 -> outer: only (A,,) matches ("does not affect the matching"): 5.00.
    t = Taps(at(2024, 3, 4, 8), card="c2")
    assert total(price(f, [t(0, "s1", "rA"), t(10, "s4", "rA", "off")])) == 500


def test_off_peak_leg_does_not_fall_through_to_an_empty_network_rule() -> None:
    # Issue 14: network A's only rule is peak; an empty-network rule prices "all networks ...
    # excluding the ones listed under fare_leg_rules.network_id", and A is listed.  Off peak on
    # A no rule matches: "the fare is unknown".  On B (not listed) the empty rule applies.
    f = feed(**AREAS,
             calendar="service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,"
                      "start_date,end_date\nwk,1,1,1,1,1,1,1,20240101,20241231\n",
             timeframes="timeframe_group_id,start_time,end_time,service_id\n"
                        "peak,07:00:00,09:00:00,wk\n",
             fare_products="fare_product_id,amount,currency\npeak,4.00,USD\nany,3.00,USD\n",
             fare_leg_rules="network_id,from_timeframe_group_id,fare_product_id\n"
                            "A,peak,peak\n,,any\n")
    t = Taps(at(2024, 3, 4, 8))
    assert fares(price(f, [t(0, "free", "rA")])) == [(ChargeKind.FARE, 400)]
    t = Taps(at(2024, 3, 4, 11), card="c2")
    assert fares(price(f, [t(0, "free", "rA")])) == [(ChargeKind.UNPRICED, 0)]
    t = Taps(at(2024, 3, 4, 11), card="c3")
    assert fares(price(f, [t(0, "free", "rB")])) == [(ChargeKind.FARE, 300)]


def test_area_rules_by_departure_and_arrival() -> None:
    # OTP AreasTest: rules (,outer) 1.00, (outer,) 1.50, (inner,outer) 5.00, no rule_priority.
    # inner -> outer: (,outer) has an empty from area, and inner is "listed under
    # fare_leg_rules.from_area_id": only (inner,outer) matches, 5.00.
    # no area -> outer: (,outer) matches (the stop is in no listed area), 1.00.
    # outer -> no area: (outer,) matches, 1.50.  inner -> inner: nothing, unknown.
    f = feed(**AREAS,
             fare_products="fare_product_id,amount,currency\nto_outer,1.00,USD\n"
                           "from_outer,1.50,USD\ninner_outer,5.00,USD\n",
             fare_leg_rules="network_id,from_area_id,to_area_id,fare_product_id\n"
                            ",,outer,to_outer\n,outer,,from_outer\n,inner,outer,inner_outer\n")
    cases = [("s3", "s4", 500), ("free", "s4", 100), ("s4", "free", 150), ("s3", "s3", 0)]
    for n, (on, off, expected) in enumerate(cases):
        t = Taps(at(2024, 3, 4, 8), card=f"c{n}")
        assert total(price(f, [t(0, on, "rA"), t(10, off, "rA", "off")])) == expected, (on, off)


def test_zone_rules_at_priority_one_outrank_cross_zone_rules() -> None:
    # nigiri fares_test.cc kFareTimetable1 (re-expressed): zone-2 rules at priority 1, the
    # cross-zone 1 -> 2 rule with rule_priority empty, which "is treated as zero".  A leg from a
    # stop in zones 1 and 2 to a stop in zone 2 matches both; "the rule or set of rules with the
    # highest value for rule_priority will be selected": the zone-2 fare 3.00, not 4.00.
    f = feed(areas="area_id\n1\n2\n",
             stops="stop_id,stop_name\nC,C\nD,D\n",
             stop_areas="area_id,stop_id\n1,C\n2,C\n2,D\n",
             routes="route_id,route_short_name,route_type,network_id\nl3,3,3,blue\n",
             fare_products="fare_product_id,amount,currency\nblue,3.00,EUR\nfull,4.00,EUR\n",
             fare_leg_rules="leg_group_id,network_id,from_area_id,to_area_id,fare_product_id,"
                            "rule_priority\ncore,,2,2,blue,1\ncore,,1,2,full,\n",
             tz="Europe/Berlin")
    t = Taps(at(2024, 3, 4, 11, tz="Europe/Berlin"))
    assert total(price(f, [t(0, "C", "l3"), t(20, "D", "l3", "off")])) == 300
