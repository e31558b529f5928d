"""`tapsim fare price`: JSON shape, bad rows, feed errors, sample names."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from fare.samples import sample_feed_path, sample_taps_path
from tapsim.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["fare", "price", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", ["city", "harbour"])
def test_json_for_the_samples(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, _ = run(capsys, "--feed", name, "--taps", str(sample_taps_path(name)), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["schema"] == "tapsim.fare.price" and doc["schema_version"] == 1
    assert set(doc) == {"schema", "schema_version", "feed", "charges", "totals"}
    keys = {"tap_id", "card", "journey", "time", "kind", "event", "amount", "currency",
            "product", "leg_rule", "leg_group", "transfer_rule", "transfer_product", "caps",
            "leg", "explanation"}
    assert all(set(c) == keys for c in doc["charges"])
    assert {c["kind"] for c in doc["charges"]} <= {"fare", "transfer", "cap", "unpriced"}
    totals: dict[tuple[str, str], int] = {}
    for c in doc["charges"]:
        assert isinstance(c["amount"], int)
        key = (c["card"], c["currency"])
        totals[key] = totals.get(key, 0) + c["amount"]
    assert {(t["card"], t["currency"]): t["amount"] for t in doc["totals"]} == totals


def totals_of(out: str) -> dict[str, int]:
    return {t["card"]: t["amount"] for t in json.loads(out)["totals"]}


def test_city_totals(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--feed", str(sample_feed_path("city")), "--taps",
                    str(sample_taps_path("city")), "--format", "json")
    totals = totals_of(out)
    assert totals["card-A"] == 180 + 500 - 240  # flat, then 801 zones 1-3 with the transfer
    assert totals["card-B"] == 0  # senior
    assert totals["card-D"] == 500 + 200  # incomplete 801 journey keeps the max fare
    assert totals["card-G"] == 180 + 80 + 180  # one discounted transfer only


def test_city_charges_name_their_rules(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "--feed", "city", "--taps", str(sample_taps_path("city")),
                    "--format", "json")
    by_tap = {c["tap_id"]: c for c in json.loads(out)["charges"]}
    g2 = by_tap["g2"]  # second flat ride within 90 minutes: the transfer rule (line 2)
    assert (g2["kind"], g2["amount"], g2["transfer_rule"], g2["product"]) == \
        ("transfer", 80, "fare_transfer_rules.txt:2", "flat")
    assert g2["transfer_product"] == "transfer_90min" and g2["journey"] == "card-G#1"
    assert g2["leg_rule"] == "fare_leg_rules.txt:2" and g2["leg"]["route_id"] == "5"
    b1 = by_tap["b1"]  # a senior's free ride is a fare of 0, not a gap in the table
    assert (b1["kind"], b1["amount"]) == ("fare", 0)


def test_unpriced_is_told_from_a_zero_fare(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    taps = tmp_path / "t.csv"
    taps.write_text("tap_id,card,time,stop_id,route_id,action,rider_category,fare_media\n"
                    "x1,c,2025-03-03T08:00:00+08:00,S01,1,on,student,cemv\n", "utf-8")
    _, out, _ = run(capsys, "--feed", "city", "--taps", str(taps), "--format", "json")
    [charge] = json.loads(out)["charges"]
    assert (charge["kind"], charge["amount"], charge["product"]) == ("unpriced", 0, None)


def test_csv_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--feed", "city", "--taps", str(sample_taps_path("city")),
                       "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    _, js, _ = run(capsys, "--feed", "city", "--taps", str(sample_taps_path("city")), "--json")
    charges = json.loads(js)["charges"]
    assert [r["tap_id"] for r in rows] == [c["tap_id"] for c in charges]
    assert [int(r["amount"]) for r in rows] == [c["amount"] for c in charges]
    assert [r["kind"] for r in rows] == [c["kind"] for c in charges]
    assert {r["currency"] for r in rows} == {"CNY"}


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--feed", "harbour", "--taps", str(sample_taps_path("harbour")))
    assert code == 0
    assert "Totals per card" in out and "card-1" in out


BAD = (
    "tap_id,card,time,stop_id,route_id,action\n"
    "x1,c,2025-03-03T08:00:00,S01,1,on\n"
    "x2,c,2025-03-03T08:00:00+08:00,S99,1,on\n"
    "x3,c,2025-03-03T08:10:00+08:00,S01,1,sideways\n"
    "x4,c,2025-03-03T08:20:00+08:00,S01,1,on\n"
)


def test_bad_rows_skipped_by_default(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    taps = tmp_path / "taps.csv"
    taps.write_text(BAD)
    code, out, err = run(capsys, "--feed", "city", "--taps", str(taps), "--json")
    assert code == 0
    assert [c["tap_id"] for c in json.loads(out)["charges"]] == ["x4"]
    assert f"{taps}:2: time:" in err and "no UTC offset" in err
    assert f"{taps}:3: stop_id:" in err
    assert f"{taps}:4: action:" in err
    assert "skipped 3 bad row(s)" in err


def test_bad_rows_rejected(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    taps = tmp_path / "taps.csv"
    taps.write_text(BAD)
    code, out, err = run(capsys, "--feed", "city", "--taps", str(taps), "--on-bad-row",
                         "reject", "--json")
    assert code == 2
    assert out == ""
    assert "nothing priced" in err


def test_feed_errors_listed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for src in sample_feed_path("city").glob("*.txt"):
        (tmp_path / src.name).write_text(src.read_text("utf-8"), "utf-8")
    rules = tmp_path / "fare_transfer_rules.txt"
    rules.write_text(rules.read_text().replace("bus,bus,1,", "bus,bus,-4,"))
    areas = tmp_path / "stop_areas.txt"
    areas.write_text(areas.read_text() + "Z9,D01\n")
    code, out, err = run(capsys, "--feed", str(tmp_path), "--taps",
                         str(sample_taps_path("city")))
    assert code == 2 and out == ""
    assert "fare_transfer_rules.txt:2: transfer_count:" in err
    assert "stop_areas.txt:14: area_id: unknown area 'Z9'" in err


def test_unknown_feed(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--feed", "atlantis", "--taps", "x.csv")
    assert code == 2 and "city" in err


def test_taps_header_errors_have_the_row_shape(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    taps = tmp_path / "taps.csv"
    taps.write_text("tap_id,card,time\n", "utf-8")
    assert main(["fare", "price", "--feed", "city", "--taps", str(taps)]) == 2
    err = capsys.readouterr().err
    assert "taps.csv:1: missing column(s) stop_id, route_id, action" in err
