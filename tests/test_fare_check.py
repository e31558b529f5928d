"""`tapsim fare check`: every error of a broken feed, every warning of a loadable one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fare.check import check_files
from tapsim.cli import main

AGENCY = "agency_id,agency_name,agency_url,agency_timezone\na,A,https://a.example,Asia/Shanghai\n"

BROKEN = {
    "agency.txt": AGENCY,
    "stops.txt": "stop_id,stop_name,stop_timezone\ns1,One,\ns2,Two,Mars/Olympus\ns1,Again,\n",
    "routes.txt": "route_id,route_short_name,route_type,network_id\nr1,1,3,bus\n",
    "areas.txt": "area_id\nA\n",
    "stop_areas.txt": "area_id,stop_id\nA,s1\nB,s2\n",
    "fare_products.txt": "fare_product_id,amount,currency\np,2,CNY\nq,1.50,CNY\n",
    "fare_leg_rules.txt": "leg_group_id,network_id,fare_product_id\ng,bus,p\ng,bus,nope\n",
    "fare_transfer_rules.txt": "from_leg_group_id,to_leg_group_id,transfer_count,"
                               "fare_transfer_type\ng,g,0,0\n",
}
# Every error planted above, worked out by hand: (file, line, field).
EXPECTED_ERRORS = {
    ("stops.txt", 3, "stop_timezone"),  # not an IANA zone
    ("stops.txt", 4, "stop_id"),  # s1 twice
    ("stop_areas.txt", 3, "area_id"),  # area B is not in areas.txt
    ("fare_products.txt", 2, "amount"),  # "2" for CNY: the reference wants 2.00
    ("fare_leg_rules.txt", 3, "fare_product_id"),  # unknown product
    ("fare_transfer_rules.txt", 2, "transfer_count"),  # 0 is not allowed (-1 or >= 1)
}


def test_check_finds_every_error() -> None:
    report = check_files(BROKEN)
    assert {(p.file, p.line, p.field) for p in report.errors} == EXPECTED_ERRORS
    assert report.exit_code == 2


LOADABLE = {
    "agency.txt": AGENCY,
    "stops.txt": "stop_id,stop_name\ns1,One\ns2,Two\n",
    "routes.txt": "route_id,route_short_name,route_type,network_id\n"
                  "r1,1,3,bus\nr2,2,3,tram\n",
    "areas.txt": "area_id\nA\nEmpty\n",
    "stop_areas.txt": "area_id,stop_id\nA,s1\nA,s2\n",
    "rider_categories.txt": "rider_category_id,rider_category_name,is_default_fare_category\n"
                            "adult,Adult,1\nchild,Child,0\n",
    "fare_products.txt": "fare_product_id,amount,currency,rider_category_id\n"
                         "p,2.00,CNY,adult\nspare,9.00,CNY,adult\n",
    # No rule_priority: the rule with an empty from_area_id matches nothing (every stop is in
    # A, and A is named); tram is named by no rule and no rule has an empty network.
    "fare_leg_rules.txt": "leg_group_id,network_id,from_area_id,fare_product_id\n"
                          "g,bus,A,p\ng,bus,,p\n",
}
EXPECTED_WARNINGS = {
    ("areas.txt", 0, "area_id"),  # Empty has no stop
    ("fare_leg_rules.txt", 3, "from_area_id"),  # the empty from area matches nothing
    ("fare_products.txt", 0, "fare_product_id"),  # spare is used by no rule
    ("rider_categories.txt", 0, "rider_category_id"),  # child has no product row
    ("routes.txt", 0, "network_id"),  # tram: no rule can match it
}


def test_check_finds_every_warning() -> None:
    report = check_files(LOADABLE)
    assert report.errors == []
    assert {(p.file, p.line, p.field) for p in report.warnings} == EXPECTED_WARNINGS
    assert report.exit_code == 1


def write(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "feed"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text, "utf-8")
    return folder


@pytest.mark.parametrize(("files", "code"), [(BROKEN, 2), (LOADABLE, 1)])
def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 files: dict[str, str], code: int) -> None:
    folder = write(tmp_path, files)
    assert main(["fare", "check", str(folder), "--json"]) == code
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "tapsim.fare.check" and doc["exit_code"] == code
    expected = EXPECTED_ERRORS if code == 2 else EXPECTED_WARNINGS
    key = "errors" if code == 2 else "warnings"
    assert {(p["file"], p["line"], p["field"]) for p in doc[key]} == expected


def test_cli_text_and_clean_samples(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for sample in ("city", "harbour"):
        assert main(["fare", "check", sample]) == 0
    folder = write(tmp_path, BROKEN)
    assert main(["fare", "check", str(folder)]) == 2
    out = capsys.readouterr().out
    assert "error: fare_products.txt:2: amount: amount '2' has 0 decimals" in out
    assert main(["fare", "check", str(tmp_path / "nowhere")]) == 2
