"""The in-memory transaction core: deferred authorization, deny list, debt recovery, ledger,
and the same answer under duplicated and reordered delivery."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backoffice.engine import BackOffice
from backoffice.ledger import (
    FIRST_RIDE_LOSS,
    ISSUER_SETTLEMENT,
    RECEIVABLE,
    REVENUE,
    check_entries,
)
from backoffice.policy import (
    AggregationPolicy,
    BackOfficeConfig,
    PolicyError,
    RecoveryPolicy,
)
from backoffice.pricing import FareCharge, FlatFarePricer, PricingError
from backoffice.records import AggStatus, DebtStatus, debt_row
from backoffice.reports import first_ride_risk, memory_figures, reconcile
from backoffice.taps import Action, TapRecord
from issuer.lifecycle import Event
from issuer.models import AuthKind, ReplaceReason
from issuer.service import Issuer
from tests.core_fixtures import (
    CST,
    MERCHANT,
    T0,
    TestCard,
    config,
    core,
    new_issuer,
    open_card,
    pan_for,
)

H = timedelta(hours=1)
DAY = timedelta(days=1)


def rec_ok(bo: BackOffice, issuer: Issuer) -> None:
    result = reconcile(memory_figures(bo, issuer.captured_total(MERCHANT)))
    assert result.ok, result.problems


def balance(issuer: Issuer, tc: TestCard) -> int:
    return issuer.account(issuer.card(tc.token).account_id).balance


def test_a_day_of_taps_is_one_verification_and_one_charge() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(1))
    open_card(issuer, tc, balance=10_000)
    bo = core(issuer)
    res = bo.ingest([tc.tap(f"t{i}", T0 + i * H) for i in range(3)], T0 + 3 * H)
    assert res.accepted == 3 and not res.events
    kinds = [r.kind for r in issuer.auths.values()]
    assert kinds == [AuthKind.ACCOUNT_VERIFICATION]
    assert bo.close_due(T0 + 12 * H).events == []  # the service day is not over
    res = bo.close_due(T0 + DAY)
    [charged] = res.of_kind("charged")
    assert charged.amount == 600 and charged.detail == "service_day_end"
    assert [r.kind for r in issuer.auths.values()][-1] is AuthKind.DEFERRED
    assert balance(issuer, tc) == 9_400
    assert bo.balances == {RECEIVABLE: 0, REVENUE: -600, ISSUER_SETTLEMENT: 600, FIRST_RIDE_LOSS: 0}
    changes = bo.drain_changes()
    check_entries(changes.entries)
    assert {a.status for a in changes.aggregates} == {AggStatus.CHARGED.value}
    rec_ok(bo, issuer)


def test_spend_limit_closes_the_aggregate_and_the_next_tap_verifies_again() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(2))
    open_card(issuer, tc)
    bo = core(issuer, spend_limit=500)
    res = bo.ingest([tc.tap(f"t{i}", T0 + i * H) for i in range(4)], T0 + 4 * H)
    [charged] = res.of_kind("charged")
    assert charged.amount == 600 and charged.detail == "spend_limit"
    assert len(bo.open_aggregates()) == 1 and bo.open_aggregates()[0].total == 200
    avs = [r for r in issuer.auths.values() if r.kind is AuthKind.ACCOUNT_VERIFICATION]
    assert len(avs) == 2
    rec_ok(bo, issuer)


def test_max_travel_time_when_aggregating_over_days() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(3))
    open_card(issuer, tc)
    bo = core(issuer, close_at_day_end=False, max_travel_time=3 * DAY, spend_limit=100_000)
    bo.ingest([tc.tap(f"t{i}", T0 + i * DAY) for i in range(5)], T0 + 5 * DAY)
    charges = [r for r in issuer.auths.values() if r.kind is AuthKind.DEFERRED]
    assert [c.amount for c in charges] == [800]  # days 0-3; day 4 opened a new aggregate
    res = bo.close_due(T0 + 7 * DAY + H)
    assert [e.amount for e in res.of_kind("charged")] == [200]
    rec_ok(bo, issuer)


def test_policies_refuse_what_the_schemes_forbid() -> None:
    with pytest.raises(PolicyError, match="14 days"):
        AggregationPolicy(max_travel_time=timedelta(days=15))
    with pytest.raises(PolicyError, match="retries"):
        RecoveryPolicy(retry_after=tuple(timedelta(days=i + 1) for i in range(7)))
    with pytest.raises(PolicyError, match="within 14 days"):
        RecoveryPolicy(retry_after=(timedelta(days=1), timedelta(days=15)))
    with pytest.raises(PricingError, match="USD"):
        BackOffice(FlatFarePricer(default=1, currency="USD"), new_issuer(), BackOfficeConfig())


def test_declined_charge_deny_lists_and_scheduled_recovery_lifts_it() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(4))
    card = open_card(issuer, tc, balance=300)
    bo = core(issuer)
    bo.ingest([tc.tap(f"t{i}", T0 + i * H) for i in range(3)], T0 + 3 * H)
    close_at = T0 + DAY
    res = bo.close_due(close_at)
    [declined] = res.of_kind("declined")
    assert declined.code == "51" and declined.amount == 600
    assert tc.token in bo.deny and res.of_kind("deny_add")
    assert bo.run_recovery(close_at + 12 * H).events == []  # first retry is a day later
    issuer.deposit(card.account_id, 1_000, close_at + 20 * H)
    retry_at = close_at + DAY
    res = bo.run_recovery(retry_at)
    [recovered] = res.of_kind("recovered")
    assert recovered.amount == 600
    assert res.of_kind("deny_remove") and tc.token not in bo.deny
    events = bo.drain_changes().deny_events
    assert [e.op for e in events] == ["add", "remove"]
    assert events[1].at_us - events[0].at_us == int(DAY.total_seconds() * 1e6)
    assert [r.kind for r in issuer.auths.values()][-1] is AuthKind.RESUBMISSION
    assert balance(issuer, tc) == 700
    rec_ok(bo, issuer)


def test_six_retries_in_fourteen_days_then_written_off_then_recovered_by_a_tap() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(5))
    card = open_card(issuer, tc, balance=0)
    bo = core(issuer)
    bo.ingest([tc.tap("t0", T0), tc.tap("t1", T0 + H)], T0 + H)
    close_at = T0 + DAY
    bo.close_due(close_at)
    attempts = 0
    for day in range(1, 15):
        res = bo.run_recovery(close_at + day * DAY)
        attempts += len([r for r in res.events if r.kind == "written_off"])
    resubs = [r for r in issuer.auths.values() if r.kind is AuthKind.RESUBMISSION]
    assert len(resubs) == 6
    assert max(r.at for r in resubs) <= close_at + timedelta(days=14)
    [debt] = bo.unpaid_debts()
    assert debt.status is DebtStatus.WRITTEN_OFF and attempts == 1
    assert bo.balances[FIRST_RIDE_LOSS] == 400 and bo.balances[RECEIVABLE] == 0
    risk = first_ride_risk([debt_row(debt)])
    assert (risk.outstanding, risk.written_off, risk.cards) == (0, 400, 1)
    assert tc.token in bo.deny  # written off is not forgiven
    rec_ok(bo, issuer)

    issuer.deposit(card.account_id, 5_000, close_at + 20 * DAY)
    res = bo.ingest([tc.tap("t2", close_at + 21 * DAY)], close_at + 21 * DAY)
    assert [e.amount for e in res.of_kind("recovered")] == [400]
    assert res.of_kind("deny_remove") and tc.token not in bo.deny
    assert bo.balances[FIRST_RIDE_LOSS] == 0
    last = list(issuer.auths.values())[-1]
    assert last.kind is AuthKind.PURCHASE and last.amount == 400
    [agg] = bo.open_aggregates()
    assert agg.verified and agg.auth_ref == "rec:t2"  # no second verification for this tap
    bo.close_due(close_at + 23 * DAY)
    assert balance(issuer, tc) == 5_000 - 400 - 200
    rec_ok(bo, issuer)


def test_nominal_hold_is_released_when_the_aggregate_closes() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(6))
    card = open_card(issuer, tc, balance=1_000)
    bo = core(issuer, nominal_amount=100)
    bo.ingest([tc.tap("t0", T0)], T0)
    assert issuer.account(card.account_id).held == 100
    bo.close_due(T0 + DAY)
    account = issuer.account(card.account_id)
    assert (account.balance, account.held) == (800, 0)


STATE_SETUP = {
    "not_activated": ("78", lambda i, t: None),
    "lost": ("41", lambda i, t: i.apply(t, Event.REPORT_LOST, T0 - H)),
    "sealed": ("62", lambda i, t: i.apply(t, Event.SEAL, T0 - H)),
    "cancelled": ("46", lambda i, t: i.apply(t, Event.CANCEL, T0 - H)),
    "active": ("00", lambda i, t: None),
    "unfrozen": (
        "00",
        lambda i, t: (i.apply(t, Event.REPORT_LOST, T0 - H), i.apply(t, Event.UNFREEZE, T0 - H)),
    ),
}


@pytest.mark.parametrize("state", sorted(STATE_SETUP))
def test_taps_of_a_card_in_each_state(state: str) -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(7))
    card = open_card(issuer, tc, activate=state != "not_activated")
    code, setup = STATE_SETUP[state]
    setup(issuer, tc.token)
    bo = core(issuer)
    res = bo.ingest([tc.tap("t0", T0), tc.tap("t1", T0 + H)], T0 + H)
    assert res.accepted == 2  # the rides happened: accepted offline either way
    av = issuer.auths["av:A:t0"]
    assert av.code.value == code
    assert (tc.token in bo.deny) == (code != "00")
    res = bo.close_due(T0 + DAY)
    if code == "00":
        assert [e.amount for e in res.of_kind("charged")] == [400]
    else:
        assert [e.code for e in res.of_kind("declined")] == [code]
        assert bo.unpaid_debts()[0].amount == 400
    assert issuer.account(card.account_id).held == 0
    rec_ok(bo, issuer)


def test_dormant_expired_and_replaced_cards_are_declined_with_their_codes() -> None:
    issuer = new_issuer()
    dormant, expired, replaced = TestCard(pan_for(8)), TestCard(pan_for(9)), TestCard(pan_for(10))
    d = open_card(issuer, dormant)
    account = issuer.account(d.account_id)
    quiet = T0 - issuer.policy("ICBC").dormancy_after - DAY
    issuer.accounts[account.account_id] = dataclasses.replace(account, last_movement=quiet)
    open_card(issuer, expired, expires_at=T0 - DAY)
    open_card(issuer, replaced)
    issuer.open_account("acct-r2", "ICBC", "CNY", T0 - DAY)
    issuer.replace(
        replaced.token, pan_for(11), "01", "acct-r2",
        reason=ReplaceReason.DAMAGE, imk_id="imk1", expires_at=T0 + 900 * DAY, now=T0 - H,
    )  # fmt: skip
    bo = core(issuer)
    bo.ingest([dormant.tap("d", T0), expired.tap("e", T0), replaced.tap("r", T0)], T0)
    codes = {k: issuer.auths[f"av:A:{k}"].code.value for k in "der"}
    assert codes == {"d": "57", "e": "54", "r": "04"}
    assert len(bo.deny) == 3


def test_forged_tap_cryptogram_is_flagged_and_deny_listed() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(12))
    open_card(issuer, tc)
    bo = core(issuer)
    tap = tc.tap("t0", T0)
    forged = dataclasses.replace(tap, arqc=bytes(8))
    res = bo.ingest([forged], T0)
    assert [e.detail for e in res.of_kind("alert")] == ["forged_cryptogram"]
    assert tc.token in bo.deny
    assert bo.drain_changes().alerts[0].kind == "forged_cryptogram"


def test_replayed_atc_under_a_new_tap_id_is_rejected_and_kept() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(13))
    open_card(issuer, tc)
    bo = core(issuer)
    tap = tc.tap("t0", T0)
    clone = dataclasses.replace(tap, tap_id="t0-clone", time=T0 + H)
    res = bo.ingest([tap, clone, tap], T0 + H)
    assert (res.accepted, res.rejected, res.duplicates) == (1, 1, 1)
    changes = bo.drain_changes()
    [reject] = changes.rejects
    assert reject.tap_id == "t0-clone" and reject.field == "atc"
    assert changes.alerts[0].kind == "replayed_atc"
    assert tc.pan not in reject.raw
    again = bo.ingest([clone], T0 + 2 * H)  # the same bad record re-sent: kept once
    assert (again.rejected, again.duplicates) == (0, 1)


def test_malformed_and_unpriceable_records_are_rejected_with_reasons() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(14))
    open_card(issuer, tc)
    pricer = FlatFarePricer(default=200, by_route={"R1": 200}, strict=True)
    bo = BackOffice(pricer, issuer, config())
    good = tc.tap("t0", T0)
    unknown_route = tc.tap("t1", T0, route="R9")
    res = bo.ingest([{"tap_id": "x1", "pan": pan_for(14)}, good, unknown_route, {}], T0)
    assert (res.accepted, res.rejected) == (1, 3)
    rejects = bo.drain_changes().rejects
    assert [(r.tap_id, r.field) for r in rejects] == [
        ("x1", "pan"),
        ("t1", "fare"),
        (None, "tap_id"),
    ]
    assert "R9" in rejects[1].reason
    assert all(pan_for(14) not in r.raw for r in rejects)
    # A rejected tap id is not burnt: the corrected record is accepted later.
    fixed = dataclasses.replace(unknown_route, route_id="R1")
    assert bo.ingest([fixed], T0).accepted == 1


def test_free_rides_charge_nothing() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(15))
    open_card(issuer, tc)
    bo = BackOffice(FlatFarePricer(default=200, discounts={"senior": 0}), issuer, config())
    bo.ingest([tc.tap("t0", T0, category="senior")], T0)
    bo.close_due(T0 + DAY)
    assert [r.kind for r in issuer.auths.values()] == [AuthKind.ACCOUNT_VERIFICATION]
    assert bo.balances[REVENUE] == 0
    rec_ok(bo, issuer)


def test_a_late_tap_reprices_its_aggregate_in_time_order() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(16))
    open_card(issuer, tc)
    bo = BackOffice(FlatFarePricer(default=200, daily_cap=500), issuer, config())
    t8, t9, t10 = tc.tap("t8", T0), tc.tap("t9", T0 + H), tc.tap("t10", T0 + 2 * H)
    bo.ingest([t10], T0 + 2 * H)
    bo.ingest([t8, t9], T0 + 3 * H)
    [agg] = bo.open_aggregates()
    assert [(p.tap.tap_id, p.amount) for p in sorted(agg.taps, key=lambda p: p.tap.time)] == [
        ("t8", 200), ("t9", 200), ("t10", 100),
    ]  # fmt: skip
    assert agg.total == 500 and bo.fares_total == 500
    changes = bo.drain_changes()
    assert any(p.txn_id.startswith("adj:t10") for p in changes.entries)
    check_entries(changes.entries)
    rec_ok(bo, issuer)


# -- duplicated and reordered delivery ----------------------------------------------------


def _day_of_taps(n_cards: int, seed: int) -> tuple[Issuer, list[TestCard], list]:  # type: ignore[type-arg]
    rng = random.Random(seed)
    issuer = new_issuer()
    cards = [TestCard(pan_for(100 + i), "sm4" if i % 2 else "tdes") for i in range(n_cards)]
    taps = []
    for i, tc in enumerate(cards):
        open_card(issuer, tc, balance=rng.choice([300, 10_000]))
        for k in range(rng.randint(1, 5)):
            when = T0 + timedelta(minutes=rng.randint(0, 14 * 60))
            taps.append(tc.tap(f"c{i}-{k}", when, operator=rng.choice(["bus1", "metro"])))
    return issuer, cards, taps


def _run(issuer: Issuer, deliveries: list[list]) -> tuple[BackOffice, dict[str, int]]:  # type: ignore[type-arg]
    bo = BackOffice(FlatFarePricer(default=200, daily_cap=500), issuer, config(spend_limit=100_000))
    for batch in deliveries:
        bo.ingest(batch, T0 + 15 * H)
    bo.close_due(T0 + DAY)
    return bo, {a.account_id: a.balance for a in issuer.accounts.values()}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), dup_seed=st.integers(0, 10_000), batches=st.integers(1, 6))
def test_duplicated_and_reordered_delivery_charges_the_same(
    seed: int, dup_seed: int, batches: int
) -> None:
    issuer_a, _, taps = _day_of_taps(6, seed)
    ordered = sorted(taps, key=lambda t: (t.time, t.tap_id))
    bo_a, balances_a = _run(issuer_a, [ordered])

    issuer_b, _, taps_b = _day_of_taps(6, seed)
    rng = random.Random(dup_seed)
    messy = taps_b + rng.sample(taps_b, k=len(taps_b) // 2)  # at-least-once: duplicates
    rng.shuffle(messy)
    cut = sorted(rng.sample(range(1, len(messy)), k=min(batches - 1, len(messy) - 1)))
    deliveries = [messy[i:j] for i, j in zip([0, *cut], [*cut, len(messy)], strict=True)]
    bo_b, balances_b = _run(issuer_b, deliveries)

    assert balances_a == balances_b
    assert bo_a.balances == bo_b.balances
    assert bo_a.fares_total == bo_b.fares_total
    assert len(bo_b.tap_ids) == len(taps)
    assert issuer_a.captured_total() == issuer_b.captured_total()
    rec_ok(bo_b, issuer_b)


def test_service_day_cutover_splits_days_at_four_in_the_morning() -> None:
    from datetime import datetime

    issuer = new_issuer()
    tc = TestCard(pan_for(17))
    open_card(issuer, tc)
    bo = core(issuer)
    late = datetime(2026, 3, 3, 3, 59, tzinfo=CST)  # still Monday's service day
    bo.ingest([tc.tap("mon", T0), tc.tap("late", late)], late)
    [agg] = bo.open_aggregates()
    assert agg.service_day == "2026-03-02" and agg.tap_count == 2
    bo.ingest([tc.tap("tue", late + 2 * timedelta(minutes=1))], late + H)
    assert [a.service_day for a in bo.open_aggregates()] == ["2026-03-03"]


class TapOnOffPricer:
    """A small real tariff with open journeys: 300 for a completed journey, 500 when the
    rider never taps off (charged when the journey is settled without a tap)."""

    currency = "CNY"

    def price(self, state: object | None, tap: TapRecord) -> tuple[object, list[FareCharge]]:
        if tap.action is Action.TAP_OFF:
            return None, [FareCharge(tap.tap_id, 300, "CNY", "journey")]
        charges = []
        if isinstance(state, str):  # tapped on again without tapping off: incomplete journey
            charges.append(FareCharge(state, 500, "CNY", "no tap-off: maximum fare"))
        charges.append(FareCharge(tap.tap_id, 0, "CNY", "tap-on"))
        return tap.tap_id, charges

    def close(self, state: object | None, now: datetime) -> tuple[object, list[FareCharge]]:
        if isinstance(state, str):
            return None, [FareCharge(state, 500, "CNY", "no tap-off: maximum fare")]
        return state, []

    def encode_state(self, state: object) -> bytes:
        return state.encode() if isinstance(state, str) else b""

    def decode_state(self, data: bytes) -> object:
        return data.decode() or None


def test_an_unfinished_journey_is_charged_when_the_aggregate_closes() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(18))
    open_card(issuer, tc)
    bo = BackOffice(TapOnOffPricer(), issuer, config())
    bo.ingest(
        [
            tc.tap("on1", T0, action=Action.TAP_ON),
            tc.tap("off1", T0 + H, action=Action.TAP_OFF),
            tc.tap("on2", T0 + 2 * H, action=Action.TAP_ON),
        ],
        T0 + 2 * H,
    )
    assert bo.fares_total == 300
    res = bo.close_due(T0 + DAY)
    assert [e.amount for e in res.of_kind("charged")] == [800]
    changes = bo.drain_changes()
    assert {t.tap_id: t.amount for t in changes.taps} == {"on1": 0, "off1": 300, "on2": 500}
    check_entries(changes.entries)
    rec_ok(bo, issuer)
