"""Worked examples of the GTFS documentation (gtfs.org "Fares v2" examples and the reference's
fare_transfer_type table), priced from taps."""

from __future__ import annotations

import pytest

from fare.engine import price
from fare.explain import Charge
from tests.fare_helpers import Taps, at, feed


def total(charges: list[Charge]) -> int:
    return sum(c.amount for c in charges)


# --- "Create rules for transfers": Maryland MTA, 90 minutes, unlimited transfers ----------------

MTA = dict(
    routes="""
        route_id,route_short_name,route_type,network_id
        bus1,1,3,core
        bus2,2,3,core
        rail,LR,0,core
    """,
    fare_products="""
        fare_product_id,fare_product_name,amount,currency
        core_local_oneway_fare,One Way Full Fare,2.00,USD
        core_local_1_day_fare,1-Day Pass - Core Service,4.60,USD
        core_local_31_day_fare,31-Day Pass - Core Service,77.00,USD
        core_local_7_day_fare,7-Day Pass - Core Service,22.00,USD
    """,
    fare_leg_rules="""
        leg_group_id,network_id,fare_product_id
        core_local_one_way_trip,core,core_local_oneway_fare
        core_local_one_way_trip,core,core_local_1_day_fare
        core_local_one_way_trip,core,core_local_31_day_fare
        core_local_one_way_trip,core,core_local_7_day_fare
    """,
    fare_transfer_rules="""
        from_leg_group_id,to_leg_group_id,duration_limit,duration_limit_type,fare_transfer_type,transfer_count
        core_local_one_way_trip,core_local_one_way_trip,5400,1,0,-1
    """,
)


def test_mta_unlimited_transfers_within_90_minutes() -> None:
    f = feed(**MTA)
    t = Taps(at(2024, 5, 6, 8))
    charges = price(f, [t(0, "s1", "bus1"), t(30, "s2", "rail"), t(80, "s3", "bus2")])
    assert [c.amount for c in charges] == [200, 0, 0]
    assert total(charges) == 200  # "riders only pay for the first fare"


def test_mta_duration_counts_from_the_first_leg() -> None:
    f = feed(**MTA)
    t = Taps(at(2024, 5, 6, 8))
    charges = price(f, [t(0, "s1", "bus1"), t(60, "s2", "rail"), t(100, "s3", "bus2")])
    # 100 min after the first departure: past 5400 s although only 40 min after the second.
    assert [c.amount for c in charges] == [200, 0, 200]


# --- "Define price differences based on time and day of trip": WMATA-like timeframes ----------

WMATA = dict(
    calendar="""
        service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date
        weekday_service,1,1,1,1,1,0,0,20220708,20221231
        saturday_service,0,0,0,0,0,1,0,20220708,20221231
        sunday_service,0,0,0,0,0,0,1,20220708,20221231
    """,
    timeframes="""
        timeframe_group_id,start_time,end_time,service_id
        weekday_peak,5:00:00,9:30:00,weekday_service
        weekday_offpeak,9:30:00,15:00:00,weekday_service
        weekday_peak,15:00:00,19:00:00,weekday_service
        weekday_offpeak,19:00:00,21:30:00,weekday_service
        weekday_late_night,21:30:00,24:00:00,weekday_service
        weekday_late_night,00:00:00,5:00:00,weekday_service
        weekend,,,saturday_service
        weekend,,,sunday_service
    """,
    routes="""
        route_id,route_short_name,route_type,network_id
        red,Red,1,1
    """,
    # gtfs.org writes these amounts as "5", "3", "2"; the reference requires the currency's
    # decimals ("the amount is 2.00 instead of 2"), so they are written 5.00, 3.00, 2.00 here.
    fare_products="""
        fare_product_id,fare_product_name,amount,currency
        peak_fare,Peak fare,5.00,USD
        regular_fare,Off-peak fare,3.00,USD
        weekend_fare,Weekend Metrorail one-way fare,2.00,USD
        late_night_fare,Late Night flat fare,2.00,USD
    """,
    fare_leg_rules="""
        network_id,fare_product_id,from_timeframe_group_id,to_timeframe_group_id
        1,weekend_fare,weekend,
        1,late_night_fare,weekday_late_night,
        1,peak_fare,weekday_peak,
        1,regular_fare,weekday_offpeak,
    """,
)


@pytest.mark.parametrize(("day", "hour", "minute", "expected"), [
    (11, 7, 30, 500),  # "departs at 7:30 AM would have to pay 5.00 USD"
    (11, 11, 30, 300),  # "departing at 11:30 AM would only have to pay 3.00"
    (11, 9, 30, 300),  # end of a timeframe is exclusive
    (11, 9, 29, 500),
    (11, 22, 0, 200),
    (11, 4, 59, 200),
    (16, 10, 0, 200),  # a Saturday
])
def test_wmata_time_of_day(day: int, hour: int, minute: int, expected: int) -> None:
    f = feed(**WMATA)
    t = Taps(at(2022, 7, day, hour, minute))
    assert [c.amount for c in price(f, [t(0, "s1", "red")])] == [expected]


# --- "Define time-variable fares along with zone based fares": Metro-North ---------------------

MNR = dict(
    stops="""
        stop_id,stop_name,stop_lat,stop_lon
        ITO1887,Harlem-125th Street,40.805256,-73.939148
        ITO1897,Cold Spring,41.415382,-73.958092
        ITO1856,Garrison,41.381126,-73.947334
        ITO2383,Grand Central,40.752823,-73.977196
    """,
    areas="""
        area_id,area_name
        mnr_1,
        mnr_HUD-7,
    """,
    stop_areas="""
        area_id,stop_id
        mnr_1,ITO1887
        mnr_1,ITO2383
        mnr_HUD-7,ITO1856
        mnr_HUD-7,ITO1897
    """,
    routes="""
        route_id,route_short_name,route_type
        669,Hudson,2
    """,
    networks="""
        network_id,network_name
        mnr_hudson,MNR Hudson Line
    """,
    route_networks="""
        network_id,route_id
        mnr_hudson,669
    """,
    calendar="""
        service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date
        weekdays,1,1,1,1,1,0,0,20220101,20240101
        weekends,0,0,0,0,0,1,1,20220101,20240101
        anyday,1,1,1,1,1,1,1,20220101,20240101
    """,
    timeframes="""
        timeframe_group_id,start_time,end_time,service_id
        anytime,00:00:00,24:00:00,anyday
        weekdays,00:00:00,24:00:00,weekdays
        weekends,00:00:00,24:00:00,weekends
        mnr_ampeak,06:00:00,10:00:00,weekdays
        mnr_notampeak,00:00:00,06:00:00,weekdays
        mnr_notampeak,10:00:00,24:00:00,weekdays
        mnr_am2pmpeak,06:00:00,09:00:00,weekdays
        mnr_am2pmpeak,16:00:00,20:00:00,weekdays
        mnr_notam2pmpeak,00:00:00,06:00:00,weekdays
        mnr_notam2pmpeak,09:00:00,16:00:00,weekdays
        mnr_notam2pmpeak,20:00:00,24:00:00,weekdays
    """,
    fare_media="""
        fare_media_id,fare_media_name,fare_media_type
        paper,Paper ticket,1
    """,
    fare_products="""
        fare_product_id,fare_product_name,fare_media_id,amount,currency
        mnr_1:HUD-7_adult_peak,Outbound Adult Peak Zonal Fare,paper,20.00,USD
        mnr_1:HUD-7_adult,Outbound Adult Off Peak Zonal Fare,paper,15.00,USD
        mnr_HUD-7:1_adult_peak,Inbound Adult Peak Zonal Fare,paper,20.00,USD
        mnr_HUD-7:1_adult,Inbound Adult Off Peak Zonal Fare,paper,15.00,USD
    """,
    fare_leg_rules="""
        network_id,from_area_id,to_area_id,fare_product_id,from_timeframe_group_id,to_timeframe_group_id
        mnr_hudson,mnr_1,mnr_HUD-7,mnr_1:HUD-7_adult,mnr_notam2pmpeak,anytime
        mnr_hudson,mnr_1,mnr_HUD-7,mnr_1:HUD-7_adult,weekends,anytime
        mnr_hudson,mnr_1,mnr_HUD-7,mnr_1:HUD-7_adult_peak,mnr_am2pmpeak,anytime
        mnr_hudson,mnr_HUD-7,mnr_1,mnr_HUD-7:1_adult,weekdays,mnr_notampeak
        mnr_hudson,mnr_HUD-7,mnr_1,mnr_HUD-7:1_adult,weekends,anytime
        mnr_hudson,mnr_HUD-7,mnr_1,mnr_HUD-7:1_adult_peak,weekdays,mnr_ampeak
    """,
)


@pytest.mark.parametrize(("hour", "minute", "expected"), [(18, 45, 2000), (21, 4, 1500)])
def test_metro_north_outbound(hour: int, minute: int, expected: int) -> None:
    f = feed(**MNR)
    t = Taps(at(2023, 6, 13, hour, minute), media="paper")
    charges = price(f, [t(0, "ITO2383", "669"), t(70, "ITO1897", "669", "off")])
    assert total(charges) == expected
    assert charges[-1].detail.legs[0].price is not None


def test_metro_north_inbound_arrival_in_am_peak() -> None:
    f = feed(**MNR)
    t = Taps(at(2023, 6, 13, 7, 0), media="paper")
    # Arrives at 8:10, inside mnr_ampeak: the inbound peak fare (to_timeframe_group_id).
    assert total(price(f, [t(0, "ITO1897", "669"), t(70, "ITO2383", "669", "off")])) == 2000
    t = Taps(at(2023, 6, 13, 10, 30), media="paper")
    assert total(price(f, [t(0, "ITO1897", "669"), t(70, "ITO2383", "669", "off")])) == 1500


# --- "Define price differences based on fare media" and a contactless option --------------------

MUNI = dict(
    routes="""
        route_id,route_short_name,route_type
        J,J Church,0
    """,
    fare_media="""
        fare_media_id,fare_media_name,fare_media_type
        clipper,Clipper,2
        cash,Cash,0
        tap_to_ride,Tap to Ride,3
    """,
    # Amounts given the currency's decimals (gtfs.org writes "3", "2.5"): see WMATA above.
    fare_products="""
        fare_product_id,fare_product_name,amount,currency,fare_media_id
        SF:local:single,Muni single local fare,3.00,USD,cash
        SF:local:single,Muni single local fare,2.50,USD,clipper
        single-ride,Single Ride,6.00,USD,tap_to_ride
        single-ride,Single Ride,7.00,USD,
    """,
)


@pytest.mark.parametrize(("media", "product", "expected"), [
    ("cash", "SF:local:single", 300), ("clipper", "SF:local:single", 250),
    ("tap_to_ride", "single-ride", 600), (None, "single-ride", 700),
])
def test_fare_media_prices(media: str | None, product: str, expected: int) -> None:
    f = feed(**MUNI, fare_leg_rules=f"fare_product_id\n{product}\n")
    t = Taps(at(2024, 1, 8, 12), media=media)
    assert [c.amount for c in price(f, [t(0, "s1", "J")])] == [expected]


# --- "Describe service locations in the same fare zone": BART origin-destination --------------

def test_bart_areas() -> None:
    f = feed(
        stops="stop_id,stop_name\nASHB,Ashby\nGLEN,Glen Park\nOAKL,Oakland Airport\n",
        areas="area_id,area_name\nASHB,\nGLEN,\nOAKL,\n",
        stop_areas="area_id,stop_id\nASHB,ASHB\nGLEN,GLEN\nOAKL,OAKL\n",
        routes="route_id,route_short_name,route_type\nY,Yellow,1\n",
        fare_products="""
            fare_product_id,fare_product_name,amount,currency
            BA:matrix:ASHB-GLEN,generated,4.75,USD
            BA:matrix:ASHB-OAKL,generated,9.45,USD
        """,
        fare_leg_rules="""
            leg_group_id,from_area_id,to_area_id,fare_product_id
            BA,ASHB,GLEN,BA:matrix:ASHB-GLEN
            BA,ASHB,OAKL,BA:matrix:ASHB-OAKL
        """,
    )
    t = Taps(at(2024, 1, 8, 9))
    charges = price(f, [t(0, "ASHB", "Y"), t(20, "GLEN", "Y", "off")])
    assert total(charges) == 475
    assert charges[0].amount == 945  # the highest fare from Ashby, until the tap off says where
    assert charges[1].amount == 475 - 945


# --- the reference's fare_transfer_type table: A > B > C ---------------------------------------

def _abc(kind: int) -> int:
    f = feed(
        routes="""
            route_id,route_short_name,route_type,network_id
            ra,A,3,na
            rb,B,3,nb
            rc,C,3,nc
        """,
        fare_products="""
            fare_product_id,fare_product_name,amount,currency
            A,A,1.00,USD
            B,B,1.50,USD
            C,C,2.00,USD
            AB,AB,0.25,USD
            BC,BC,0.50,USD
        """,
        fare_leg_rules="""
            leg_group_id,network_id,fare_product_id
            ga,na,A
            gb,nb,B
            gc,nc,C
        """,
        fare_transfer_rules=f"""
            from_leg_group_id,to_leg_group_id,fare_transfer_type,fare_product_id
            ga,gb,{kind},AB
            gb,gc,{kind},BC
        """,
    )
    t = Taps(at(2024, 1, 8, 9))
    return total(price(f, [t(0, "s1", "ra"), t(10, "s2", "rb"), t(20, "s3", "rc")]))


def test_transfer_type_0_is_a_plus_ab_then_s_plus_bc() -> None:
    assert _abc(0) == 100 + 25 + 50


def test_transfer_type_1_is_a_plus_ab_plus_b_then_s_plus_bc_plus_c() -> None:
    assert _abc(1) == 100 + 25 + 150 + 50 + 200


def test_transfer_type_2_is_ab_then_s_plus_bc() -> None:
    assert _abc(2) == 25 + 50


def test_transfer_rules_are_directional() -> None:
    f = feed(
        routes="route_id,route_short_name,route_type,network_id\nra,A,3,na\nrb,B,3,nb\n",
        fare_products="fare_product_id,amount,currency\nA,1.00,USD\nB,1.50,USD\n",
        fare_leg_rules="leg_group_id,network_id,fare_product_id\nga,na,A\ngb,nb,B\n",
        fare_transfer_rules="from_leg_group_id,to_leg_group_id,fare_transfer_type\nga,gb,0\n",
    )
    t = Taps(at(2024, 1, 8, 9))
    assert total(price(f, [t(0, "s1", "ra"), t(10, "s2", "rb")])) == 100
    t = Taps(at(2024, 1, 8, 9), card="c2")
    assert total(price(f, [t(0, "s1", "rb"), t(10, "s2", "ra")])) == 250
