"""The engine's shortcuts give what the long way gives.

* A tap continues the open journey's transfer walk (``OpenJourney.base``/``.walk``) instead of
  pricing every leg again: after every tap the walks equal those priced afresh from the legs,
  on feeds with transfers, caps, timeframes (harbour) and join rules.
* ``posix_seconds`` / ``epoch_us`` read fixed-offset times from their fields: the same float as
  ``datetime.timestamp()`` and the same integer as ``t - epoch``, before and after 1970.
* The records (legs, walks, journey state, charges) keep value semantics and pickle.
"""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from fare.clock import epoch_us, posix_seconds
from fare.engine import CardFareState, close_card, feed_index, open_journey, price, price_tap
from fare.gtfs import load_feed
from fare.model import Feed, Tap
from fare.samples import sample_feed_path
from tests.fare_helpers import feed

HARBOUR: Feed = load_feed(sample_feed_path("harbour"))
HARBOUR_RIDES = [("101", ["B1", "B2", "B3", "B4"]), ("102", ["B2", "B3"]),
                 ("U1", ["M1", "M4", "M6"]), ("U2", ["M2", "M3", "M5"]), ("T5", ["T1", "T2", "T3"]),
                 ("F9", ["F1", "F2"])]  # fmt: skip
# Two metro lines whose consecutive rides at one station are one effective leg, a bus, and
# transfers both ways with products, so joins, transfer runs and unpriced legs all occur.
JOINED: Feed = feed(
    areas="area_id\nA\nB\nC\n",
    stop_areas="area_id,stop_id\nA,s1\nB,s3\nC,s4\n",
    routes="route_id,route_short_name,route_type,network_id\n"
           "r1,1,1,metro\nr2,2,1,metro\nb1,3,3,bus\n",
    fare_products="fare_product_id,amount,currency\nAA,2.00,USD\nAB,3.00,USD\nBB,2.00,USD\n"
                  "short,1.50,USD\nbus,1.00,USD\nxfer,0.50,USD\n",
    fare_leg_rules="leg_group_id,network_id,from_area_id,to_area_id,fare_product_id\n"
                   "m,metro,A,A,AA\nm,metro,A,B,AB\nm,metro,B,B,BB\nm,metro,,,short\nb,bus,,,bus\n",
    fare_leg_join_rules="from_network_id,to_network_id\nmetro,metro\n",
    fare_transfer_rules="from_leg_group_id,to_leg_group_id,transfer_count,duration_limit,"
                        "duration_limit_type,fare_transfer_type,fare_product_id\n"
                        "m,b,,3600,1,1,xfer\nb,m,,3600,0,0,\nb,b,-1,5400,3,2,\n",
)  # fmt: skip
JOINED_RIDES = [(r, ["s1", "s2", "s3", "s4"]) for r in ("r1", "r2", "b1")]

step = st.tuples(
    st.sampled_from([0, 1, 5, 10, 20, 45, 90, 200, 900]),  # minutes since the previous tap
    st.integers(min_value=0, max_value=5),  # ride (modulo)
    st.integers(min_value=0, max_value=3),  # stop (modulo)
    st.sampled_from(["on", "on", "off"]),
)


def taps_of(f: Feed, rides: list[tuple[str, list[str]]], steps: list[tuple[int, int, int, str]],
            start: datetime) -> list[Tap]:
    out: list[Tap] = []
    t = start
    for i, (gap, ride, stop, action) in enumerate(steps):
        t += timedelta(minutes=gap)
        route, stops = rides[ride % len(rides)]
        out.append(Tap(f"t{i}", "c", t, stops[stop % len(stops)], route, action))  # type: ignore[arg-type]
    return out


def check_walks(f: Feed, state: CardFareState) -> None:
    j = state.journey
    if j is None:
        return
    assert (j.base, j.walk) == feed_index(f).walks(j.legs, j.pending >= 0)
    fresh = open_journey(f, j.terms, j.legs, j.fare, j.discounted, j.charged, j.pending,
                         j.pending_charged)
    assert fresh == j
    if j.pending < 0:
        assert j.walk.total == j.fare == feed_index(f).price_legs(j.legs).total


@settings(max_examples=120, deadline=None)
@given(st.lists(step, min_size=1, max_size=30), st.sampled_from(["harbour", "joined"]))
def test_the_incremental_walk_is_the_walk_priced_afresh(
        steps: list[tuple[int, int, int, str]], which: str) -> None:  # fmt: skip
    f, rides = (HARBOUR, HARBOUR_RIDES) if which == "harbour" else (JOINED, JOINED_RIDES)
    start = datetime(2025, 3, 29, 22, 0, tzinfo=UTC)  # harbour's DST starts the next night
    taps = taps_of(f, rides, steps, start)
    state: CardFareState | None = None
    folded = []
    for tap in taps:
        state, charges = price_tap(f, state, tap)
        folded += charges
        check_walks(f, state)
    assert state is not None
    state, rest = close_card(f, state)
    folded += rest
    check_walks(f, state)
    assert [(c.tap_id, c.amount, c.kind, c.explain) for c in folded] == [
        (c.tap_id, c.amount, c.kind, c.explain) for c in price(f, taps)
    ]


ride = st.tuples(
    st.sampled_from([0, 2, 10, 30, 70]),  # minutes before boarding
    st.sampled_from([0, 1, 0, 1, 2]),  # route: mostly metro
    st.integers(min_value=0, max_value=3),  # boarding stop, unless at the last alighting
    st.sampled_from([True, True, False]),  # board where the last ride ended (a join)
    st.integers(min_value=0, max_value=3),  # alighting stop
    st.sampled_from([5, 20, 200]),  # minutes on board
    st.sampled_from([True, True, True, False]),  # taps off
)


@settings(max_examples=120, deadline=None)
@given(st.lists(ride, min_size=1, max_size=12))
def test_the_incremental_walk_through_joined_legs(
        rides: list[tuple[int, int, int, bool, int, int, bool]]) -> None:  # fmt: skip
    stops = JOINED_RIDES[0][1]
    t = datetime(2024, 3, 4, 7, 0, tzinfo=UTC)
    taps: list[Tap] = []
    last_stop: str | None = None
    for i, (gap, route, board, change, alight, minutes, off) in enumerate(rides):
        t += timedelta(minutes=gap)
        route_id = JOINED_RIDES[route][0]
        at = last_stop if change and last_stop is not None else stops[board]
        taps.append(Tap(f"t{i}on", "c", t, at, route_id, "on"))
        last_stop = None
        if off:
            t += timedelta(minutes=minutes)
            last_stop = stops[alight]
            taps.append(Tap(f"t{i}off", "c", t, last_stop, route_id, "off"))
    state: CardFareState | None = None
    for tap in taps:
        state, _ = price_tap(JOINED, state, tap)
        check_walks(JOINED, state)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(min_value=-2_000_000_000, max_value=4_000_000_000),
    st.integers(min_value=0, max_value=999_999),
    st.sampled_from([timezone(timedelta(hours=8)), timezone(timedelta(hours=-3, minutes=-30)),
                     UTC, timezone(timedelta(hours=14)), ZoneInfo("Europe/Berlin"),
                     ZoneInfo("Australia/Lord_Howe")]),
)  # fmt: skip
def test_fast_timestamps_are_the_exact_ones(seconds: int, micro: int, tz: timezone) -> None:
    t = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=micro))
    t = t.astimezone(tz)
    d = t - datetime(1970, 1, 1, tzinfo=UTC)
    assert epoch_us(t) == (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
    assert posix_seconds(t) == t.timestamp()


def test_records_keep_value_semantics_and_pickle() -> None:
    t0 = datetime(2025, 3, 3, 8, 0, tzinfo=HARBOUR.timezone)
    state, first = price_tap(HARBOUR, None, Tap("a", "c", t0, "B1", "101", "on"))
    state, second = price_tap(HARBOUR, state, Tap("b", "c", t0 + timedelta(minutes=20), "M1",
                                                  "U1", "on"))  # fmt: skip
    assert state.journey is not None and len(state.journey.legs) == 2  # a transfer
    for value in (state, state.journey, state.journey.legs[0], state.journey.walk, *second):
        assert pickle.loads(pickle.dumps(value)) == value
        assert copy.deepcopy(value) == value
        assert hash(copy.copy(value)) == hash(value)
        assert type(value)(*tuple(value)) == value  # fields in order, as a NamedTuple's
        assert repr(value).startswith(type(value).__name__ + "(")
    assert state != price_tap(HARBOUR, None, Tap("a", "c", t0, "B1", "101", "on"))[0]
    assert second[0].detail.legs == state.journey.legs
    feed_back = pickle.loads(pickle.dumps(HARBOUR))  # its index is not pickled, but rebuilt
    assert price_tap(feed_back, None, Tap("a", "c", t0, "B1", "101", "on"))[1] == first
