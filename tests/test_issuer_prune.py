"""The issuer's memory bounded by cards and a window, not by history (issue 15): a prune
keeps exactly what a bounded load reads (one rule, issuer/retention.py, on SQLite and
PostgreSQL), charges that refer to an old open verification still go through, repeats inside
the window answer the same, memory stays flat over days, and `tapsim issuer run` loads
and answers that way, late repeats and reversals of pruned records included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backoffice.engine import TOTALS_KEY, BackOffice
from backoffice.policy import BackOfficeConfig
from backoffice.records import to_us
from backoffice.service import TransactionCore
from backoffice.storage import SqlStore
from emv.card.profile import load_profile
from isolink.messages import original_data, request_key, transmission_time
from isolink.taps import CardTapper
from issuer.codes import ResponseCode
from issuer.models import (
    AuthKind,
    AuthorizationRequest,
    AuthRecord,
    Capture,
    Hold,
    HoldStatus,
)
from issuer.retention import REFERENCE_REACH
from issuer.service import Issuer
from issuer.store import IssuerChanges, IssuerSnapshot
from tapsim.cli import main
from tests.core_fixtures import (
    BACKENDS,
    BANKS,
    MERCHANT,
    T0,
    TOKEN_KEY,
    TestCard,
    config,
    flat_pricer,
    fresh_db_url,
    keystore,
    make_store,
    new_issuer,
    open_card,
    pan_for,
)
from tests.iso8583_support import DIALECT, Client, authorization, issue, next_stan, start_host
from tests.iso8583_support import token as profile_token

H = timedelta(hours=1)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)


def one_day_horizon() -> BackOfficeConfig:
    return config(late_horizon=DAY)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    for s, _ in make_store(request.param, tmp_path):
        yield s


def keys_of(issuer: Issuer) -> tuple[set[str], set[str], set[str]]:
    return set(issuer.auths), set(issuer.holds), set(issuer.captures)


# -- one rule: prune and the bounded load agree ---------------------------------------------


def _auth(rid: str, at: datetime, *, kind: AuthKind = AuthKind.ACCOUNT_VERIFICATION,
          code: ResponseCode = ResponseCode.APPROVED, verified: bool = True,
          completed_by: str | None = None) -> AuthRecord:
    return AuthRecord(rid, "tok", kind, 0, "CNY", MERCHANT, code, frozenset(), at, 1, b"\x01",
                      verified, None, None, completed_by)


def test_prune_and_the_bounded_load_keep_the_same_records_at_every_edge(store: SqlStore) -> None:
    floor = datetime(2026, 3, 10, tzinfo=UTC)
    reach = floor - REFERENCE_REACH
    auths = [
        _auth("at-floor", floor), _auth("after", floor + H),
        _auth("open-just-before", floor - US), _auth("open-at-reach", reach),
        _auth("open-beyond-reach", reach - US),
        _auth("purchase-open", floor - DAY, kind=AuthKind.PURCHASE),
        _auth("deferred-old", floor - DAY, kind=AuthKind.DEFERRED),
        _auth("resub-old", floor - DAY, kind=AuthKind.RESUBMISSION),
        _auth("declined-old", floor - DAY, code=ResponseCode.INSUFFICIENT_FUNDS),
        _auth("unverified-old", floor - DAY, verified=False),
        _auth("completed-old", floor - DAY, completed_by="chg"),
        _auth("completed-new", floor, completed_by="chg"),
    ]
    holds = [Hold(f"{s.value}-{when}", "acct", "tok", MERCHANT, 100, "CNY", at, s)
             for s in HoldStatus for when, at in (("old", floor - US), ("new", floor))]
    captures = [Capture(f"cap-{when}", f"captured-{when}", "acct", "tok", MERCHANT, 100, "CNY",
                        at) for when, at in (("old", floor - US), ("new", floor))]
    store.save_issuer(IssuerChanges(auths={a.request_id: a for a in auths},
                                    holds={h.hold_id: h for h in holds},
                                    captures={c.capture_id: c for c in captures}))
    everything = IssuerSnapshot(auths=auths, holds=holds, captures=captures)
    issuer = Issuer(keystore(), BANKS, TOKEN_KEY, everything)
    assert issuer.prune(floor) == 6 + 2 + 1
    loaded = Issuer(keystore(), BANKS, TOKEN_KEY, store.load_issuer_since(floor))
    assert keys_of(issuer) == keys_of(loaded)
    assert set(issuer.auths) == {"at-floor", "after", "open-just-before", "open-at-reach",
                                 "purchase-open", "completed-new"}
    assert set(issuer.holds) == {"active-old", "active-new", "captured-new", "released-new"}
    assert set(issuer.captures) == {"cap-new"}
    # The core's restart reads the same, by the floor in its running totals.
    store.set_meta(TOTALS_KEY, json.dumps({"floor_us": to_us(floor)}))
    assert keys_of(Issuer(keystore(), BANKS, TOKEN_KEY, store.load_issuer_open())) == \
        keys_of(issuer)


@pytest.mark.parametrize("first_zone", [timezone(timedelta(hours=8)), UTC,
                                        ZoneInfo("Europe/Berlin")])
def test_prune_decides_the_same_whatever_zones_the_times_carry(first_zone: tzinfo) -> None:
    """Prune compares against the floor put in the zone of the first record's time (a fast
    comparison): records of that zone, of others and of a zone with summer time, a microsecond
    either side of the floor, are kept exactly as the retention rule says."""
    floor = datetime(2026, 3, 29, 1, 0, 0, 500, tzinfo=UTC)  # Berlin moves to summer time
    zones = [first_zone, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5)), UTC,
             ZoneInfo("Europe/Berlin")]
    auths = [_auth(f"{i}-{name}", (floor + delta).astimezone(z), completed_by="chg")
             for i, z in enumerate(zones)
             for name, delta in (("before", -US), ("at", timedelta(0)), ("after", US))]
    issuer = Issuer(keystore(), BANKS, TOKEN_KEY, IssuerSnapshot(auths=auths))
    issuer.prune(floor)
    assert set(issuer.auths) == {a.request_id for a in auths if a.at >= floor}
    assert len(issuer.auths) == 2 * len(zones)


# -- the core prunes when its floor moves ----------------------------------------------------


def test_after_days_of_a_running_core_memory_holds_what_a_restart_would_load(
    store: SqlStore,
) -> None:
    c = TransactionCore(store, flat_pricer(), keystore(), BANKS, TOKEN_KEY, one_day_horizon())
    cards = [TestCard(pan_for(900 + i)) for i in range(3)]
    poor = TestCard(pan_for(909))  # its charges are declined: debts, resubmissions
    for tc in cards:
        c.run(lambda tc=tc: open_card(c.issuer, tc))
    c.run(lambda: open_card(c.issuer, poor, balance=150))
    for d in range(8):
        day = T0 + d * DAY
        taps = [tc.tap(f"d{d}-{i}-{k}", day + k * H) for i, tc in enumerate(cards)
                for k in range(2)]
        taps.append(poor.tap(f"d{d}-poor", day + 3 * H))
        c.ingest(taps, day + 4 * H)
        c.close_due(day + DAY)
        c.run(lambda day=day: c.core.run_recovery(day + DAY))
    floor = c.core.floor
    assert floor is not None and floor > T0 + 5 * DAY
    history = store.load_issuer()
    assert len(c.issuer.auths) < len(history.auths) / 2  # pruned as the floor moved
    c.issuer.prune(floor)  # what a prune at this floor keeps ...
    restarted = Issuer(keystore(), BANKS, TOKEN_KEY, store.load_issuer_open())
    assert keys_of(c.issuer) == keys_of(restarted)  # ... is what a restart loads
    # An old verification of the poor card is kept: its debts still refer to it.
    assert any(a.at < floor and a.pan_token == poor.token for a in c.issuer.auths.values())


def test_a_deferred_charge_and_a_resubmission_refer_to_verifications_older_than_the_floor(
) -> None:
    issuer = new_issuer()
    done, still_open, poor, today = (TestCard(pan_for(920 + i)) for i in range(4))
    for tc in (done, still_open, today):
        open_card(issuer, tc)
    poor_card = open_card(issuer, poor, balance=100)
    bo = BackOffice(flat_pricer(), issuer, one_day_horizon())
    bo.ingest([done.tap("done-0", T0), poor.tap("poor-0", T0 + H)], T0 + H)
    res = bo.close_due(T0 + DAY)  # done charged, poor declined (a debt)
    assert {e.ref: e.code for e in res.of_kind("declined")} == {"A:poor-0": "51"}
    bo.ingest([still_open.tap("open-0", T0 + DAY - H)], T0 + DAY - H)  # day 0, still open
    bo.ingest([today.tap("today-3", T0 + 3 * DAY)], T0 + 3 * DAY)  # the floor moves: a prune
    floor = bo.floor
    assert floor is not None and floor > T0 + DAY
    assert "av:A:done-0" not in issuer.auths and "chg:A:done-0" not in issuer.auths
    assert not issuer.captures  # day 0's capture: history
    kept = issuer.auths["av:A:open-0"]
    assert kept.at < floor and issuer.auths["av:A:poor-0"].at < floor
    res = bo.close_due(T0 + 3 * DAY + H)
    assert {e.ref: e.code for e in res.of_kind("charged")} == {"A:open-0": "00"}
    issuer.deposit(poor_card.account_id, 1_000, T0 + 3 * DAY + 2 * H)
    res = bo.run_recovery(T0 + 5 * DAY)  # the scheduled resubmission names poor-0's verification
    [recovered] = res.of_kind("recovered")
    assert recovered.amount == 200 and recovered.code == "00"


def test_a_repeat_inside_the_window_answers_the_same_and_one_beyond_it_moves_no_money() -> None:
    issuer = new_issuer()
    tc = TestCard(pan_for(930))
    open_card(issuer, tc)

    def purchase(rid: str) -> AuthorizationRequest:
        atc, arqc, data = tc.cryptogram(500)
        return AuthorizationRequest(rid, tc.token, AuthKind.PURCHASE, 500, "CNY", MERCHANT,
                                    atc, arqc, data)

    old, recent = purchase("old"), purchase("recent")
    first_old = issuer.authorize(old, T0)
    later = T0 + 40 * DAY  # beyond the floor and the 28 days of reach before it
    first_recent = issuer.authorize(recent, later)
    assert first_old.code is first_recent.code is ResponseCode.APPROVED
    issuer.capture(first_old.hold_id or "", 500, "cap:old", T0)
    balance = issuer.accounts[issuer.cards[tc.token].account_id].balance
    issuer.drain_changes()
    # old's record (an open purchase, but beyond the reach), its settled hold, its capture
    assert issuer.prune(later - DAY) == 3
    assert issuer.authorize(recent, later + H) == first_recent  # inside: the same
    assert not issuer.drain_changes()
    # Beyond the window the request is new to memory, but the card's ATC is remembered on
    # the card: refused as a replay, nothing held or charged twice.
    again = issuer.authorize(old, later + H)
    assert again.code is ResponseCode.SUSPECTED_FRAUD and again.hold_id is None
    assert issuer.accounts[issuer.cards[tc.token].account_id].balance == balance


def test_memory_stays_flat_over_days() -> None:
    issuer = new_issuer()
    cards = [TestCard(pan_for(940 + i)) for i in range(4)]
    for tc in cards:
        open_card(issuer, tc, balance=100_000)
    bo = BackOffice(flat_pricer(), issuer, one_day_horizon())
    held: list[int] = []
    for d in range(24):
        day = T0 + d * DAY
        bo.ingest([tc.tap(f"d{d}-{i}-{k}", day + k * H) for i, tc in enumerate(cards)
                   for k in range(2)], day + 2 * H)
        bo.close_due(day + DAY)
        issuer.drain_changes()
        bo.drain_changes()
        held.append(len(issuer.auths) + len(issuer.holds) + len(issuer.captures))
    created = 24 * len(cards) * 2  # a verification and a charge a card a day, at least
    assert max(held[12:]) <= max(held[3:12]) < created / 4, held
    # About three days of a card's records (the floor a day behind, at a UTC midnight).
    assert len(issuer.auths) <= 3 * 2 * len(cards), len(issuer.auths)


# -- tapsim issuer run -------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def fresh_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from fresh_db_url(request.param, tmp_path)


def _balance(db: str, capsys: pytest.CaptureFixture[str]) -> int:
    capsys.readouterr()
    assert main(["account", "show", "--card", "sscard3", "--db", db, "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)["account"]
    return int(out["balance"])


def _deferred(verification: dict[str, Any], amount: int, at: datetime) -> dict[str, Any]:
    """The aggregate's charge: the verification's cryptogram, field 90 naming it."""
    return {**verification, "t": "0200", "4": f"{amount:012d}", "7": transmission_time(at),
            "11": next_stan(), "25": DIALECT.kind_code("deferred"),
            "90": original_data("0100", request_key(verification))}  # fmt: skip


def test_issuer_run_loads_open_records_and_answers_late_messages_from_the_database(
    fresh_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    db = fresh_db
    issue(db, "sscard3", balance=10_000)
    card, tok = CardTapper(load_profile("sscard3")), profile_token("sscard3")
    old = datetime.now(UTC) - timedelta(days=10)
    # Ten days ago (the host's clock then): a verification still open, and one its charge
    # completed (captured).
    then = start_host(db, tmp_path, "--clock-from", old.isoformat())
    try:
        c = Client(then.port)
        still_open = authorization(card, tok, at=old)
        done = authorization(card, tok, at=old)
        assert c.ask(still_open)["39"] == c.ask(done)["39"] == "00"
        old_charge = _deferred(done, 300, old)
        c.send(old_charge)
        old_answer = c.receive_raw()
        assert DIALECT.decode(old_answer)["39"] == "00"
    finally:
        assert then.stop() == 143
    balance = _balance(db, capsys)

    now = start_host(db, tmp_path)  # the real clock, --retention 7 days by default
    try:
        # Only the open verification is loaded: the completed one and its charge are history.
        assert "1 authorization(s) in memory (retention 7 days)" in now.ready, now.ready
        c = Client(now.port)
        charge = _deferred(still_open, 420, datetime.now(UTC))
        c.send(charge)
        first = c.receive_raw()
        assert DIALECT.decode(first)["39"] == "00"  # its verification is 10 days old
        c.send(charge)
        assert c.receive_raw() == first  # a repeat inside the window: the same answer
        assert _balance(db, capsys) == balance - 420
        # A late repeat of the pruned charge: answered as the first time, not charged again;
        # a late reversal of it: "21" (captured), never "25" (which would read as not charged).
        c.send({**old_charge, "t": "0201"})
        assert DIALECT.decode(c.receive_raw())["39"] == DIALECT.decode(old_answer)["39"]
        c.send(old_charge)
        assert c.receive_raw() == old_answer
        reversal = {"t": "0400", "4": old_charge["4"], "7": transmission_time(datetime.now(UTC)),
                    "11": next_stan(), "32": old_charge["32"], "37": old_charge["37"],
                    "90": original_data("0200", request_key(old_charge))}  # fmt: skip
        assert c.ask(reversal)["39"] == "21"
        assert _balance(db, capsys) == balance - 420
    finally:
        assert now.stop() == 143
    again = start_host(db, tmp_path)  # a restart: the bounded load has today's charge (its
    try:  # verification, completed now, is history; the late repeats wrote nothing)
        assert "1 authorization(s) in memory" in again.ready, again.ready
        c = Client(again.port)
        c.send(charge)
        assert c.receive_raw() == first
        assert _balance(db, capsys) == balance - 420
    finally:
        assert again.stop() == 143


def test_issuer_run_refuses_a_retention_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["issuer", "run", "--listen", "127.0.0.1:0", "--retention", "0"])
    assert exc.value.code == 2
    assert "--retention" in capsys.readouterr().err



def test_the_host_prunes_once_a_day_by_its_clock(store: SqlStore) -> None:
    """IssuerHost in process, its clock a plain function the test moves: the load reads the
    records kept for the floor then, and a day later the floor moves and memory is pruned."""
    from issuerhost.host import IssuerHost, retention_floor

    day0 = datetime(2026, 3, 10, 12, tzinfo=UTC)
    auths = [_auth(f"done-{d}", day0 - d * DAY, completed_by="chg") for d in range(10)]
    store.save_issuer(IssuerChanges(auths={a.request_id: a for a in auths}))
    clock = [day0]
    logs: list[str] = []

    def load(floor: datetime | None) -> Issuer:
        assert floor is not None
        return Issuer(keystore(), BANKS, TOKEN_KEY, store.load_issuer_since(floor))

    host = IssuerHost(store, load, DIALECT, log=logs.append, clock=lambda: clock[0],
                      retention=timedelta(days=3))
    floor = retention_floor(day0, timedelta(days=3))
    assert floor == datetime(2026, 3, 7, tzinfo=UTC)
    assert set(host.handler.issuer.auths) == {f"done-{d}" for d in range(4)}  # days 10..7
    assert host.handler.floor == floor
    clock[0] = day0 + 6 * H  # the same day, the same floor: nothing to do
    host._run([])
    assert len(host.handler.issuer.auths) == 4 and not logs
    clock[0] = day0 + 2 * DAY  # the floor moved two days: one prune
    host._run([])
    assert set(host.handler.issuer.auths) == {"done-0", "done-1"}
    assert host.handler.floor == floor + 2 * DAY
    assert logs == [f"retention: 2 record(s) before {(floor + 2 * DAY).isoformat()} dropped "
                    "from memory (kept in the database)"]
