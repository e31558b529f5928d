"""Hand-computed cases: transfer counts, the four duration types, caps, tiers, incomplete journeys,
the two meanings of an empty leg-rule field, concessions, and the incremental form."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fare.engine import CardFareState, close_card, price, price_tap
from fare.errors import TapError
from fare.explain import Charge, ChargeKind
from fare.gtfs import load_feed
from fare.model import Feed, Tap
from fare.samples import sample_feed_path
from fare.tapfile import parse_taps
from tests.fare_helpers import Taps, at, feed

CAPS_HEADER = ("cap_id,cap_type,rider_category_id,fare_media_id,network_id,amount,currency,"
               "start_time,start_day,days,threshold,discount_percent,tap_off_window")


def amounts(charges: list[Charge]) -> list[int]:
    return [c.amount for c in charges]


def flat_feed(fare: str = "3.00", caps: str = "", transfers: str = "") -> Feed:
    files = dict(
        routes="route_id,route_short_name,route_type,network_id\nb1,1,3,bus\nb2,2,3,bus\n",
        fare_products=f"fare_product_id,amount,currency\nride,{fare},USD\nhop,0.50,USD\n",
        fare_leg_rules="leg_group_id,network_id,fare_product_id\nbus,bus,ride\n",
    )
    if caps:
        files["fare_caps"] = f"{CAPS_HEADER}\n{caps}\n"
    if transfers:
        files["fare_transfer_rules"] = transfers
    return feed(**files)


# --- transfer_count ---------------------------------------------------------------------------

@pytest.mark.parametrize(("count", "expected"), [
    (1, [300, 50, 300, 50]),  # one transfer per sub-journey, then a new one starts
    (2, [300, 50, 50, 300]),
    (-1, [300, 50, 50, 50]),
])
def test_transfer_count(count: int, expected: list[int]) -> None:
    f = flat_feed(transfers=("from_leg_group_id,to_leg_group_id,transfer_count,fare_transfer_type,"
                             f"fare_product_id\nbus,bus,{count},0,hop\n"))
    t = Taps(at(2024, 3, 4, 9))
    assert amounts(price(f, [t(i * 10, "s1", "b1") for i in range(4)])) == expected


def test_smallest_sufficient_transfer_count_wins() -> None:
    f = flat_feed(transfers=csv_rules(
        "bus,bus,1,0,hop",
        "bus,bus,-1,0,",
    ))
    t = Taps(at(2024, 3, 4, 9))
    # First transfer: count 1 covers it (0.50); later ones only the unlimited, free rule.
    assert amounts(price(f, [t(i * 10, "s1", "b1") for i in range(3)])) == [300, 50, 0]


def csv_rules(*rows: str) -> str:
    return ("from_leg_group_id,to_leg_group_id,transfer_count,fare_transfer_type,"
            "fare_product_id\n" + "\n".join(rows) + "\n")


# --- duration_limit_type, with legs tapped on and off ------------------------------------------

def rail_feed(limit_type: int) -> Feed:
    return feed(
        areas="area_id\nA\n",
        stop_areas="area_id,stop_id\nA,s1\nA,s2\nA,s3\nA,s4\n",
        routes="route_id,route_short_name,route_type,network_id\nr,R,2,rail\n",
        fare_products="fare_product_id,amount,currency\nrail,2.00,USD\n",
        fare_leg_rules="leg_group_id,network_id,from_area_id,to_area_id,fare_product_id\n"
                       "g,rail,A,A,rail\n",
        fare_transfer_rules="from_leg_group_id,to_leg_group_id,transfer_count,duration_limit,"
                            f"duration_limit_type,fare_transfer_type\ng,g,-1,1800,{limit_type},0\n",
    )


@pytest.mark.parametrize(("limit_type", "transfers"), [
    (0, False),  # departure 0 -> arrival 60: 60 min > 30
    (1, True),  # departure 0 -> departure 30: 30 min, inclusive
    (2, True),  # arrival 20 -> departure 30
    (3, False),  # arrival 20 -> arrival 60: 40 min
])
def test_duration_limit_types(limit_type: int, transfers: bool) -> None:
    f = rail_feed(limit_type)
    t = Taps(at(2024, 3, 4, 9))
    charges = price(f, [t(0, "s1", "r"), t(20, "s2", "r", "off"),
                        t(30, "s3", "r"), t(60, "s4", "r", "off")])
    assert sum(amounts(charges)) == (200 if transfers else 400)


# --- caps -----------------------------------------------------------------------------------

def test_daily_cap_with_cut_over() -> None:
    f = flat_feed(caps="day,daily,,,,5.00,USD,04:30:00,,,,,")
    t = Taps(at(2024, 3, 4, 22))
    # 22:00 and 04:00 (next morning) are one service day; 04:40 starts the next one.
    charges = price(f, [t(0, "s1", "b1"), t(360, "s1", "b1"), t(400, "s1", "b1")])
    assert amounts(charges) == [300, 200, 300]
    assert charges[1].detail.capped_by == ("day",)


def test_weekly_cap_starts_on_its_day() -> None:
    f = flat_feed(caps="wk,weekly,,,,7.00,USD,,monday,,,,")
    t = Taps(at(2024, 3, 9, 12))  # Saturday
    days = [0, 1440, 2880, 4320]  # Sat, Sun, Mon, Tue
    charges = price(f, [t(d, "s1", "b1") for d in days])
    assert amounts(charges) == [300, 300, 300, 300]
    t = Taps(at(2024, 3, 11, 8), card="c2")  # Monday
    charges = price(f, [t(d, "s1", "b1") for d in (0, 600, 1440, 2880)])
    assert amounts(charges) == [300, 300, 100, 0]


def test_rolling_cap_window() -> None:
    f = flat_feed(caps="roll,rolling,,,,6.00,USD,,,2,,,")
    t = Taps(at(2024, 3, 4, 8))
    # 2-day window: rides at 0 h, 24 h (capped at 3.00 left), 47 h (0 left), 48 h + 1 min
    # (the first ride has left the window).
    charges = price(f, [t(0, "s1", "b1"), t(1440, "s1", "b1"), t(2820, "s1", "b1"),
                        t(2881, "s1", "b1")])
    assert amounts(charges) == [300, 300, 0, 300]


def test_cap_per_rider_category_and_media() -> None:
    f = feed(
        routes="route_id,route_short_name,route_type,network_id\nb1,1,3,bus\n",
        rider_categories="rider_category_id,rider_category_name,is_default_fare_category\n"
                         "adult,Adult,1\nkid,Kid,0\n",
        fare_media="fare_media_id,fare_media_name,fare_media_type\ncard,Card,2\nemv,EMV,3\n",
        fare_products="fare_product_id,amount,currency,rider_category_id\nride,3.00,USD,adult\n"
                      "ride,1.00,USD,kid\n",
        fare_leg_rules="leg_group_id,network_id,fare_product_id\nbus,bus,ride\n",
        fare_caps=f"{CAPS_HEADER}\nkids,daily,kid,,,1.50,USD,,,,,,\n"
                  "emv,daily,adult,emv,,4.00,USD,,,,,,\n",
    )
    kid = Taps(at(2024, 3, 4, 8), card="k", category="kid", media="card")
    adult_card = Taps(at(2024, 3, 4, 8), card="a", media="card")
    adult_emv = Taps(at(2024, 3, 4, 8), card="e", media="emv")
    assert amounts(price(f, [kid(i * 120, "s1", "b1") for i in range(3)])) == [100, 50, 0]
    assert amounts(price(f, [adult_card(i * 120, "s1", "b1") for i in range(2)])) == [300, 300]
    assert amounts(price(f, [adult_emv(i * 120, "s1", "b1") for i in range(2)])) == [300, 100]


def test_monthly_tiers_beijing_style() -> None:
    f = flat_feed(fare="10.00", caps="\n".join([
        "m,monthly_tier,,,,,USD,,,,100.00,20,",
        "m,monthly_tier,,,,,USD,,,,150.00,50,",
        "m,monthly_tier,,,,,USD,,,,400.00,0,",
    ]))
    t = Taps(at(2024, 3, 1, 8))
    rides = [t(i * 180, "s1", "b1") for i in range(80)]
    got = amounts(price(f, rides))
    # 10 rides to reach 100.00; then 8.00 each until 150 (7 rides: 156.00), then 5.00 each
    # until 400 (49 rides: 401.00), then full price again.
    assert got[:10] == [1000] * 10
    assert got[10:17] == [800] * 7
    assert got[17:66] == [500] * 49
    assert got[66:] == [1000] * 14
    # A new calendar month starts again at full price without discount.
    t2 = Taps(at(2024, 4, 1, 8), card="c1")
    t2.n = 100
    more = price(f, [*rides, t2(0, "s1", "b1")])
    assert more[-1].amount == 1000


# --- incomplete journeys ----------------------------------------------------------------------

def zonal_feed(caps: str = "") -> Feed:
    files = dict(
        areas="area_id\nA\nB\n",
        stop_areas="area_id,stop_id\nA,s1\nA,s2\nB,s3\nB,s4\n",
        routes="route_id,route_short_name,route_type,network_id\nr,R,2,rail\nb,B,3,bus\n",
        fare_products="fare_product_id,amount,currency\nin,2.00,USD\nacross,5.00,USD\n"
                      "bus,1.00,USD\n",
        # rule_priority: the bus rule's empty areas then mean "any area".  Without it they would
        # mean "areas not named under from_area_id / to_area_id", and s1..s4 all are.
        fare_leg_rules="leg_group_id,network_id,from_area_id,to_area_id,fare_product_id,"
                       "rule_priority\n"
                       "rail,rail,A,A,in,0\nrail,rail,B,B,in,0\nrail,rail,A,B,across,0\n"
                       "rail,rail,B,A,across,0\nbus,bus,,,bus,0\n",
    )
    if caps:
        files["fare_caps"] = f"{CAPS_HEADER}\n{caps}\n"
    return feed(**files)


def test_max_fare_then_tap_off_refund() -> None:
    f = zonal_feed()
    t = Taps(at(2024, 3, 4, 8))
    charges = price(f, [t(0, "s1", "r"), t(15, "s2", "r", "off")])
    assert [(c.kind, c.amount) for c in charges] == [(ChargeKind.MAX_FARE, 500),
                                                     (ChargeKind.TAP_OFF, -300)]


def test_incomplete_journey_keeps_max_fare_outside_caps() -> None:
    f = zonal_feed("day,daily,,,,6.00,USD,,,,,,\nmx,max_fare,,,rail,8.00,USD,,,,,,3600")
    t = Taps(at(2024, 3, 4, 8))
    charges = price(f, [t(0, "s1", "b"), t(10, "s1", "r"), t(90, "s1", "b"),
                        t(100, "s2", "b"), t(110, "s3", "b")])
    kinds = [(c.kind, c.amount) for c in charges]
    assert kinds == [
        (ChargeKind.FARE, 100),
        (ChargeKind.MAX_FARE, 500),  # 8.00 max fare, held to the 6.00 daily cap
        (ChargeKind.INCOMPLETE, 300),  # no tap off: the full max fare, outside the cap
        (ChargeKind.FARE, 100),  # the cap counts 1.00 only: rides go on being charged
        (ChargeKind.FARE, 100),
        (ChargeKind.FARE, 100),
    ]


def test_tap_off_after_the_window_is_a_missing_tap_on() -> None:
    f = zonal_feed("mx,max_fare,,,rail,8.00,USD,,,,,,3600")
    t = Taps(at(2024, 3, 4, 8))
    charges = price(f, [t(0, "s1", "r"), t(61, "s3", "r", "off")])
    assert [(c.kind, c.amount) for c in charges] == [
        (ChargeKind.MAX_FARE, 800), (ChargeKind.INCOMPLETE, 0),
        (ChargeKind.MISSING_TAP_ON, 800)]


def test_derived_max_fare_when_no_row() -> None:
    f = zonal_feed()
    t = Taps(at(2024, 3, 4, 8))
    charges = price(f, [t(0, "s1", "r")])
    assert [(c.kind, c.amount) for c in charges] == [(ChargeKind.MAX_FARE, 500),
                                                     (ChargeKind.INCOMPLETE, 0)]
    assert "highest fare" in charges[0].explain


def test_close_card_waits_for_the_window() -> None:
    f = zonal_feed("mx,max_fare,,,rail,8.00,USD,,,,,,3600")
    t = Taps(at(2024, 3, 4, 8))
    st, _ = price_tap(f, None, t(0, "s1", "r"))
    same, none = close_card(f, st, at(2024, 3, 4, 8, 30))
    assert none == [] and same == st
    done, charges = close_card(f, st, at(2024, 3, 4, 9, 1))
    assert [c.kind for c in charges] == [ChargeKind.INCOMPLETE]
    assert done.journey is None


# --- the two meanings of an empty field --------------------------------------------------------

RULE_FILES = dict(
    areas="area_id\nA\nB\n",
    stop_areas="area_id,stop_id\nA,s1\nB,s2\n",
    routes="route_id,route_short_name,route_type,network_id\nr,R,3,n1\n",
    fare_products="fare_product_id,amount,currency\nnet,2.00,USD\nfromA,1.00,USD\nany,3.00,USD\n",
)


def test_empty_means_every_value_not_listed_without_rule_priority() -> None:
    f = feed(**RULE_FILES, fare_leg_rules=(
        "network_id,from_area_id,fare_product_id\nn1,,net\n,A,fromA\n"))
    t = Taps(at(2024, 3, 4, 8))
    # The leg's network n1 is listed, so the rule with an empty network cannot match it; its
    # area A is listed under from_area_id, so n1's rule with an empty from area cannot either:
    # "An empty entry in fare_leg_rules.from_area_id corresponds to all areas defined in
    # areas.area_id excluding the ones listed under fare_leg_rules.from_area_id" (reference).
    charges = price(f, [t(0, "s1", "r")])
    assert [(c.kind, c.amount) for c in charges] == [(ChargeKind.UNPRICED, 0)]
    f = feed(**RULE_FILES, fare_leg_rules=(
        "network_id,from_area_id,fare_product_id\nn1,A,fromA\nn1,,net\n"))
    t = Taps(at(2024, 3, 4, 8), card="c2")
    assert amounts(price(f, [t(0, "s1", "r"), t(10, "s2", "r")])) == [100, 200]


def test_empty_does_not_matter_with_rule_priority() -> None:
    f = feed(**RULE_FILES, fare_leg_rules=(
        "network_id,from_area_id,fare_product_id,rule_priority\nn1,,net,0\n,A,fromA,1\n"
        ",,any,0\n"))
    t = Taps(at(2024, 3, 4, 8))
    # From A: the priority-1 rule wins; from B: two priority-0 rules, the cheaper one.
    assert amounts(price(f, [t(0, "s1", "r"), t(10, "s2", "r")])) == [100, 200]


# --- concessions, the city sample, the incremental form ---------------------------------------

@pytest.fixture(scope="module")
def city() -> Feed:
    return load_feed(sample_feed_path("city"))


def test_senior_rides_free_with_both_applications(city: Feed) -> None:
    for media in ("tunion", "cemv"):
        t = Taps(at(2025, 3, 3, 9, tz="Asia/Shanghai"), card=media, category="senior",
                 media=media)
        charges = price(city, [t(0, "S01", "1"), t(20, "D01", "801"), t(50, "D12", "801", "off")])
        assert sum(amounts(charges)) == 0


def test_city_transfer_and_distance(city: Feed) -> None:
    t = Taps(at(2025, 3, 3, 7, 50, tz="Asia/Shanghai"), media="tunion")
    charges = price(city, [t(0, "S01", "1"), t(40, "D01", "801"), t(75, "D08", "801", "off")])
    # 1.80 flat + 3.60 (zones 1 -> 3) - 1.00 transfer discount, T-Union prices.
    assert amounts(charges) == [180, 500, -240]
    assert "transfer type 1" in charges[-1].explain and "line" in charges[-1].explain


def test_category_without_a_row_is_not_eligible(city: Feed) -> None:
    # fare_products.rider_category_id "Identifies a rider category eligible for the fare
    # product" (reference): students have a T-Union row only, so on cEMV no product is theirs.
    t = Taps(at(2025, 3, 3, 9, tz="Asia/Shanghai"), category="student", media="cemv")
    charges = price(city, [t(0, "S01", "1")])
    assert [(c.kind, c.amount) for c in charges] == [(ChargeKind.UNPRICED, 0)]


def test_incremental_equals_batch(city: Feed) -> None:
    text = (sample_feed_path("city") / "taps.csv").read_text("utf-8")
    taps, problems = parse_taps(text, city)
    assert problems == []
    batch = price(city, taps)
    states: dict[str, CardFareState] = {}
    stream: list[Charge] = []
    for tap in sorted(taps, key=lambda x: x.time):
        states[tap.card], charges = price_tap(city, states.get(tap.card), tap)
        stream.extend(charges)
    for st in states.values():
        stream.extend(close_card(city, st)[1])
    assert sorted((c.tap_id, c.amount, c.kind) for c in stream) == \
        sorted((c.tap_id, c.amount, c.kind) for c in batch)


def test_taps_out_of_order_and_unknown_ids(city: Feed) -> None:
    t = Taps(at(2025, 3, 3, 9, tz="Asia/Shanghai"))
    later, earlier = t(10, "S01", "1"), t(0, "S02", "1")
    st, _ = price_tap(city, None, later)
    with pytest.raises(TapError, match="time order"):
        price_tap(city, st, earlier)
    with pytest.raises(TapError, match="stop_id"):
        price_tap(city, None, t(20, "NOPE", "1"))
    with pytest.raises(TapError, match="route_id"):
        price_tap(city, None, t(20, "S01", "999"))
    with pytest.raises(TapError, match="UTC offset"):
        Tap("x", "c", later.time.replace(tzinfo=None), "S01", "1", "on")


def test_join_rules_price_two_legs_as_one() -> None:
    f = feed(
        areas="area_id\nA\nB\n",
        stop_areas="area_id,stop_id\nA,s1\nB,s3\n",
        routes="route_id,route_short_name,route_type,network_id\nr1,1,1,metro\nr2,2,1,metro\n",
        fare_products="fare_product_id,amount,currency\nAA,2.00,USD\nAB,3.00,USD\nBB,2.00,USD\n"
                      "short,1.50,USD\n",
        fare_leg_rules="network_id,from_area_id,to_area_id,fare_product_id\n"
                       "metro,A,A,AA\nmetro,A,B,AB\nmetro,B,B,BB\nmetro,,,short\n",
        fare_leg_join_rules="from_network_id,to_network_id\nmetro,metro\n",
    )
    t = Taps(at(2024, 3, 4, 8))
    charges = price(f, [t(0, "s1", "r1"), t(10, "s2", "r1", "off"), t(12, "s2", "r2"),
                        t(25, "s3", "r2", "off")])
    # s1 (A) -> s2 (no area) -> s3 (B), changing at s2: one effective leg A -> B.
    assert sum(amounts(charges)) == 300


def test_explain_names_the_cap(city: Feed) -> None:
    f = flat_feed(caps="day,daily,,,,5.00,USD,,,,,,")
    t = Taps(at(2024, 3, 4, 8))
    charges = price(f, [t(0, "s1", "b1"), t(120, "s1", "b1")])
    assert "capped by day" in charges[1].explain
    assert charges[1].detail.waived == 100
    assert charges[1].time - charges[0].time == timedelta(hours=2)


def test_state_survives_a_feed_update_that_changes_caps() -> None:
    old = zonal_feed()
    new = zonal_feed("day,daily,,,,6.00,USD,,,,,,\nmx,max_fare,,,rail,8.00,USD,,,,,,3600")
    t = Taps(at(2024, 3, 4, 8))
    st, first = price_tap(old, None, t(0, "s1", "r"))
    st, second = price_tap(new, st, t(20, "s3", "r", "off"))
    assert [c.amount for c in first + second] == [500, 0]  # 5.00 max, across A -> B = 5.00
    st, third = price_tap(new, st, t(120, "s1", "b"))
    assert [c.amount for c in third] == [100]
