"""The core's per-tap shortcuts decide as the long way did.

* Service days come from a memo per quarter hour; every label equals ``ServiceDay.label``,
  across daylight-saving changes, half-hour zones and a cut-over inside the changed hour.
* Times are compared as integer microseconds: the same aggregates close, late taps are late.
* A tap time without a UTC offset is refused as before.
* Results and the fare pricer still pickle when the core is compiled.
"""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backoffice.engine import BackOffice
from backoffice.fare_pricer import FarePricer
from backoffice.outcomes import BatchResult, Outcome
from backoffice.policy import AggregationPolicy, BackOfficeConfig, PolicyError, ServiceDay
from backoffice.pricing import FlatFarePricer
from backoffice.records import PricedTap, to_us
from fare.gtfs import load_feed
from fare.samples import sample_feed_path
from tests.core_fixtures import MERCHANT, T0, TestCard, new_issuer, open_card, pan_for

ZONES = ["Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe", "America/St_Johns"]


def core_for(day: ServiceDay, *cards: TestCard) -> BackOffice:
    issuer = new_issuer()
    for tc in cards:
        open_card(issuer, tc, balance=1_000_000)
    policy = AggregationPolicy(spend_limit=100_000, service_day=day)
    return BackOffice(FlatFarePricer(default=200, service_day=day), issuer,
                      BackOfficeConfig(merchant_id=MERCHANT, aggregation=policy))  # fmt: skip


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(ZONES), st.sampled_from([time(0, 0), time(2, 30), time(4, 0), time(3, 10)]),
       st.sampled_from([(2025, 3, 30), (2025, 10, 26), (2025, 4, 6), (2025, 11, 2)]))
def test_service_days_are_the_service_day_labels(zone: str, cutover: time,
                                                 ymd: tuple[int, int, int]) -> None:
    tz = ZoneInfo(zone)
    day = ServiceDay(tz=tz, cutover=cutover)
    tc = TestCard(pan_for(77))
    bo = core_for(day, tc)
    start = datetime(*ymd, tzinfo=UTC) - timedelta(hours=14)
    # Every 7 minutes for 30 hours, each time in a different zone's clothes.
    zones: list[tzinfo] = [UTC, tz, ZoneInfo("Asia/Shanghai")]
    taps = [tc.tap(f"t{i}", (start + timedelta(minutes=7 * i)).astimezone(zones[i % 3]))
            for i in range(30 * 60 // 7)]  # fmt: skip
    for i in range(0, len(taps), 40):
        bo.ingest(taps[i:i + 40], taps[min(i + 39, len(taps) - 1)].time)
    rows = bo.drain_changes().taps
    assert len(rows) == len(taps)
    for row, tap in zip(rows, taps, strict=True):
        assert row.service_day == day.label(tap.time), tap.time


def test_travel_time_and_late_taps_compare_as_instants_in_any_zone() -> None:
    tc = TestCard(pan_for(78))
    day = ServiceDay()
    issuer = new_issuer()
    open_card(issuer, tc, balance=1_000_000)
    policy = AggregationPolicy(spend_limit=100_000, max_travel_time=timedelta(days=2),
                               close_at_day_end=False)  # fmt: skip
    bo = BackOffice(FlatFarePricer(default=200, service_day=day), issuer,
                    BackOfficeConfig(merchant_id=MERCHANT, aggregation=policy))  # fmt: skip
    west = datetime(2026, 3, 2, 0, 0, tzinfo=UTC).astimezone(ZoneInfo("America/Los_Angeles"))
    first = tc.tap("a", west)
    bo.ingest([first], west)
    late = tc.tap("b", (west - timedelta(minutes=1)).astimezone(UTC))  # earlier instant
    res = bo.ingest([late], west)
    assert res.accepted == 1 and not res.of_kind("charged")
    agg = bo.open_aggregates()[0]
    assert agg.first_us == to_us(late.time) and (agg.last_us, agg.last_tap_id) == (to_us(west), "a")
    exactly = tc.tap("c", west + timedelta(days=2, minutes=-1))  # two days after the late one
    assert not bo.ingest([exactly], exactly.time).of_kind("charged")
    beyond = tc.tap("d", west + timedelta(days=2, minutes=-1, microseconds=1))
    charged = bo.ingest([beyond], beyond.time).of_kind("charged")
    assert [c.detail for c in charged] == ["max_travel_time"]


def test_a_time_without_utc_offset_is_refused_as_before() -> None:
    tc = TestCard(pan_for(79))
    bo = core_for(ServiceDay(), tc)
    naive = dataclasses.replace(tc.tap("n", T0), time=T0.replace(tzinfo=None))
    with pytest.raises(PolicyError, match="timezone-aware"):
        bo.ingest([naive], T0)

    class NoOffset(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta | None:
            return None

    fare = BackOffice(FarePricer(load_feed(sample_feed_path("city")), strict_labels=False),
                      new_issuer(), BackOfficeConfig(merchant_id=MERCHANT))  # fmt: skip
    odd = dataclasses.replace(tc.tap("o", T0, route="1", stop="S01"),
                              time=T0.replace(tzinfo=NoOffset()))  # fmt: skip
    res = fare.ingest([odd], T0)
    assert res.rejected == 1 and "no UTC offset" in res.events[0].detail


def test_results_and_the_fare_pricer_pickle() -> None:
    tc = TestCard(pan_for(80))
    bo = core_for(ServiceDay(), tc)
    res = bo.ingest([tc.tap("p", T0)], T0)
    res.events.append(Outcome("alert", "622202******1234", "ref", 0, "", "detail"))
    assert pickle.loads(pickle.dumps(res)) == res
    assert isinstance(pickle.loads(pickle.dumps(BatchResult())), BatchResult)
    priced = bo.open_aggregates()[0].taps[0]
    back = pickle.loads(pickle.dumps(priced))
    assert isinstance(back, PricedTap)
    assert (back.tap, back.amount, back.time_us) == (priced.tap, priced.amount, priced.time_us)
    pricer = FarePricer(load_feed(sample_feed_path("city")))
    tap = dataclasses.replace(tc.tap("q", T0, route="1", stop="S01"), fare_media="cemv")
    expected = pricer.price(None, tap)
    again = pickle.loads(pickle.dumps(pricer))
    assert again.price(None, tap) == expected
