"""The back office's Pricer over the real fare engine: the tap mapping, refusals as pricing
errors, the card-state codec and the memoised explanations agree with the engine itself."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backoffice.fare_pricer import FarePricer
from backoffice.pricing import PricingError
from backoffice.taps import Action, TapRecord
from fare.engine import CardFareState, price, price_tap
from fare.gtfs import load_feed
from fare.model import Feed, Tap
from fare.samples import sample_feed_path, sample_taps_path
from fare.tapfile import parse_taps

CST = timezone(timedelta(hours=8))
T0 = datetime(2025, 3, 3, 8, 0, tzinfo=CST)


@functools.cache
def city_feed() -> Feed:
    return load_feed(sample_feed_path("city"))


@pytest.fixture(scope="module")
def city() -> Feed:
    return city_feed()


@pytest.fixture(scope="module")
def harbour() -> Feed:
    return load_feed(sample_feed_path("harbour"))


def token(card: str) -> str:
    return hashlib.sha256(card.encode()).hexdigest()[:32]


def record(tap: Tap, atc: int = 1) -> TapRecord:
    """The back office's record of a fare-engine tap (card name -> a token)."""
    return TapRecord(
        tap_id=tap.tap_id, validator_id="V1", operator_id="op", pan_token=token(tap.card),
        masked_pan="623190******1234", time=tap.time, stop_id=tap.stop_id,
        route_id=tap.route_id, action=Action.TAP_OFF if tap.action == "off" else Action.TAP_ON,
        atc=atc, arqc=bytes(8), ac_data=b"\x00", scheme="tdes",
        rider_category=tap.rider_category or "", fare_media=tap.fare_media or "",
    )  # fmt: skip


def rec(tap_id: str, when: datetime, route: str, stop: str, action: Action = Action.TAP_ON,
        *, card: str = "c1", category: str = "", media: str = "cemv") -> TapRecord:  # fmt: skip
    tap = Tap(tap_id, card, when, stop, route, "off" if action is Action.TAP_OFF else "on")
    return dataclasses.replace(record(tap), action=action, rider_category=category,
                               fare_media=media)  # fmt: skip


# -- the mapping ---------------------------------------------------------------------------


def test_a_tap_record_maps_onto_the_engines_tap(city: Feed) -> None:
    pricer = FarePricer(city)
    r = rec("t1", T0, "801", "D01", Action.TAP_OFF, category="senior", media="tunion")
    tap = pricer.fare_tap(r)
    assert tap == Tap("t1", r.pan_token, T0, "D01", "801", "off", "senior", "tunion")
    for action in (Action.TAP, Action.TAP_ON):
        assert pricer.fare_tap(dataclasses.replace(r, action=action)).action == "on"
    plain = pricer.fare_tap(dataclasses.replace(r, rider_category="", fare_media=""))
    assert plain.rider_category is None and plain.fare_media is None
    assert pricer.currency == "CNY"


def test_labels_the_feed_does_not_know_are_refused_unless_told(city: Feed) -> None:
    r = rec("t1", T0, "1", "S01")
    with pytest.raises(PricingError, match=r"tap t1: rider_category 'pensioner' is not in"):
        FarePricer(city).price(None, dataclasses.replace(r, rider_category="pensioner"))
    with pytest.raises(PricingError, match=r"tap t1: fare_media 'quickpass' is not in"):
        FarePricer(city).price(None, dataclasses.replace(r, fare_media="quickpass"))
    lenient = FarePricer(city, strict_labels=False)
    _, [charge] = lenient.price(None, dataclasses.replace(r, fare_media="quickpass"))
    assert charge.amount == 200  # an unknown medium pays the any-medium row


def test_engine_refusals_become_pricing_errors_naming_the_tap(city: Feed) -> None:
    pricer = FarePricer(city)
    with pytest.raises(PricingError, match=r"tap t1: unknown route_id 'R9'"):
        pricer.price(None, rec("t1", T0, "R9", "S01"))
    with pytest.raises(PricingError, match=r"tap t1: unknown stop_id 'S99'"):
        pricer.price(None, rec("t1", T0, "1", "S99"))
    state, _ = pricer.price(None, rec("t2", T0, "1", "S01"))
    with pytest.raises(PricingError, match=r"tap t0: earlier than the card's previous tap"):
        pricer.price(state, rec("t0", T0 - timedelta(minutes=1), "2", "S02"))
    naive = dataclasses.replace(rec("t3", T0, "1", "S01"), time=T0.replace(tzinfo=None))
    with pytest.raises(PricingError, match=r"tap t3: time .* has no UTC offset"):
        pricer.price(None, naive)
    with pytest.raises(PricingError, match="not a fare-engine card state"):
        pricer.price("a flat-fare state", rec("t4", T0, "1", "S01"))


def test_a_transfer_and_a_tap_off_refund_priced_as_the_engine_does(city: Feed) -> None:
    pricer = FarePricer(city)
    s, [c1] = pricer.price(None, rec("a", T0, "1", "S01"))
    s, [c2] = pricer.price(s, rec("b", T0 + timedelta(minutes=40), "2", "S05"))
    s, [c3] = pricer.price(s, rec("c", T0 + timedelta(hours=3), "801", "D01"))
    s, [c4] = pricer.price(s, rec("d", T0 + timedelta(hours=3, minutes=30), "801", "D04",
                                  Action.TAP_OFF))  # fmt: skip
    assert [c.amount for c in (c1, c2, c3, c4)] == [200, 100, 500, -200]
    assert "transfer type 1" in c2.explain and "fare_transfer_rules line 2" in c2.explain
    assert "5.00 CNY charged for now" in c3.explain
    assert "journey fare 5.00 CNY -> 3.00 CNY" in c4.explain
    assert all(c.currency == "CNY" for c in (c1, c2, c3, c4))
    assert isinstance(s, CardFareState) and s.journeys == 2


def test_close_settles_a_leg_whose_tap_off_window_passed(city: Feed) -> None:
    pricer = FarePricer(city)
    assert pricer.close(None, T0) == (None, [])
    s, [on] = pricer.price(None, rec("on", T0, "801", "D01", category="student",
                                     media="tunion"))  # fmt: skip
    assert on.amount == 500  # the network's maximum fare (max_801)
    same, charges = pricer.close(s, T0 + timedelta(hours=1))  # still inside the 2-hour window
    assert same is s and charges == []
    closed, [inc] = pricer.close(s, T0 + timedelta(hours=3))
    assert inc.tap_id == "on" and inc.amount == 0  # the maximum fare was charged at the tap on
    assert "incomplete journey" in inc.explain
    assert isinstance(closed, CardFareState) and closed.journey is None


# -- the state codec -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["city", "harbour"])
def test_the_state_survives_encoding_at_every_tap_of_the_samples(name: str) -> None:
    feed = load_feed(sample_feed_path(name))
    pricer = FarePricer(feed)
    taps, problems = parse_taps(sample_taps_path(name).read_text("utf-8"), feed)
    assert not problems
    states: dict[str, object] = {}
    for tap in sorted(taps, key=lambda t: t.time):
        r = record(tap)
        state, _ = pricer.price(states.get(r.pan_token), r)
        data = pricer.encode_state(state)
        assert pricer.decode_state(data) == state
        states[r.pan_token] = FarePricer(feed).decode_state(data)  # a fresh process's pricer
    assert pricer.encode_state(None) == b"" and pricer.decode_state(b"") is None


def test_encoded_state_is_compact(city: Feed) -> None:
    pricer = FarePricer(city)
    s, _ = pricer.price(None, rec("a", T0, "1", "S01"))
    s, _ = pricer.price(s, rec("b", T0 + timedelta(minutes=40), "2", "S05"))
    # two legs (ids, stops, times), the card token and a tier tally; no names, no prices
    assert len(pricer.encode_state(s)) < 200


def test_corrupt_or_foreign_state_is_a_clear_error(city: Feed, harbour: Feed) -> None:
    pricer = FarePricer(city)
    s, _ = pricer.price(None, rec("a", T0, "801", "D01"))
    data = pricer.encode_state(s)
    with pytest.raises(PricingError, match="does not fit this fare feed"):
        pricer.decode_state(b"\xc1garbage")
    with pytest.raises(PricingError, match="does not fit this fare feed"):
        FarePricer(harbour).decode_state(data)  # stop D01 and route 801 are not in harbour
    old = msgspec.msgpack.encode((99, 0.0, 0, None, [], []))
    with pytest.raises(PricingError, match="version 99"):
        pricer.decode_state(old)
    with pytest.raises(PricingError, match="not a fare-engine card state"):
        pricer.encode_state(object())


# -- against the engine itself -------------------------------------------------------------

ROUTES = {"1": "S", "2": "S", "5": "S", "11": "S", "801": "D"}


@st.composite
def city_taps(draw: st.DrawFn) -> list[Tap]:
    """A few cards over two days: flat routes, the distance route with or without tap off."""
    taps: list[Tap] = []
    for card in range(draw(st.integers(1, 3))):
        category = draw(st.sampled_from([None, None, "senior", "student"]))
        media = draw(st.sampled_from(["cemv", "tunion", None]))
        when = T0 + timedelta(minutes=draw(st.integers(0, 120)))
        for k in range(draw(st.integers(1, 8))):
            route = draw(st.sampled_from(sorted(ROUTES)))
            stops = 24 if ROUTES[route] == "S" else 12
            stop = f"{ROUTES[route]}{draw(st.integers(1, stops)):02d}"
            taps.append(Tap(f"c{card}-{k}", f"card{card}", when, stop, route, "on", category,
                            media))  # fmt: skip
            if route == "801" and draw(st.booleans()):
                when += timedelta(minutes=draw(st.integers(5, 150)))
                off = f"D{draw(st.integers(1, 12)):02d}"
                taps.append(Tap(f"c{card}-{k}x", f"card{card}", when, off, "801", "off",
                                category, media))  # fmt: skip
            when += timedelta(minutes=draw(st.sampled_from([10, 45, 80, 100, 400, 1000])))
    return taps


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(taps=city_taps(), cut=st.integers(0, 20))
def test_the_adapter_charges_what_the_engine_charges(taps: list[Tap], cut: int) -> None:
    feed = city_feed()
    pricer = FarePricer(feed)
    expected = price(feed, taps)
    got: list[tuple[str, int, str]] = []
    states: dict[str, object] = {}
    ordered = sorted(taps, key=lambda t: t.time)
    for i, tap in enumerate(ordered):
        r = record(tap)
        state = states.get(r.pan_token)
        if i == cut:  # a restart: every card's state comes back from storage
            states = {k: pricer.decode_state(pricer.encode_state(v)) for k, v in states.items()}
            state = states.get(r.pan_token)
        states[r.pan_token], charges = pricer.price(state, r)
        got += [(c.tap_id, c.amount, c.explain) for c in charges]
    for state in states.values():
        _, charges = pricer.close(state, ordered[-1].time + timedelta(days=1))
        got += [(c.tap_id, c.amount, c.explain) for c in charges]
    assert sorted(got) == sorted((c.tap_id, c.amount, c.explain) for c in expected)


def test_memoised_explanations_match_rendering_across_a_busy_day(city: Feed) -> None:
    """Many charges share an explanation; the memo must never hand one the wrong text."""
    pricer = FarePricer(city)
    states: dict[str, CardFareState] = {}
    seen = 0
    for i in range(300):
        card = f"k{i % 40}"
        route = ("1", "2", "5", "11", "801")[i % 5]
        stop = f"S{i % 24 + 1:02d}" if route != "801" else f"D{i % 12 + 1:02d}"
        tap = Tap(f"t{i}", card, T0 + timedelta(minutes=7 * i), stop, route, "on",
                  (None, "senior", "student")[i % 3], ("cemv", "tunion")[i % 2])  # fmt: skip
        states[card], charges = price_tap(city, states.get(card), tap)
        for c in charges:
            assert pricer.explain(c) == c.explain
            seen += 1
    assert seen >= 300 and len(pricer._explains) < seen  # shared, not one per charge
