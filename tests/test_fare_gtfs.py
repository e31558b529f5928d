"""Loading feeds: every problem reported with file, line and field; nothing half-loaded."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from fare.errors import FeedError, FeedProblem
from fare.gtfs import load_feed, parse_feed
from fare.samples import sample_feed_path, sample_names
from tests.fare_helpers import csv, feed

GOOD = dict(
    routes="route_id,route_short_name,route_type,network_id\nr1,1,3,n1\n",
    fare_products="fare_product_id,amount,currency\np,2.00,CNY\n",
    fare_leg_rules="leg_group_id,network_id,fare_product_id\ng,n1,p\n",
)


def problems(**files: str) -> list[FeedProblem]:
    merged = {**GOOD, **files}
    with pytest.raises(FeedError) as info:
        feed(**merged)
    return info.value.problems


def where(ps: list[FeedProblem]) -> set[tuple[str, int, str]]:
    return {(p.file, p.line, p.field) for p in ps}


def test_good_feed_loads() -> None:
    f = feed(**GOOD)
    assert f.currency == "CNY"
    assert f.fare_products["p"][0].amount == 200


@pytest.mark.parametrize("name", sample_names())
def test_samples_load(name: str) -> None:
    f = load_feed(sample_feed_path(name))
    assert f.leg_rules


def test_zip_and_folder_give_the_same_feed(tmp_path: Path) -> None:
    folder = sample_feed_path("city")
    archive = tmp_path / "city.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in folder.glob("*.txt"):
            zf.write(p, p.name)
    assert load_feed(archive).leg_rules == load_feed(folder).leg_rules


def test_header_with_stray_spaces() -> None:
    ps = problems(fare_products="fare_product_id, amount,currency\np,2.00,CNY\n")
    assert ("fare_products.txt", 1, "amount") in where(ps)
    # An unreadable file does not cascade into "unknown product" everywhere else.
    assert all(p.file == "fare_products.txt" for p in ps)


def test_negative_transfer_count_other_than_minus_one() -> None:
    ps = problems(fare_transfer_rules=csv("""
        from_leg_group_id,to_leg_group_id,transfer_count,fare_transfer_type
        g,g,-2,0
    """))
    assert where(ps) == {("fare_transfer_rules.txt", 2, "transfer_count")}
    assert "-1" in ps[0].message


@pytest.mark.parametrize(("row", "field"), [
    ("g,g,,,,0", "transfer_count"),  # required when from = to
    ("g,,1,,,0", "transfer_count"),  # forbidden when they differ
    ("g,g,1,600,,0", "duration_limit_type"),  # required with a limit
    ("g,g,1,,1,0", "duration_limit_type"),  # forbidden without one
    ("g,g,1,600,4,0", "duration_limit_type"),
    ("g,g,1,-5,1,0", "duration_limit"),
    ("g,g,1,,,3", "fare_transfer_type"),
    ("x,g,,,,0", "from_leg_group_id"),
])
def test_transfer_rule_problems(row: str, field: str) -> None:
    header = ("from_leg_group_id,to_leg_group_id,transfer_count,duration_limit,"
              "duration_limit_type,fare_transfer_type")
    ps = problems(fare_transfer_rules=f"{header}\n{row}\n")
    assert ("fare_transfer_rules.txt", 2, field) in where(ps)


def test_overlapping_timeframes() -> None:
    ps = problems(
        calendar=csv("""
            service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,start_date,end_date
            wk,1,1,1,1,1,0,0,20240101,20241231
        """),
        timeframes=csv("""
            timeframe_group_id,start_time,end_time,service_id
            peak,07:00:00,09:30:00,wk
            peak,09:00:00,10:00:00,wk
            off,09:00:00,10:00:00,wk
        """),
    )
    assert where(ps) == {("timeframes.txt", 3, "start_time")}
    assert "line 2" in ps[0].message


@pytest.mark.parametrize(("row", "field"), [
    ("tf,25:00:00,26:00:00,wk", "start_time"),
    ("tf,10:00:00,09:00:00,wk", "end_time"),
    ("tf,10:00:00,,wk", "end_time"),
    ("tf,,,nope", "service_id"),
    ("tf,7:0:00,09:00:00,wk", "start_time"),
])
def test_timeframe_problems(row: str, field: str) -> None:
    ps = problems(
        calendar=("service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,"
                  "start_date,end_date\nwk,1,1,1,1,1,0,0,20240101,20241231\n"),
        timeframes=f"timeframe_group_id,start_time,end_time,service_id\n{row}\n",
    )
    assert ("timeframes.txt", 2, field) in where(ps)


def test_unknown_ids_each_reported() -> None:
    ps = problems(fare_leg_rules=csv("""
        leg_group_id,network_id,from_area_id,fare_product_id
        g,nowhere,,p
        g,n1,zone9,p
        g,n1,,missing
    """))
    assert where(ps) == {("fare_leg_rules.txt", 2, "network_id"),
                         ("fare_leg_rules.txt", 3, "from_area_id"),
                         ("fare_leg_rules.txt", 4, "fare_product_id")}


def test_amounts_and_currencies() -> None:
    ps = problems(fare_products=csv("""
        fare_product_id,amount,currency
        p,2.005,CNY
        q,1.00,XYZ
        r,1.00,USD
    """))
    # A second currency (USD) is no problem: each row has its own (tests/fare_conformance/
    # test_currencies.py); a network whose products mix them is.
    assert where(ps) == {("fare_products.txt", 2, "amount"), ("fare_products.txt", 3, "currency")}


def test_networks_forbidden_with_routes_network_id() -> None:
    ps = problems(networks="network_id,network_name\nn1,N\n")
    assert ("networks.txt", 0, "") in where(ps)


def test_missing_required_file_and_column() -> None:
    files = {"agency.txt": "agency_id,agency_name\na,A\n", "stops.txt": "stop_id\ns\n"}
    with pytest.raises(FeedError) as info:
        parse_feed(files)
    got = where(info.value.problems)
    assert ("agency.txt", 1, "agency_timezone") in got
    assert ("routes.txt", 0, "") in got
    assert ("fare_leg_rules.txt", 0, "") in got


def test_bad_timezone_and_wrong_row_width() -> None:
    ps = problems(agency="agency_id,agency_name,agency_timezone\na,A,Mars/Olympus\n",
                  stops="stop_id,stop_name\ns1,One,extra\n")
    assert ("agency.txt", 2, "agency_timezone") in where(ps)
    assert ("stops.txt", 2, "") in where(ps)


def test_duplicate_leg_rule_in_two_groups() -> None:
    ps = problems(fare_leg_rules=csv("""
        leg_group_id,network_id,fare_product_id
        g,n1,p
        h,n1,p
    """))
    assert where(ps) == {("fare_leg_rules.txt", 3, "leg_group_id")}


def test_default_category_must_be_unique_per_product() -> None:
    ps = problems(
        rider_categories="rider_category_id,rider_category_name,is_default_fare_category\n"
                         "a,Adult,0\nb,Senior,0\n",
        fare_products="fare_product_id,amount,currency,rider_category_id\np,2.00,CNY,a\np,0.00,CNY,b\n",
    )
    assert ("fare_products.txt", 0, "rider_category_id") in where(ps)


@pytest.mark.parametrize(("row", "field"), [
    ("d,daily,,,,-1.00,CNY,,,,,,", "amount"),
    ("w,weekly,,,,10.00,CNY,,someday,,,,", "start_day"),
    ("r,rolling,,,,10.00,CNY,,,0,,,", "days"),
    ("t,monthly_tier,,,,,CNY,,,,100.00,120,", "discount_percent"),
    ("m,max_fare,,,nowhere,5.00,CNY,,,,,,", "network_id"),
    ("x,hourly,,,,1.00,CNY,,,,,,", "cap_type"),
    ("d,daily,,,,1.00,CNY,,,,,,60", "tap_off_window"),
    ("d,daily,,,,1.00,USD,,,,,,", "currency"),
    ("d,daily,kid,,,1.00,CNY,,,,,,", "rider_category_id"),
])
def test_caps_file_problems(row: str, field: str) -> None:
    header = ("cap_id,cap_type,rider_category_id,fare_media_id,network_id,amount,currency,"
              "start_time,start_day,days,threshold,discount_percent,tap_off_window")
    ps = problems(fare_caps=f"{header}\n{row}\n")
    assert ("fare_caps.txt", 2, field) in where(ps)


def test_problem_text_is_file_line_field_message() -> None:
    assert str(FeedProblem("a.txt", 3, "amount", "bad")) == "a.txt:3: amount: bad"


# --- errors that do not cascade (issue 14) ------------------------------------------------------

def test_a_rejected_timeframes_row_is_reported_once() -> None:
    ps = problems(
        calendar="service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,"
                 "start_date,end_date\nwk,1,1,1,1,1,0,0,20240101,20241231\n",
        timeframes="timeframe_group_id,start_time,end_time,service_id\n"
                   "peak,09:00:00,07:00:00,wk\n",
        fare_leg_rules="leg_group_id,network_id,from_timeframe_group_id,fare_product_id\n"
                       "g,n1,peak,p\ng,n1,,p\n",
    )
    assert where(ps) == {("timeframes.txt", 2, "end_time")}


def test_a_missing_stops_file_does_not_fail_every_stop_areas_row() -> None:
    files = {**GOOD, "areas": "area_id\nA\n", "stop_areas": "area_id,stop_id\nA,s1\nA,s2\n"}
    merged = {f"{k}.txt": csv(v) for k, v in files.items()}
    merged["agency.txt"] = ("agency_id,agency_name,agency_url,agency_timezone\n"
                            "a,A,https://a.example,Asia/Shanghai\n")
    with pytest.raises(FeedError) as info:
        parse_feed(merged)
    assert where(info.value.problems) == {("stops.txt", 0, "")}


def test_a_rejected_area_row_is_not_unknown_in_stop_areas() -> None:
    ps = problems(areas="area_id,area_name\nA,One\nA,Again\n",
                  stop_areas="area_id,stop_id\nA,s1\n")
    assert where(ps) == {("areas.txt", 3, "area_id")}


def test_zip_with_files_in_a_subfolder_is_refused(tmp_path: Path) -> None:
    # GTFS reference, dataset publishing: "The files must reside at the root level directly,
    # not in a subfolder."
    archive = tmp_path / "feed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(sample_feed_path("city").glob("*.txt")):
            zf.write(path, f"city/{path.name}")
    with pytest.raises(FeedError) as info:
        load_feed(archive)
    [problem] = info.value.problems
    assert str(problem).startswith("feed.zip: the feed's files are in the subfolder 'city/'")
