"""Property tests: caps are never exceeded; a later tap never lowers what earlier journeys of a
closed day were charged; the cached local clock agrees with zoneinfo."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from fare.caps import CapKind
from fare.clock import DAY, LocalClock
from fare.engine import price
from fare.explain import Charge, ChargeKind
from fare.gtfs import load_feed
from fare.model import Feed, Tap
from fare.samples import sample_feed_path

HARBOUR: Feed = load_feed(sample_feed_path("harbour"))
TZ = HARBOUR.timezone
START = datetime(2025, 3, 3, 5, 0, tzinfo=TZ)  # a Monday; DST starts on 2025-03-30

# (route, stops it serves)
RIDES = [("101", ["B1", "B2", "B3", "B4"]), ("102", ["B2", "B3"]), ("U1", ["M1", "M4", "M6"]),
         ("U2", ["M2", "M3", "M5"]), ("T5", ["T1", "T2", "T3"]), ("F9", ["F1", "F2"])]

tap_step = st.tuples(
    st.integers(min_value=0, max_value=900),  # minutes since the previous tap
    st.integers(min_value=0, max_value=len(RIDES) - 1),
    st.integers(min_value=0, max_value=3),  # stop index (modulo)
    st.sampled_from(["on", "on", "off"]),
)
card_profile = st.tuples(st.sampled_from([None, "adult", "child"]),
                         st.sampled_from([None, "card", "cemv"]))


def build(steps: list[tuple[int, int, int, str]], profile: tuple[str | None, str | None],
          card: str = "c", start: datetime = START) -> list[Tap]:
    taps: list[Tap] = []
    t = start
    for i, (gap, ride, stop, action) in enumerate(steps):
        t += timedelta(minutes=gap)
        route, stops = RIDES[ride]
        taps.append(Tap(f"{card}{i}", card, t, stops[stop % len(stops)], route,
                        action, *profile))  # type: ignore[arg-type]
    return taps


def counted(charges: list[Charge]) -> list[Charge]:
    """Charges that count towards caps: not the maximum fare of an incomplete leg, not a tap off
    with no tap on."""
    incomplete = {c.tap_id for c in charges if c.kind is ChargeKind.INCOMPLETE}
    return [c for c in charges
            if c.kind not in (ChargeKind.INCOMPLETE, ChargeKind.MISSING_TAP_ON)
            and not (c.kind is ChargeKind.MAX_FARE and c.tap_id in incomplete)]


def service_day(when: datetime, cut_over: int) -> date:
    return (when.astimezone(TZ) - timedelta(seconds=cut_over)).date()


@settings(max_examples=150, deadline=None)
@given(st.lists(tap_step, min_size=1, max_size=40), card_profile)
def test_a_cap_is_never_exceeded(steps: list[tuple[int, int, int, str]],
                                 profile: tuple[str | None, str | None]) -> None:
    charges = price(HARBOUR, build(steps, profile))
    journey_start: dict[int, datetime] = {}
    for c in charges:
        journey_start.setdefault(c.journey, c.time)
    cat = profile[0] or "adult"
    for cap in HARBOUR.caps:
        if cap.rider_category_id not in (None, cat) or cap.fare_media_id not in (None, profile[1]):
            continue
        by_period: dict[object, int] = defaultdict(int)
        per_journey: dict[int, int] = defaultdict(int)
        for c in counted(charges):
            anchor = journey_start[c.journey]
            per_journey[c.journey] += c.amount
            if cap.kind is CapKind.DAILY:
                by_period[service_day(anchor, cap.start_time)] += c.amount
            elif cap.kind is CapKind.WEEKLY:
                d = service_day(anchor, cap.start_time)
                by_period[d - timedelta(days=(d.weekday() - cap.start_day) % 7)] += c.amount
        if cap.kind is CapKind.ROLLING:
            for j, anchor in journey_start.items():
                window = sum(per_journey[k] for k, a in journey_start.items()
                             if anchor - timedelta(days=cap.days) < a <= anchor)
                assert window <= cap.amount, (cap.cap_id, j)
        for period, amount in by_period.items():
            assert amount <= cap.amount, (cap.cap_id, period, amount)


@settings(max_examples=150, deadline=None)
@given(st.lists(tap_step, min_size=1, max_size=25), card_profile, tap_step,
       st.integers(min_value=0, max_value=3 * 24 * 60))
def test_a_later_tap_never_lowers_earlier_journeys_of_a_closed_day(
        steps: list[tuple[int, int, int, str]], profile: tuple[str | None, str | None],
        extra: tuple[int, int, int, str], later_minutes: int) -> None:
    taps = build(steps, profile)
    last = taps[-1].time.astimezone(TZ)
    # The day is closed: the new tap comes after the end of the last tap's service day and
    # after any tap-off window (3 h in this feed) has run out.
    day_end = datetime.combine(service_day(last, 4 * 3600 + 30 * 60) + timedelta(days=1),
                               datetime.min.time(), TZ) + timedelta(hours=4, minutes=30)
    when = max(day_end, last + timedelta(hours=3, seconds=1)) + timedelta(minutes=later_minutes)
    _, ride, stop, action = extra
    route, stops = RIDES[ride]
    new = Tap("new", "c", when, stops[stop % len(stops)], route, action, *profile)  # type: ignore[arg-type]

    def per_journey(charges: list[Charge]) -> dict[int, int]:
        out: dict[int, int] = defaultdict(int)
        for c in charges:
            if c.tap_id != "new":
                out[c.journey] += c.amount
        return out

    before = per_journey(price(HARBOUR, taps))
    after = per_journey(price(HARBOUR, [*taps, new]))
    for journey, amount in before.items():
        assert after[journey] >= amount, journey


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2_000_000_000),
       st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Shanghai",
                        "Australia/Lord_Howe"]))
def test_cached_clock_matches_zoneinfo(ts: int, zone: str) -> None:
    tz = ZoneInfo(zone)
    clock = LocalClock(tz)
    local = clock.local(ts)
    wall = datetime.fromtimestamp(ts, tz).replace(tzinfo=UTC)
    assert local == wall.timestamp()
    assert int(local // DAY) == (wall.date() - date(1970, 1, 1)).days
