"""`fare compare`: city (fares in force) against city2026 (a fare change), every figure checked
against a hand computation from the two fare tables and fare/samples/city/taps.csv.

The change (fare/samples/city2026 against city): adult T-Union flat fare 1.80 -> 2.00; route 801
adult fares +0.50 on every row (T-Union 3.60 -> 4.10 for three zones, ...); the 801 maximum fare
5.00 -> 5.50.  Cash and cEMV flat fares, students, seniors, the transfer (-1.00) are unchanged.

Per card, by hand (A = city, B = city2026, fen):
* card-A (adult, T-Union): a1 flat 180 | 200; a2 801 max fare 500 | 550; a3 tap off D01 -> D08
  (zones 1 -> 3, 3.60 | 4.10) with the 90-minute transfer (type 1: -1.00 + leg), journey
  180 - 100 + 360 = 440 | 200 - 100 + 410 = 510, so a3 = 440 - 680 = -240 | 510 - 750 = -240.
* card-B (senior): all 0 | 0.   card-C (student, T-Union): 100 + 100 both.
* card-D (adult, cEMV): d1 801 max fare 500 | 550, never tapped off (the incomplete charge adds
  0); d2 flat cEMV 200 | 200.  card-E (adult, cash): 200 + 200 both (no transfer product for
  cash).  card-F: tap off with no tap on, the 801 max fare 500 | 550.
* card-G (adult, T-Union): g1 180 | 200; g2 transfer 180 - 100 = 80 | 200 - 100 = 100; g3 a
  second transfer (transfer_count 1 exceeded): new journey 180 | 200.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fare.compare import compare
from fare.gtfs import load_feed
from fare.samples import sample_feed_path, sample_taps_path
from fare.tapfile import parse_taps
from tapsim.cli import main


@pytest.fixture(scope="module")
def doc() -> dict[str, object]:
    a = load_feed(sample_feed_path("city"))
    b = load_feed(sample_feed_path("city2026"))
    taps, problems = parse_taps(sample_taps_path("city").read_text("utf-8"), a)
    assert problems == []
    return compare(a, b, taps)


def table(doc: dict[str, object], dim: str) -> dict[object, tuple[int, int]]:
    rows = doc["by"][dim]  # type: ignore[index]
    return {r["key"]: (r["a"], r["b"]) for r in rows}


def test_totals(doc: dict[str, object]) -> None:
    # A: 440 + 0 + 200 + 700 + 400 + 500 + 440; B: 510 + 0 + 200 + 750 + 400 + 550 + 500.
    assert doc["total"] == {"a": 2680, "b": 2910, "change": 230}
    assert doc["currency"] == "CNY" and doc["taps"] == 16


def test_by_category_and_media(doc: dict[str, object]) -> None:
    # adult = cards A, D, E, F, G (no category: the default); media: T-Union A, C, G; cEMV B,
    # D, F; none E.
    assert table(doc, "rider_category") == {"adult": (2480, 2710), "senior": (0, 0),
                                            "student": (200, 200)}
    assert table(doc, "fare_media") == {"tunion": (1080, 1210), "cemv": (1200, 1300),
                                        "none": (400, 400)}


def test_by_route(doc: dict[str, object]) -> None:
    # 1: a1, d2, e1.  2: b1, e2, g1.  5: c1, g2.  11: c2, g3.  801: a2, a3, b2, b3, d1, f1.
    assert table(doc, "route") == {"1": (580, 600), "2": (380, 400), "5": (180, 200),
                                   "11": (280, 300), "801": (1260, 1410)}


def test_by_hour_and_day(doc: dict[str, object]) -> None:
    # 07: a1 g1 c1 g2; 08: a2 e1 e2 g3; 09: a3 b1 b2; 10: b3 f1; 12: c2; 18: d1 (its incomplete
    # charge belongs to its tap on); 20: d2.
    assert table(doc, "hour") == {7: (540, 600), 8: (1080, 1150), 9: (-240, -240),
                                  10: (500, 550), 12: (100, 100), 18: (500, 550), 20: (200, 200)}
    assert table(doc, "day") == {"2025-03-03": (2680, 2910)}


def test_riders(doc: dict[str, object]) -> None:
    riders = doc["riders"]
    # Changes: A +70, D +50, F +50, G +60; B, C, E 0.
    assert (riders["count"], riders["more"], riders["less"], riders["same"]) == (7, 4, 0, 3)  # type: ignore[index]
    assert riders["change_distribution"] == [  # type: ignore[index]
        {"change": 0, "riders": 3}, {"change": 50, "riders": 2}, {"change": 60, "riders": 1},
        {"change": 70, "riders": 1}]
    # Nearest rank over [0, 0, 0, 50, 50, 60, 70].
    assert riders["percentiles"] == {"p0": 0, "p10": 0, "p25": 0, "p50": 50, "p75": 60,  # type: ignore[index]
                                     "p90": 70, "p100": 70}


def test_journeys(doc: dict[str, object]) -> None:
    journeys = doc["journeys"]
    # A#1, B#1 (b1 -> b2 a transfer), C#1, C#2, D#1, D#2, E#1, E#2, F#1, G#1, G#2.
    assert (journeys["count"], journeys["changed"]) == (11, 5)  # type: ignore[index]
    assert [(j["journey"], j["a"], j["b"]) for j in journeys["top"]] == [  # type: ignore[index]
        ("card-A#1", 440, 510), ("card-D#1", 500, 550), ("card-F#1", 500, 550),
        ("card-G#1", 260, 300), ("card-G#2", 180, 200)]


def test_cli_json_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    code = main(["fare", "compare", "--feed", "city", "--feed", "city2026", "--taps",
                 str(sample_taps_path("city")), "--format", "json", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["total"] == {"a": 2680, "b": 2910, "change": 230}
    assert json.loads((out / "compare.json").read_text("utf-8")) == printed
    html = (out / "compare.html").read_text("utf-8")
    assert "city2026" in html and "29.10" in html
    for png in ("hour.png", "route.png", "rider_category.png", "riders.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png in html


def test_cli_table_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fare", "compare", "--feed", "city", "--feed", "city2026", "--taps",
                 str(sample_taps_path("city"))]) == 0
    out = capsys.readouterr().out
    assert "26.80" in out and "29.10" in out and "+2.30" in out
    assert main(["fare", "compare", "--feed", "city", "--taps",
                 str(sample_taps_path("city"))]) == 2
    assert "two --feed" in capsys.readouterr().err
    assert main(["fare", "compare", "--feed", "city", "--feed", "harbour", "--taps",
                 str(sample_taps_path("city"))]) == 2


def test_one_pass_agrees_with_pricing_each_feed() -> None:
    """The one-pass comparison is a speed twin of pricing each feed with fare.engine.price."""
    from benchmarks.test_bench_fare import city_taps
    from fare.engine import price

    a = load_feed(sample_feed_path("city"))
    b = load_feed(sample_feed_path("city2026"))
    taps = city_taps(20_000, seed=14)
    got = compare(a, b, taps, top=5)
    per_card: dict[str, list[int]] = {}
    for side, feed in enumerate((a, b)):
        for c in price(feed, taps):
            per_card.setdefault(c.card, [0, 0])[side] += c.amount
    total_a = sum(v[0] for v in per_card.values())
    total_b = sum(v[1] for v in per_card.values())
    assert got["total"] == {"a": total_a, "b": total_b, "change": total_b - total_a}
    counts: dict[int, int] = {}
    for va, vb in per_card.values():
        counts[vb - va] = counts.get(vb - va, 0) + 1
    assert got["riders"]["change_distribution"] == [  # type: ignore[index]
        {"change": ch, "riders": n} for ch, n in sorted(counts.items())]
    for dim in ("rider_category", "fare_media", "route", "hour", "day"):
        rows = got["by"][dim]  # type: ignore[index]
        assert sum(r["a"] for r in rows) == total_a and sum(r["b"] for r in rows) == total_b


def test_taps_read_once_and_checked_against_both_feeds() -> None:
    """One reading of the file for both feeds: a row must be good under each, and a problem
    says which feed does not know the value (city's stops are not harbour's)."""
    city = load_feed(sample_feed_path("city"))
    harbour = load_feed(sample_feed_path("harbour"))
    text = ("tap_id,card,time,stop_id,route_id,action\n"
            "x1,card-X,2025-03-03T07:50:00+08:00,S01,1,on\n"
            "x2,card-X,2025-03-03T08:50:00+08:00,ZZ,1,on\n"
            "x3,card-X,not a time,S01,1,on\n")
    taps, problems = parse_taps(text, city, harbour)
    assert taps == []
    assert [str(p) for p in problems] == [
        "2: stop_id: unknown stop 'S01' in feed harbour",
        "3: stop_id: unknown stop 'ZZ' in feed city",
        "4: time: 'not a time' is not an ISO 8601 date and time"]
    one, single = parse_taps(text, city)  # against one feed: no feed named, as before
    assert [t.tap_id for t in one] == ["x1"]
    assert str(single[0]) == "3: stop_id: unknown stop 'ZZ'"


def test_cli_bad_row_reported_and_left_out(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    taps = tmp_path / "taps.csv"
    taps.write_text(sample_taps_path("city").read_text("utf-8")
                    + "z1,card-Z,2025-03-03T10:00:00+08:00,S99,1,on,,tunion\n", "utf-8")
    args = ["fare", "compare", "--feed", "city", "--feed", "city2026", "--taps", str(taps)]
    assert main([*args, "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert f"{taps}:18: stop_id: unknown stop 'S99' in feed city" in captured.err
    assert json.loads(captured.out)["total"] == {"a": 2680, "b": 2910, "change": 230}
    assert main([*args, "--on-bad-row", "reject"]) == 2
    assert "1 bad row(s)" in capsys.readouterr().err
