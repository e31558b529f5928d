"""Cities: GTFS folders and zips read with csv, the synthetic generator, fleets."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import pytest

from sim.city import fleet, load_city
from sim.errors import CityError
from sim.synthetic import parse_synthetic, synthetic_texts

FEED = {
    "agency.txt": "agency_id,agency_name,agency_url,agency_timezone\n"
                  "a,A,https://a.example,Asia/Shanghai\n",
    "stops.txt": "stop_id,stop_name\nA,Alpha\nB,Beta\nC,Gamma\n",
    "routes.txt": "route_id,route_short_name,route_type\nR,R,3\n",
    "trips.txt": "route_id,service_id,trip_id\nR,wk,t1\nR,wk,t2\nR,we,t3\nR,wk,t4\n",
    "stop_times.txt": (
        "trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
        "t1,06:00:00,06:00:00,A,1\nt1,06:02:00,06:02:30,B,2\nt1,06:05:30,06:05:30,C,3\n"
        "t2,06:20:00,06:20:00,C,1\nt2,06:23:00,06:23:00,B,2\nt2,06:26:00,06:26:00,A,3\n"
        "t3,07:00:00,07:00:00,A,1\nt3,07:02:00,07:02:00,B,2\nt3,07:05:00,07:05:00,C,3\n"
        "t4,24:10:00,24:10:00,A,1\nt4,24:12:00,24:12:00,B,2\nt4,24:14:00,24:14:00,C,3\n"
    ),
    "calendar.txt": "service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,"
                    "start_date,end_date\nwk,1,1,1,1,1,0,0,20260101,20261231\n"
                    "we,0,0,0,0,0,1,1,20260101,20261231\n",
}
MONDAY = dt.date(2026, 3, 2)


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_gtfs_folder_patterns_run_times_and_blocks(tmp_path: Path) -> None:
    city = load_city(str(write(tmp_path / "f", FEED)), day=MONDAY)
    assert city.trips == 3  # the weekend trip does not run on a Monday
    ab = next(p for p in city.patterns if p.stops == ("A", "B", "C"))
    assert ab.run_times == (120.0, 150.0)  # mean of t1 and t4 (180, 120); dwell at B dropped
    starts = sorted(t.start for b in city.blocks for t in b.trips)
    assert starts == [21600.0, 22800.0, 87000.0]  # 24:10:00 is past midnight
    # t1 ends at C at 06:05:30; t2 leaves C at 06:20 (after the layover): one bus runs both.
    first = next(b for b in city.blocks if b.trips[0].trip_id == "t1")
    assert [t.trip_id for t in first.trips][:2] == ["t1", "t2"]


def test_zip_feed_and_block_ids(tmp_path: Path) -> None:
    files = dict(FEED)
    files["trips.txt"] = ("route_id,service_id,trip_id,block_id\nR,wk,t1,b9\nR,wk,t2,b8\n"
                          "R,we,t3,b9\nR,wk,t4,b9\n")
    path = tmp_path / "feed.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    city = load_city(str(path), day=MONDAY)
    assert sorted(b.block_id for b in city.blocks) == ["b8", "b9"]


@pytest.mark.parametrize(("file", "find", "replace", "message"), [
    ("stop_times.txt", "06:02:00,06:02:30", "6h02,06:02:30", "stop_times.txt:3 (arrival_time)"),
    ("stop_times.txt", "t1,06:05:30,06:05:30,C", "t1,06:05:30,06:05:30,Z",
     "stop_times.txt:4 (stop_id): unknown stop_id 'Z'"),
    ("trips.txt", "R,wk,t2", "Q,wk,t2", "trips.txt:3 (route_id): unknown route_id 'Q'"),
    ("stops.txt", "stop_id,stop_name", "id,stop_name", "stops.txt:1: missing column(s) stop_id"),
    ("agency.txt", "Asia/Shanghai", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
])
def test_bad_feeds_name_file_line_and_field(tmp_path: Path, file: str, find: str,
                                             replace: str, message: str) -> None:
    files = dict(FEED)
    files[file] = files[file].replace(find, replace)
    with pytest.raises(CityError) as err:
        load_city(str(write(tmp_path / "f", files)), day=MONDAY)
    assert message in str(err.value)


def test_unknown_city_lists_the_shipped_ones() -> None:
    with pytest.raises(CityError, match="lanshan"):
        load_city("atlantis")


def test_lanshan_sample_city_over_the_fare_feed() -> None:
    city = load_city("lanshan", day=MONDAY)
    assert set(city.routes) == {"1", "2", "5", "11", "801"}
    assert city.fare_dir is not None and (city.fare_dir / "fare_products.txt").exists()
    assert "fare_leg_rules.txt" in city.gtfs_files  # the base feed's tables come along
    assert len(city.blocks) == 24


def test_synthetic_city_and_its_errors() -> None:
    spec = parse_synthetic("synthetic:routes=2,stops=5,buses=4,run=60")
    texts = synthetic_texts(spec)
    assert texts["stops.txt"].count("\n") == 1 + 2 * 5
    city = load_city("synthetic:routes=2,stops=5,buses=4,run=60")
    assert len(city.blocks) == 4 and len(city.patterns) == 4
    for bad, msg in [("synthetic:routes=0", "routes=0"), ("synthetic:colour=3", "colour"),
                     ("synthetic:stops=x", "not an integer"),
                     ("synthetic:start=10,end=9", "end must be after start")]:
        with pytest.raises(CityError, match=msg):
            load_city(bad)


def test_fleet_takes_blocks_then_replicates_the_city() -> None:
    city = load_city("synthetic:routes=2,stops=5,buses=4")
    assert [b.block for b in fleet(city, 2)] == [0, 1]
    big = fleet(city, 10)
    assert [b.replica for b in big] == [0] * 4 + [1] * 4 + [2] * 2
    assert len({b.bus_id for b in big}) == 10
    with pytest.raises(CityError, match="at least 1"):
        fleet(city, 0)
