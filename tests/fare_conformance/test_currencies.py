"""A feed whose fare products are in two currencies: a cross-border network.

Reference, fare_products.txt, ``currency``: "The currency of the cost of the fare product."
It is a field of every row, so one feed may price some products in CHF and others in EUR.

Reference, fare_transfer_rules.txt, ``fare_transfer_type``: "0 - From-leg
fare_leg_rules.fare_product_id plus fare_transfer_rules.fare_product_id; A + AB.  1 - From-leg
fare_leg_rules.fare_product_id plus fare_transfer_rules.fare_product_id plus to-leg
fare_leg_rules.fare_product_id; A + AB + B.  2 - fare_transfer_rules.fare_product_id; AB."
Every type is a sum of product costs, and the reference defines no exchange rate: a sum of a
CHF and an EUR cost is undefined.  So a transfer rule is not applied between legs whose products
are in different currencies, nor with a transfer product of another currency than the legs';
the legs are then separate, each charged in its own currency.  Caps (tapsim's fare_caps.txt)
count only charges in their own currency, and totals are per card and currency.

The feed (fictional, in the spirit of a tram line crossing from Basel into Germany): network
``ch`` is priced in CHF (single 4.20), network ``de`` in EUR (single 2.60, second ride within an
hour 1.00 off).  Every expected figure below is worked out by hand from these prices.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

import pytest

from fare.compare import CompareError, compare
from fare.engine import price
from fare.errors import FeedError
from fare.explain import Charge
from fare.model import Feed, Tap
from fare.report import document, to_csv
from tapsim.cli import main
from tests.fare_helpers import Taps, at, feed

TZ = "Europe/Zurich"

FILES = dict(
    routes="route_id,route_short_name,route_type,network_id\n8,8,0,ch\n38,38,3,de\n",
    fare_products="fare_product_id,amount,currency\n"
                  "ch_single,4.20,CHF\n"
                  "de_single,2.60,EUR\n"
                  "de_hop,-1.00,EUR\n"
                  "xborder,-1.00,EUR\n",
    fare_leg_rules="leg_group_id,network_id,fare_product_id\nch,ch,ch_single\nde,de,de_single\n",
    # Type 1, A + AB + B, departure to departure within an hour.
    fare_transfer_rules="from_leg_group_id,to_leg_group_id,transfer_count,duration_limit,"
                        "duration_limit_type,fare_transfer_type,fare_product_id\n"
                        "de,de,1,3600,1,1,de_hop\n"      # EUR + EUR + EUR: applies
                        "ch,de,,3600,1,1,xborder\n"      # CHF + EUR + EUR: undefined
                        "de,ch,,3600,1,1,de_hop\n"       # EUR + EUR + CHF: undefined
                        "ch,ch,1,3600,1,1,xborder\n",    # CHF + EUR + CHF: undefined
)


def two_currency_feed(**extra: str) -> Feed:
    return feed(tz=TZ, **{**FILES, **extra})


def totals(charges: list[Charge]) -> dict[str, int]:
    """Per currency, for one card."""
    out: dict[str, int] = defaultdict(int)
    for c in charges:
        out[c.currency] += c.amount
    return dict(out)


def ride(*legs: tuple[float, str]) -> list[Tap]:
    t = Taps(at(2025, 6, 2, 8, tz=TZ))
    return [t(minutes, "s1", route) for minutes, route in legs]


def test_the_feed_loads_with_both_currencies() -> None:
    f = two_currency_feed()
    assert f.currencies == ("CHF", "EUR")
    assert f.network_currency == {"ch": "CHF", "de": "EUR"}


def test_a_transfer_within_one_currency_applies() -> None:
    # de -> de, type 1: 2.60 + (-1.00) + 2.60 = 4.20 EUR.
    charges = price(two_currency_feed(), ride((0, "38"), (20, "38")))
    assert [(c.amount, c.currency) for c in charges] == [(260, "EUR"), (160, "EUR")]
    assert totals(charges) == {"EUR": 420}


@pytest.mark.parametrize(("legs", "expected"), [
    # ch -> de: 4.20 CHF + (-1.00 EUR) + 2.60 EUR has no value: two journeys, 4.20 CHF, 2.60 EUR.
    (((0, "8"), (20, "38")), [(420, "CHF"), (260, "EUR")]),
    # de -> ch: 2.60 EUR, then 4.20 CHF.
    (((0, "38"), (20, "8")), [(260, "EUR"), (420, "CHF")]),
    # ch -> ch with an EUR transfer product: 4.20 + 4.20 CHF.
    (((0, "8"), (20, "8")), [(420, "CHF"), (420, "CHF")]),
])
def test_a_transfer_across_currencies_is_not_applied(
        legs: tuple[tuple[float, str], ...], expected: list[tuple[int, str]]) -> None:
    charges = price(two_currency_feed(), ride(*legs))
    assert [(c.amount, c.currency) for c in charges] == expected
    assert all(not step.transfer for c in charges for step in c.steps)


def test_the_chain_starts_again_in_the_next_currency() -> None:
    # ch (4.20 CHF); de (2.60 EUR, a new journey: no CHF -> EUR transfer); de -> de within the
    # hour: + (-1.00 + 2.60) = 1.60 EUR.  CHF 4.20, EUR 4.20.
    charges = price(two_currency_feed(), ride((0, "8"), (20, "38"), (40, "38")))
    assert [(c.amount, c.currency, c.journey) for c in charges] == [
        (420, "CHF", 1), (260, "EUR", 2), (160, "EUR", 2)]
    assert totals(charges) == {"CHF": 420, "EUR": 420}


CAPS = ("cap_id,cap_type,rider_category_id,fare_media_id,network_id,amount,currency,start_time,"
        "start_day,days,threshold,discount_percent,tap_off_window\n"
        "day_chf,daily,,,,8.00,CHF,04:00:00,,,,,\n"
        "day_eur,daily,,,,6.00,EUR,04:00:00,,,,,\n")


def test_caps_count_only_their_currency() -> None:
    f = two_currency_feed(fare_caps=CAPS, fare_transfer_rules="from_leg_group_id,"
                          "to_leg_group_id,transfer_count,fare_transfer_type\n")
    # Alternating every hour: ch 4.20, 4.20, 4.20 CHF against the 8.00 CHF cap -> 4.20, 3.80,
    # 0; de 2.60, 2.60, 2.60 EUR against the 6.00 EUR cap -> 2.60, 2.60, 0.80.
    charges = price(f, ride((0, "8"), (60, "38"), (120, "8"), (180, "38"), (240, "8"),
                            (300, "38")))
    assert [(c.amount, c.currency) for c in charges] == [
        (420, "CHF"), (260, "EUR"), (380, "CHF"), (260, "EUR"), (0, "CHF"), (80, "EUR")]
    assert totals(charges) == {"CHF": 800, "EUR": 600}


ZONES = dict(
    routes="route_id,route_short_name,route_type,network_id\n8,8,0,ch\nS6,S6,2,regio\n",
    areas="area_id,area_name\nbasel,Basel\nlorrach,Loerrach\n",
    stop_areas="area_id,stop_id\nbasel,s1\nlorrach,s2\n",
    fare_products="fare_product_id,amount,currency\nch_single,4.20,CHF\n"
                  "regio_1,3.00,EUR\nregio_2,5.00,EUR\n",
    fare_leg_rules="leg_group_id,network_id,from_area_id,to_area_id,fare_product_id\n"
                   "ch,ch,,,ch_single\n"
                   "regio,regio,basel,basel,regio_1\nregio,regio,basel,lorrach,regio_2\n",
)


def test_a_zone_network_is_charged_and_refunded_in_its_currency() -> None:
    f = feed(tz=TZ, **ZONES)
    t = Taps(at(2025, 6, 2, 8, tz=TZ))
    # Tap on at s1 (basel): the highest fare from there, 5.00 EUR; tap off in basel: 3.00 EUR,
    # so 2.00 EUR back.
    charges = price(f, [t(0, "s1", "S6"), t(15, "s1", "S6", "off")])
    assert [(c.amount, c.currency) for c in charges] == [(500, "EUR"), (-200, "EUR")]


def test_a_zone_leg_after_a_leg_of_another_currency_starts_its_own_journey() -> None:
    # A ch -> regio rule (type 0, A + AB) cannot add an EUR transfer product to a CHF fare:
    # the regio leg is a journey of its own, charged 5.00 EUR at the tap on and refunded 2.00
    # EUR at the tap off (basel -> basel, 3.00 EUR), whatever the CHF leg before it.
    f = feed(tz=TZ, **{**ZONES, "fare_products": ZONES["fare_products"] + "hop,-1.00,EUR\n",
                       "fare_transfer_rules": "from_leg_group_id,to_leg_group_id,"
                       "fare_transfer_type,fare_product_id\nch,regio,0,hop\n"})
    t = Taps(at(2025, 6, 2, 8, tz=TZ))
    # (s3 is in no area: the ch rule's empty areas match it, "excluding the ones listed".)
    charges = price(f, [t(0, "s3", "8"), t(10, "s1", "S6"), t(25, "s1", "S6", "off")])
    assert [(c.amount, c.currency, c.journey) for c in charges] == [
        (420, "CHF", 1), (500, "EUR", 2), (-200, "EUR", 2)]


def problems(**files: str) -> set[tuple[str, str]]:
    with pytest.raises(FeedError) as err:
        feed(tz=TZ, **{**FILES, **files})
    return {(p.file, p.field) for p in err.value.problems}


def test_one_network_in_two_currencies_is_a_load_error() -> None:
    # A tap on a zone network is charged the maximum fare before the product is known and
    # the tap off refunds the difference: tapsim asks one currency per network.
    assert problems(fare_leg_rules="leg_group_id,network_id,fare_product_id\n"
                                   "ch,ch,ch_single\nde,de,de_single\nx,ch,de_single\n") == {
        ("fare_leg_rules.txt", "fare_product_id")}


def test_caps_joins_and_max_fares_must_match_the_currencies() -> None:
    header = CAPS.splitlines()[0]
    assert problems(fare_caps=f"{header}\nday,daily,,,,5.00,USD,,,,,,\n") == {
        ("fare_caps.txt", "currency")}
    assert problems(fare_caps=f"{header}\nmx,max_fare,,,de,5.00,CHF,,,,,,\n") == {
        ("fare_caps.txt", "currency")}
    assert problems(fare_caps=f"{header}\nt,monthly_tier,,,,,CHF,,,,50.00,10,\n"
                              "t,monthly_tier,,,,,EUR,,,,90.00,20,\n") == {
        ("fare_caps.txt", "currency")}
    # Joined legs are priced as one effective leg: from CHF to EUR there is none.
    assert problems(fare_leg_join_rules="from_network_id,to_network_id\nch,de\n") == {
        ("fare_leg_join_rules.txt", "to_network_id")}
    # ... nor across two EUR networks when the effective leg (of no one network) would be
    # priced by an empty-network rule in CHF.
    assert problems(
        routes=FILES["routes"] + "39,39,3,de2\n",
        fare_leg_rules="leg_group_id,network_id,fare_product_id\n"
                       "ch,ch,ch_single\nde,de,de_single\nde2,de2,de_single\nany,,ch_single\n",
        fare_leg_join_rules="from_network_id,to_network_id\nde,de2\n") == {
        ("fare_leg_join_rules.txt", "to_network_id")}


def test_structured_output_keeps_currencies_apart() -> None:
    f = two_currency_feed()
    charges = price(f, ride((0, "8"), (20, "38"), (40, "38")))
    doc = document(charges, f.timezone, "x")
    assert doc["totals"] == [{"card": "c1", "amount": 420, "currency": "CHF"},
                             {"card": "c1", "amount": 420, "currency": "EUR"}]
    rows = list(csv.DictReader(io.StringIO(to_csv(charges, f.timezone))))
    assert [(r["amount"], r["currency"]) for r in rows] == [
        ("420", "CHF"), ("260", "EUR"), ("160", "EUR")]


def write_feed(folder: Path) -> Path:
    f = folder / "xb"
    f.mkdir()
    base = {"agency": f"agency_id,agency_name,agency_url,agency_timezone\na,A,https://a.example,"
                      f"{TZ}\n",
            "stops": "stop_id,stop_name\ns1,One\ns2,Two\n", **FILES}
    for name, text in base.items():
        (f / f"{name}.txt").write_text(text, encoding="utf-8")
    return f


def test_the_table_totals_each_currency(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    taps = tmp_path / "taps.csv"
    taps.write_text("tap_id,card,time,stop_id,route_id,action\n"
                    "1,c1,2025-06-02T08:00:00+02:00,s1,8,on\n"
                    "2,c1,2025-06-02T08:20:00+02:00,s1,38,on\n"
                    "3,c1,2025-06-02T08:40:00+02:00,s1,38,on\n", encoding="utf-8")
    code = main(["fare", "price", "--feed", str(write_feed(tmp_path)), "--taps", str(taps)])
    out = capsys.readouterr().out
    assert code == 0
    # The totals table: one row per card and currency (its title may wrap on a narrow
    # terminal), never 8.40 of CHF + EUR.
    rows = [[cell.strip() for cell in line.strip("│ ").split("│")]
            for line in out.splitlines() if line.startswith("│")]
    assert rows == [["c1", "4.20", "CHF"], ["c1", "4.20", "EUR"]]


def test_compare_refuses_a_feed_of_two_currencies() -> None:
    f = two_currency_feed()
    with pytest.raises(CompareError, match=r"several currencies \(CHF, EUR\)"):
        compare(f, f, ride((0, "8")))
    one = feed(tz=TZ, routes=FILES["routes"], fare_leg_rules="fare_product_id\np\n",
               fare_products="fare_product_id,amount,currency\np,2.00,EUR\n")
    other = feed(tz=TZ, routes=FILES["routes"], fare_leg_rules="fare_product_id\np\n",
                 fare_products="fare_product_id,amount,currency\np,2.00,CHF\n")
    with pytest.raises(CompareError, match=r"different currencies \(EUR, CHF\)"):
        compare(one, other, [])
