"""The transaction core with the real fare engine: transfers, tap-off refunds and caps end up
in the one aggregate charge, refusals are kept as rejects, and a restart in the middle of a
journey loses none of the card's fare state."""

from __future__ import annotations

import dataclasses
import functools
import pickle
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backoffice.engine import BackOffice
from backoffice.fare_pricer import FarePricer
from backoffice.policy import AggregationPolicy, BackOfficeConfig, ServiceDay
from backoffice.records import AggStatus
from backoffice.reports import memory_figures, reconcile
from backoffice.service import TransactionCore
from backoffice.storage import open_store, sqlite_url
from backoffice.taps import Action, TapRecord
from fare.engine import CardFareState, price
from fare.gtfs import load_feed
from fare.model import Feed, Tap
from fare.samples import sample_feed_path
from issuer.lifecycle import Event
from issuer.service import Issuer
from tests.core_fixtures import (
    BANKS,
    CST,
    MERCHANT,
    TOKEN_KEY,
    TestCard,
    config,
    keystore,
    new_issuer,
    open_card,
    pan_for,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=CST)  # a Monday
BERLIN = ZoneInfo("Europe/Berlin")
M = timedelta(minutes=1)
H = timedelta(hours=1)


@functools.cache
def feed(name: str) -> Feed:
    return load_feed(sample_feed_path(name))


def city_tap(tc: TestCard, tap_id: str, when: datetime, route: str, stop: str,
             action: Action = Action.TAP_ON, media: str = "cemv") -> TapRecord:  # fmt: skip
    tap = tc.tap(tap_id, when, operator="lsbus", route=route, stop=stop, action=action)
    return dataclasses.replace(tap, fare_media=media)


def city_core(issuer: Issuer) -> BackOffice:
    return BackOffice(FarePricer(feed("city")), issuer, config(spend_limit=100_000))


def rec_ok(bo: BackOffice, issuer: Issuer) -> None:
    result = reconcile(memory_figures(bo, issuer.captured_total(MERCHANT)))
    assert result.ok, result.problems


def balance(issuer: Issuer, tc: TestCard) -> int:
    return issuer.account(issuer.card(tc.token).account_id).balance


def test_a_transfer_discount_is_in_the_aggregate_charge() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(501))
    open_card(issuer, tc, balance=5_000)
    bo = city_core(issuer)
    res = bo.ingest([city_tap(tc, "a", T0, "1", "S01"),
                     city_tap(tc, "b", T0 + 40 * M, "2", "S05")], T0 + H)  # fmt: skip
    assert res.accepted == 2 and res.rejected == 0
    [agg] = bo.open_aggregates()
    assert [(p.tap.tap_id, p.amount) for p in agg.taps] == [("a", 200), ("b", 100)]
    assert "transfer type 1" in agg.taps[1].explain
    res = bo.close_due(T0 + 1 * timedelta(days=1))
    [charged] = res.of_kind("charged")
    assert charged.amount == 300
    assert balance(issuer, tc) == 5_000 - 300
    rec_ok(bo, issuer)


def test_a_late_transfer_leg_reprices_the_aggregate_to_the_same_charge() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(502))
    open_card(issuer, tc, balance=5_000)
    bo = city_core(issuer)
    first, second = city_tap(tc, "a", T0, "1", "S01"), city_tap(tc, "b", T0 + 40 * M, "2", "S05")
    bo.ingest([second], T0 + H)  # the validator of the first ride uploads late
    bo.ingest([first], T0 + 2 * H)
    [agg] = bo.open_aggregates()
    assert sorted((p.tap.tap_id, p.amount) for p in agg.taps) == [("a", 200), ("b", 100)]
    assert any(e.txn_id.startswith("adj:b") for e in bo.drain_changes().entries)
    [charged] = bo.close_due(T0 + timedelta(days=1)).of_kind("charged")
    assert charged.amount == 300
    rec_ok(bo, issuer)


def test_a_late_tap_from_before_the_aggregate_closed_is_priced_alone_not_refused() -> None:
    """A validator's journal resent after an outage: the card's aggregate closed (spend limit)
    and another opened before the first ride's tap came.  The fare engine prices a card's
    taps in time order from its state, which has moved past that tap: it is priced alone (its
    own journey, full fare), accepted and charged, where it used to be refused "earlier than
    the card's previous tap" and never charged (tests/test_e2e_commits.py saw it)."""
    issuer = new_issuer()
    tc = TestCard(pan_for(504))
    open_card(issuer, tc, balance=5_000)
    bo = BackOffice(FarePricer(feed("city")), issuer, config(spend_limit=700))
    early = city_tap(tc, "early", T0, "1", "S01")  # its upload is late
    rides = [city_tap(tc, f"r{i}", T0 + 3 * i * H, route, stop)  # 3 h apart: no transfers
             for i, (route, stop) in enumerate([("1", "S01"), ("5", "S03"), ("2", "S05"),
                                                ("1", "S02"), ("5", "S04")], start=1)]  # fmt: skip
    res = bo.ingest(rides, T0 + 15 * H + 10 * M)  # 4 x 200 pass the limit: r5 opens another
    assert res.accepted == 5 and [c.amount for c in res.of_kind("charged")] == [800]
    res = bo.ingest([early], T0 + 15 * H + 20 * M)  # older than the card's state: alone
    assert (res.accepted, res.rejected) == (1, 0)
    [agg] = bo.open_aggregates()
    assert sorted((p.tap.tap_id, p.amount) for p in agg.taps) == [("early", 200), ("r5", 200)]
    # Another late tap inside the open aggregate reprices it: the early tap stays priced alone.
    mid = city_tap(tc, "mid", T0 + 15 * H - 30 * M, "11", "S07")
    assert bo.ingest([mid], T0 + 15 * H + 30 * M).rejected == 0
    [agg] = bo.open_aggregates()
    assert [p.tap.tap_id for p in sorted(agg.taps, key=lambda p: p.time_us)] == [
        "early", "mid", "r5"]
    assert dict((p.tap.tap_id, p.amount) for p in agg.taps)["early"] == 200
    bo.close_due(T0 + timedelta(days=1))
    rec_ok(bo, issuer)


def test_a_tap_off_refund_and_an_unfinished_journey() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(503))
    open_card(issuer, tc, balance=5_000)
    bo = city_core(issuer)
    bo.ingest([
        city_tap(tc, "on1", T0, "801", "D01"),
        city_tap(tc, "off1", T0 + 30 * M, "801", "D04", Action.TAP_OFF),
        city_tap(tc, "on2", T0 + 9 * H, "801", "D04"),  # never taps off
    ], T0 + 9 * H)  # fmt: skip
    [agg] = bo.open_aggregates()
    assert [p.amount for p in agg.taps] == [500, -200, 500]
    res = bo.close_due(T0 + timedelta(days=1))
    [charged] = res.of_kind("charged")
    assert charged.amount == 800  # 3.00 for the zone 1 -> 2 ride, 5.00 maximum for the other
    state = bo.cards[tc.token].fare_state
    assert isinstance(state, CardFareState) and state.journey is None  # the leg was settled
    rec_ok(bo, issuer)


def test_a_daily_cap_is_reflected_in_the_aggregate_charge() -> None:
    issuer = Issuer(keystore(), BANKS, TOKEN_KEY)
    tc = TestCard(pan_for(504))
    opened = datetime(2026, 2, 1, tzinfo=BERLIN)
    issuer.open_account("acct-eur", "ICBC", "EUR", opened, 10_000)
    issuer.issue_card(tc.pan, tc.psn, "acct-eur", scheme="tdes", imk_id="imk1",
                      expires_at=datetime(2030, 1, 1, tzinfo=BERLIN), now=opened)  # fmt: skip
    issuer.apply(tc.token, Event.ACTIVATE, opened)
    policy = AggregationPolicy(spend_limit=100_000, service_day=ServiceDay(tz=BERLIN))
    bo = BackOffice(FarePricer(feed("harbour")), issuer,
                    BackOfficeConfig(merchant_id=MERCHANT, currency="EUR", aggregation=policy))
    t0 = datetime(2026, 3, 3, 7, 0, tzinfo=BERLIN)
    rides = [("101", "B1"), ("102", "B2"), ("101", "B4"), ("102", "B3"), ("101", "B1")]
    taps = [
        dataclasses.replace(
            tc.tap(f"r{i}", t0 + i * 2 * H, operator="hvv", route=route, stop=stop),
            fare_media="card",
        )
        for i, (route, stop) in enumerate(rides)
    ]  # 2 hours apart: no bus-to-bus transfer, five 2.00 EUR singles
    bo.ingest(taps, t0 + 9 * H)
    [agg] = bo.open_aggregates()
    assert [p.amount for p in agg.taps] == [200, 200, 200, 200, 0]
    assert "capped by day_adult" in agg.taps[-1].explain
    [charged] = bo.close_due(t0 + timedelta(days=1)).of_kind("charged")
    assert charged.amount == 800  # the daily cap, not five fares
    assert issuer.account("acct-eur").balance == 10_000 - 800
    rec_ok(bo, issuer)


def test_taps_the_fare_engine_refuses_are_rejected_with_their_reason() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(505))
    open_card(issuer, tc)
    bo = city_core(issuer)
    good = city_tap(tc, "ok", T0 + H, "1", "S01")
    bad_route = city_tap(tc, "r9", T0 + 2 * H, "R9", "S01")
    bad_media = city_tap(tc, "qp", T0 + 3 * H, "2", "S02", media="quickpass")
    res = bo.ingest([good, bad_route, bad_media], T0 + 3 * H)
    assert (res.accepted, res.rejected) == (1, 2)
    reasons = {e.ref: e.detail for e in res.of_kind("rejected")}
    assert reasons["r9"] == "fare: cannot price: tap r9: unknown route_id 'R9'"
    assert "fare_media 'quickpass' is not in the fare feed" in reasons["qp"]
    rejects = bo.drain_changes().rejects
    assert {r.tap_id for r in rejects} == {"r9", "qp"}
    assert all(r.field == "fare" for r in rejects)
    # A tap older than a closed aggregate cannot be priced in the card's time order: it is
    # priced alone (its own journey: route 5's flat fare) and charged, not refused.
    bo.close_due(T0 + timedelta(days=1))
    bo.ingest([city_tap(tc, "next", T0 + timedelta(days=1, hours=2), "1", "S01")],
              T0 + timedelta(days=1, hours=2))  # fmt: skip
    res = bo.ingest([city_tap(tc, "stale", T0 + 30 * M, "5", "S03")], T0 + timedelta(days=2))
    assert (res.accepted, res.rejected) == (1, 0)
    stale = next(t for t in bo.drain_changes().taps if t.tap_id == "stale")
    assert stale.amount == 200


@pytest.mark.parametrize("restart_after", [1, 2])
def test_a_restart_mid_journey_keeps_the_fare_state(tmp_path: Path, restart_after: int) -> None:
    """Tap on the distance route, then transfer; the core restarts between the taps."""
    url = sqlite_url(tmp_path / 'core.db')
    tc = TestCard(pan_for(506))
    taps = [
        city_tap(tc, "on", T0, "801", "D01"),
        city_tap(tc, "off", T0 + 30 * M, "801", "D04", Action.TAP_OFF),
        city_tap(tc, "xfer", T0 + 60 * M, "2", "S05"),
    ]

    def start() -> TransactionCore:
        return TransactionCore(open_store(url), FarePricer(load_feed(sample_feed_path("city"))),
                               keystore(), BANKS, TOKEN_KEY, config(spend_limit=100_000))

    core = start()
    core.run(lambda: open_card(core.issuer, tc, balance=5_000))
    core.ingest(taps[:restart_after], T0 + H)
    core.store.close()
    core = start()  # a new process: memory rebuilt from the store
    core.ingest(taps[restart_after:], T0 + 2 * H)
    [agg] = core.core.open_aggregates()
    # 5.00 at the tap on, 2.00 back at the tap off (zones 1 -> 2), then route 2 at 2.00 less
    # the 1.00 transfer discount: the open journey came back from the store intact.
    assert [(p.tap.tap_id, p.amount) for p in agg.taps] == [("on", 500), ("off", -200),
                                                            ("xfer", 100)]  # fmt: skip
    [charged] = core.close_due(T0 + timedelta(days=1)).of_kind("charged")
    assert charged.amount == 400
    assert core.reconcile().ok
    core.store.close()


# -- the core charges what the engine charges ---------------------------------------------


@st.composite
def rides(draw: st.DrawFn) -> list[tuple[int, int, str, str, bool]]:
    """(card, minutes after T0, route, stop, tapped off 20 min later) within a service day."""
    out = []
    for card in range(draw(st.integers(1, 3))):
        minute = draw(st.integers(0, 60))
        for _ in range(draw(st.integers(1, 6))):
            route = draw(st.sampled_from(["1", "2", "5", "11", "801"]))
            stop = f"D{draw(st.integers(1, 12)):02d}" if route == "801" else \
                f"S{draw(st.integers(1, 24)):02d}"
            out.append((card, minute, route, stop, route == "801" and draw(st.booleans())))
            minute += draw(st.sampled_from([30, 50, 95, 200]))
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=rides(), days=st.integers(1, 2))
def test_the_core_charges_in_total_what_the_engine_prices(
    plan: list[tuple[int, int, str, str, bool]], days: int
) -> None:
    issuer = new_issuer()
    cards = [TestCard(pan_for(600 + i), "sm4" if i % 2 else "tdes") for i in range(3)]
    for tc in cards:
        open_card(issuer, tc, balance=100_000)
    records: list[TapRecord] = []
    for day in range(days):
        for n, (card, minute, route, stop, off) in enumerate(plan):
            when = T0 + timedelta(days=day, minutes=minute)
            records.append(city_tap(cards[card], f"{day}-{n}", when, route, stop))
            if off:
                records.append(city_tap(cards[card], f"{day}-{n}x", when + 20 * M, "801",
                                        "D06", Action.TAP_OFF))  # fmt: skip
    records.sort(key=lambda r: r.time)
    engine = price(feed("city"), [
        Tap(r.tap_id, r.pan_token, r.time, r.stop_id, r.route_id,
            "off" if r.action is Action.TAP_OFF else "on", None, r.fare_media)
        for r in records
    ])  # fmt: skip
    bo = city_core(issuer)
    for i in range(0, len(records), 5):
        batch = records[i : i + 5]
        bo.ingest(batch, batch[-1].time)
    bo.close_due(T0 + timedelta(days=days + 1))
    total = sum(c.amount for c in engine)
    assert bo.fares_total == total
    assert issuer.captured_total(MERCHANT) == total  # every aggregate charged in full
    rows = bo.drain_changes().aggregates
    assert not bo.open_aggregates() and rows
    assert all(a.status == AggStatus.CHARGED.value for a in rows)
    rec_ok(bo, issuer)


def test_explanations_made_late_read_as_the_pricers_own() -> None:
    """The core leaves a charge's sentence to the pricer until it is read (PricedTap.explain):
    the rows it drains, the taps it holds and a pickled tap say what FarePricer.price says
    for the same taps, in order, on a day with a transfer, a tap off and a new journey."""
    issuer = new_issuer()
    tc = TestCard(pan_for(502))
    open_card(issuer, tc, balance=50_000)
    taps = [city_tap(tc, "a", T0, "1", "S01"), city_tap(tc, "b", T0 + 40 * M, "2", "S05"),
            city_tap(tc, "c", T0 + 5 * H, "5", "S09"),
            city_tap(tc, "d", T0 + 5 * H + 30 * M, "11", "S12")]  # fmt: skip
    pricer = FarePricer(feed("city"))
    state: object | None = None
    expected: dict[str, str] = {}
    for t in taps:
        state, [charge] = pricer.price(state, t)
        expected[t.tap_id] = charge.explain
    bo = city_core(issuer)
    bo.ingest(taps[:2], T0 + H)
    [agg] = bo.open_aggregates()
    held = {p.tap.tap_id: p for p in agg.taps}
    assert held["a"].explain == expected["a"]  # read before the row is made
    rows = {r.tap_id: r.explain for r in bo.drain_changes().taps}
    bo.ingest(taps[2:], T0 + 6 * H)
    rows.update({r.tap_id: r.explain for r in bo.drain_changes().taps})
    assert rows == expected
    assert all(text for text in rows.values())
    [agg] = bo.open_aggregates()
    assert {p.tap.tap_id: pickle.loads(pickle.dumps(p)).explain for p in agg.taps} == expected
