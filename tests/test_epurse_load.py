"""Recharge at the bank: `tapsim card load` and issuer.epurse_load against the real virtual
card and a real store (SQLite, and PostgreSQL when it runs).

The load transaction is PBOC ED/EP (JR/T 0025.2 §5.2), which JT/T 978 (T-Union) takes over
for load: INITIALIZE FOR LOAD ``80 50 00 02 0B`` -> balance, online serial, MAC1 under the
load session key; CREDIT FOR LOAD ``80 52 00 00 0B`` with MAC2 -> TAC over new balance ||
online serial || amount || 02 || terminal || date-time; GET TRANSACTION PROOF ``80 5A 00 02
02`` <serial> -> TAC || MAC2 of the last load (emv/epurse/messages.py and keys.py hold the
layouts; /work/shared/REFERENCE.md "T-Union e-purse (JT/T 978 style)").  Test data: the
shipped TEST profiles sscard3 (3DES) and sscard3-sm (SM4), whose e-purse starts at 30.00
(``balance = 3000`` in sscard3.toml) under a 1000.00 cap (profile default ``max_balance``);
the bank's opening balance is this file's choice.  Every expected amount below is the
opening figure plus or minus the loads the test makes; every TAC is recomputed here from the
issuer's TEST TAC master key, never copied from a run.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from backoffice.branch import BUILTIN_BANKS, TEST_KEK, act, issue, key_store
from backoffice.storage import SqlStore, open_store, sqlite_url
from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import Application, CardProfile, load_profile
from emv.epurse import keys
from emv.epurse.application import purse_number_of
from emv.epurse.load import T_UNION_EPURSE
from issuer.epurse_load import (
    JournalEntry,
    LoadCardError,
    LoadHost,
    LoadKeys,
    LoadRecord,
    LoadState,
    LoadStore,
    LoadStoreError,
    account_ledger,
    algorithm_from_name,
    float_account,
    ledger_balances,
    loaded_by_issuer,
)
from issuer.errors import IssuerError
from issuer.journal import held_ledger
from issuer.load_sql import SqlLoadStore, reconcile_db
from issuer.service import Issuer
from issuer.store import IssuerChanges
from tapsim.cli import main
from tapsim.commands.tap import token_key
from tapsim.state import card_state_path, load_card_state, save_card_state
from terminal.readers import CardGoneError
from tests.core_fixtures import BACKENDS, CST, make_store
from tests.fixtures.pcsc import ServeCard

AT = datetime(2026, 3, 2, 10, 0, tzinfo=CST)
BRANCH = bytes.fromhex("000000010001")  # the branch terminal number
OPENING = 20_000  # the holder's account at the bank, fen
CHIP_OPENING = 3_000  # sscard3.toml: the e-purse's balance = 3000
ISSUER = "0000"  # the TEST profiles' issuer: city code 0000 (emv.epurse.issuers.TEST_CITY_A)
CREDIT, INITIALIZE = 0x52, 0x50


def purse_of(profile: CardProfile) -> Application:
    return next(a for a in profile.applications if a.kind == "epurse")


# -- the bank and the card ------------------------------------------------------------------


def new_issuer(store: SqlStore, profile: CardProfile) -> Issuer:
    return Issuer(key_store(TEST_KEK, [profile]), BUILTIN_BANKS, token_key(),
                  store.load_issuer())  # the key `tapsim card issue` tokens cards with


def issue_card(store: SqlStore, profile: CardProfile, *, balance: int = OPENING,
               state: str | None = "activate") -> str:
    issuer = new_issuer(store, profile)
    card = issue(issuer, profile, bank="ICBC", balance=balance, currency="CNY",
                 now=AT - timedelta(days=1)).card
    if state is not None:
        act(issuer, card.pan_token, "activate", AT - timedelta(days=1))
        if state != "activate":
            act(issuer, card.pan_token, state, AT - timedelta(hours=1))
    store.save_issuer(issuer.drain_changes())
    return card.pan_token


def host_for(store: SqlStore, profile: CardProfile, loads: LoadStore | None = None,
             *, max_balance: bool = True) -> LoadHost:
    """A branch's load host started from the database, as each `tapsim card load` run is."""
    purse = purse_of(profile)
    return LoadHost(new_issuer(store, profile), loads or SqlLoadStore(store),
                    keys=LoadKeys(purse.load_key, purse.tac_key),
                    terminal_id=BRANCH, clock=lambda: AT,
                    max_balance=purse.max_balance if max_balance else None)


def chip(profile: CardProfile) -> VirtualCard:
    card = VirtualCard(personalise(profile))
    card.power_on()
    return card


def chip_balance(card: VirtualCard) -> int:
    return card.state.app(T_UNION_EPURSE).balance


class Torn:
    """The card's transport, failing once at one command: before the card sees it (card
    removed) or after the card processed it (the answer lost on the way back)."""

    def __init__(self, card: VirtualCard, ins: int, *, after_card: bool) -> None:
        self.card, self.ins, self.after_card, self.armed = card, ins, after_card, True

    def __call__(self, apdu: bytes) -> bytes:
        if self.armed and apdu[0] == 0x80 and apdu[1] == self.ins:
            self.armed = False
            if self.after_card:
                self.card.process(apdu)
            raise CardGoneError("branch", "card went away")
        return self.card.process(apdu)


class Unreachable:
    """The bank's store, down for the writes ``fails`` picks (the others reach the database)."""

    def __init__(self, inner: SqlLoadStore, fails: Callable[[list[LoadRecord]], bool]) -> None:
        self.inner, self.fails = inner, fails

    def load_record(self, load_id: str) -> LoadRecord | None:
        return self.inner.load_record(load_id)

    def pending_loads(self, pan_token: str) -> list[LoadRecord]:
        return self.inner.pending_loads(pan_token)

    def save_load(self, issuer: IssuerChanges, loads: list[LoadRecord],
                  entries: list[JournalEntry]) -> None:
        if self.fails(loads):
            raise LoadStoreError("postgresql: cannot connect to the bank's database")
        self.inner.save_load(issuer, loads, entries)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    yield from (s for s, _ in make_store(request.param, tmp_path))


def moves(store: SqlStore) -> list[JournalEntry]:
    """The bank's journal rows but the opening balances of the issued cards."""
    return [e for e in SqlLoadStore(store).journal() if not e.entry_id.startswith("open:")]


def check_books(store: SqlStore, card: VirtualCard, *, loaded: int,
                credited_not_captured: int = 0, profile: CardProfile | None = None) -> None:
    """The bank reconciles from its journal rows alone, and agrees with the chip."""
    profile = profile or load_profile("sscard3")
    issuer = new_issuer(store, profile)
    account = issuer.account(issuer.card(issuer.token_of(profile.pan)).account_id)
    loads = SqlLoadStore(store)
    journal = loads.journal()
    assert all(e.amount > 0 and e.debit != e.credit for e in journal)
    balances = ledger_balances(journal)
    assert sum(balances.values()) == 0
    pending = sum(r.amount for r in loads.loads(LoadState.PENDING))
    # The account from the rows alone: opening balance in, loads out, pending loads held.
    assert -balances.get(account_ledger(account.account_id), 0) == OPENING - loaded - pending
    assert -balances.get(held_ledger(account.account_id), 0) == pending
    assert account.balance == OPENING - loaded
    assert -balances.get(float_account(ISSUER), 0) == loaded  # the float's credits
    assert reconcile_db(store).ok
    expected = {ISSUER: loaded} if loaded else {}
    assert loads.loaded_by_issuer() == loaded_by_issuer(journal) == expected
    assert sum(r.amount for r in loads.loads(LoadState.CAPTURED)) == loaded
    assert account.held == sum(r.amount for r in loads.loads(LoadState.PENDING))
    assert chip_balance(card) == CHIP_OPENING + loaded + credited_not_captured


def expected_tac(profile: CardProfile, record: LoadRecord) -> str:
    """The TAC a genuine card gives for this load (JR/T 0025.2 §5.2 load TAC input)."""
    purse = purse_of(profile)
    # The purse's own number: the profile's, else 3100 + the PAN less its BIN and check digit
    # + a Luhn digit (emv.epurse.application.purse_number_of), never the PAN.
    number = (purse.card_number or purse_number_of(profile.pan)).zfill(20)
    algorithm = algorithm_from_name(record.algorithm)
    assert algorithm is not None
    dtk = keys.diversify(purse.tac_key, number, algorithm)
    assert record.online_serial is not None and record.balance_before is not None
    tac = keys.mac(keys.tac_mac_key(dtk, algorithm),
                   keys.load_tac_input(record.balance_before + record.amount,
                                       record.online_serial, record.amount, BRANCH,
                                       bytes.fromhex(record.credit_time)), algorithm)
    return tac.hex().upper()


# -- the load, end to end -------------------------------------------------------------------


@pytest.mark.parametrize("ins", [INITIALIZE, CREDIT])
def test_another_writer_between_the_load_s_steps_is_not_overwritten(
    store: SqlStore, ins: int
) -> None:
    """Issue 15: a load takes seconds with the card in the field, and a running back office
    (or another branch) may write the same account meanwhile.  The host reads the issuer again
    under the issuer lock before each of its writes (the hold, the capture), so the other
    write survives: here a deposit of 777.00 made through another connection just before the
    card is asked to INITIALIZE (before the hold) or to CREDIT (before the capture)."""
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)
    other = open_store(store.url)  # another process's connection to the bank's database

    def deposit_then(apdu: bytes) -> bytes:
        if apdu[0] == 0x80 and apdu[1] == ins:
            issuer = new_issuer(other, profile)
            act(issuer, token, "deposit", AT, amount=77_700, ref="branch-777")
            other.save_issuer(issuer.drain_changes())
        return card.process(apdu)

    try:
        purse = purse_of(profile)
        host = LoadHost(new_issuer(store, profile), SqlLoadStore(store),
                        keys=LoadKeys(purse.load_key, purse.tac_key), terminal_id=BRANCH,
                        clock=lambda: AT, max_balance=purse.max_balance,
                        reload=lambda: new_issuer(store, profile))  # fmt: skip
        out = host.load(deposit_then, token=token, amount=5000, load_id="R1")
    finally:
        other.close()
    assert out.state is LoadState.CAPTURED
    issuer = new_issuer(store, profile)
    account = issuer.account(issuer.card(token).account_id)
    assert (account.balance, account.held) == (OPENING + 77_700 - 5000, 0)
    result = reconcile_db(store)
    assert result.ok, result.mismatches


@pytest.mark.parametrize("name", ["sscard3", "sscard3-sm"])
def test_a_load_moves_money_from_the_account_to_the_chip(store: SqlStore, name: str) -> None:
    profile = load_profile(name)
    token = issue_card(store, profile)
    card = chip(profile)
    out = host_for(store, profile).load(card.process, token=token, amount=5000, load_id="L1")
    assert out.state is LoadState.CAPTURED and out.record.reason == "tac-verified"
    assert (out.record.balance_before, out.balance_after) == (CHIP_OPENING, CHIP_OPENING + 5000)
    assert out.record.online_serial == 0
    assert out.record.algorithm == ("sm4" if name.endswith("-sm") else "tdes")
    assert out.record.tac == expected_tac(profile, out.record)
    check_books(store, card, loaded=5000, profile=profile)
    # A second load uses the card's next online serial.
    again = host_for(store, profile).load(card.process, token=token, amount=1, load_id="L2")
    assert (again.state, again.record.online_serial) == (LoadState.CAPTURED, 1)
    check_books(store, card, loaded=5001, profile=profile)


def test_the_loaded_balance_is_what_the_next_tap_reads(tmp_path: Path) -> None:
    """The chip state `tapsim terminal run --card sscard3` loads is the one the load saved."""
    db = sqlite_url(tmp_path / "bank.db")
    assert main(["card", "issue", "--profile", "sscard3", "--balance", str(OPENING),
                 "--activate", "--db", db]) == 0
    assert main(["card", "load", "--card", "sscard3", "--amount", "2500", "--db", db]) == 0
    state = load_card_state(card_state_path("sscard3"))
    assert state is not None
    tapped = VirtualCard(personalise(load_profile("sscard3")), state)
    tapped.power_on()
    tapped.process(bytes.fromhex("00A4040008") + T_UNION_EPURSE)
    answer = tapped.process(bytes.fromhex("805C000204"))  # GET BALANCE
    assert answer[-2:] == b"\x90\x00"
    assert int.from_bytes(answer[:4], "big") == CHIP_OPENING + 2500


def test_a_forged_mac1_is_refused_and_nothing_moves(store: SqlStore) -> None:
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)

    def forging(apdu: bytes) -> bytes:
        answer = card.process(apdu)
        if apdu[:3] == bytes((0x80, INITIALIZE, 0x00)) and answer[-2:] == b"\x90\x00":
            return answer[:15] + bytes((answer[15] ^ 0x01,)) + answer[16:]  # MAC1's last byte
        return answer

    out = host_for(store, profile).load(forging, token=token, amount=5000, load_id="F1")
    assert (out.state, out.record.reason) == (LoadState.REFUSED, "card-mac1-invalid")
    check_books(store, card, loaded=0)
    assert new_issuer(store, profile).holds == {}


def test_card_removed_before_credit_debits_nothing_and_is_released_next_time(
        store: SqlStore) -> None:
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)
    torn = Torn(card, CREDIT, after_card=False)
    out = host_for(store, profile).load(torn, token=token, amount=5000, load_id="T1")
    assert out.state is LoadState.PENDING  # the host cannot know: MAC2 may have arrived
    check_books(store, card, loaded=0)  # held, not debited
    assert new_issuer(store, profile).accounts[
        out.record.account_id].held == 5000
    # The next attempt asks the card first: its online serial never moved -> released.
    nxt = host_for(store, profile).load(card.process, token=token, amount=700, load_id="T2")
    [earlier] = nxt.resolved
    assert (earlier.state, earlier.record.reason) == (LoadState.RELEASED, "serial-not-moved")
    assert nxt.state is LoadState.CAPTURED and nxt.record.online_serial == 0
    check_books(store, card, loaded=700)


def test_a_card_that_refuses_credit_gets_its_hold_released_at_once(store: SqlStore) -> None:
    """MAC2 altered on the way to the card: the card answers 9302 (PBOC ED/EP: MAC
    invalid) and credits nothing, so the host releases the hold without waiting."""
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)

    def altering(apdu: bytes) -> bytes:
        if apdu[1] == CREDIT:
            apdu = apdu[:-2] + bytes((apdu[-2] ^ 0x01, apdu[-1]))  # MAC2's last byte; Le kept
        return card.process(apdu)

    out = host_for(store, profile).load(altering, token=token, amount=900, load_id="M1")
    assert (out.state, out.record.reason) == (LoadState.RELEASED, "card-status-9302")
    check_books(store, card, loaded=0)


def test_card_removed_before_initialize_moves_nothing(store: SqlStore) -> None:
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)
    with pytest.raises(LoadCardError, match="nothing moved"):
        host_for(store, profile).load(Torn(card, INITIALIZE, after_card=False), token=token,
                                      amount=900, load_id="G1")
    check_books(store, card, loaded=0)
    assert SqlLoadStore(store).loads() == []


def test_answer_lost_after_the_card_credited_is_captured_once(store: SqlStore) -> None:
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)
    torn = Torn(card, CREDIT, after_card=True)
    out = host_for(store, profile).load(torn, token=token, amount=5000, load_id="A1")
    assert out.state is LoadState.PENDING
    check_books(store, card, loaded=0, credited_not_captured=5000)
    # `tapsim card load` run again on that card: GET TRANSACTION PROOF, TAC verified, captured.
    [settled] = host_for(store, profile).resolve(card.process, token)
    assert (settled.state, settled.record.reason) == (LoadState.CAPTURED, "proof-tac-verified")
    assert settled.record.tac == expected_tac(profile, settled.record)
    check_books(store, card, loaded=5000)
    # Asked again, and the same request again: nothing is captured or loaded twice.
    assert host_for(store, profile).resolve(card.process, token) == []
    same = host_for(store, profile).load(card.process, token=token, amount=5000, load_id="A1")
    assert same.repeated and same.state is LoadState.CAPTURED
    check_books(store, card, loaded=5000)


def test_answer_lost_then_another_load_elsewhere_is_settled_from_the_card_log(
        store: SqlStore) -> None:
    """The card was loaded again at another bank before it came back: the proof now names
    that load, so the host finds its own in the card's transaction log (SFI 18)."""
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)
    out = host_for(store, profile).load(Torn(card, CREDIT, after_card=True), token=token,
                                        amount=4000, load_id="B1")
    assert out.state is LoadState.PENDING
    from emv.epurse.load import load_epurse  # the other bank's branch
    purse = purse_of(profile)
    load_epurse(card.process, load_master_key=purse.load_key, amount=100, at=AT,
                terminal_id=bytes.fromhex("000000020002"))
    [settled] = host_for(store, profile).resolve(card.process, token)
    assert (settled.state, settled.record.reason) == (LoadState.CAPTURED, "card-log")
    check_books(store, card, loaded=4000, credited_not_captured=100)


def test_a_tac_altered_on_the_way_back_waits_for_the_cards_proof(store: SqlStore) -> None:
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)

    def altering(apdu: bytes) -> bytes:
        answer = card.process(apdu)
        if apdu[1] == CREDIT and answer[-2:] == b"\x90\x00":
            return bytes((answer[0] ^ 0x80,)) + answer[1:]
        return answer

    out = host_for(store, profile).load(altering, token=token, amount=900, load_id="V1")
    assert (out.state, out.record.reason) == (LoadState.PENDING, "credited-tac-not-verified")
    check_books(store, card, loaded=0, credited_not_captured=900)
    [settled] = host_for(store, profile).resolve(card.process, token)  # the card's own proof
    assert (settled.state, settled.record.reason) == (LoadState.CAPTURED, "proof-tac-verified")
    check_books(store, card, loaded=900)


def test_a_tac_the_bank_cannot_verify_stays_pending_for_review(store: SqlStore) -> None:
    """The card took this load (its proof repeats the host's MAC2) but the TAC does not
    verify under the key the bank holds: neither capture nor release is safe."""
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)
    purse = purse_of(profile)

    def wrong_tac_key() -> LoadHost:
        host = host_for(store, profile)
        host.keys = LoadKeys(purse.load_key, keys.TEST_PURCHASE_MASTER_KEY)
        return host

    out = wrong_tac_key().load(card.process, token=token, amount=900, load_id="W1")
    assert (out.state, out.record.reason) == (LoadState.PENDING, "credited-tac-not-verified")
    [again] = wrong_tac_key().resolve(card.process, token)
    assert again.state is LoadState.PENDING and "credited-tac-not-verified" in again.message
    check_books(store, card, loaded=0, credited_not_captured=900)


def test_issuer_unreachable_at_capture_leaves_the_load_pending_until_resolved(
        store: SqlStore) -> None:
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)
    down = Unreachable(SqlLoadStore(store),
                       fails=lambda loads: any(r.state is LoadState.CAPTURED for r in loads))
    host = host_for(store, profile, down)
    out = host.load(card.process, token=token, amount=3000, load_id="U1")
    assert out.state is LoadState.PENDING and "could not record the capture" in out.message
    check_books(store, card, loaded=0, credited_not_captured=3000)
    with pytest.raises(LoadStoreError, match="start a new host"):  # memory is ahead of the db
        host.load(card.process, token=token, amount=1, load_id="U2")
    [settled] = host_for(store, profile).resolve(card.process, token)
    assert settled.state is LoadState.CAPTURED
    check_books(store, card, loaded=3000)


def test_issuer_unreachable_before_credit_moves_nothing(store: SqlStore) -> None:
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)
    down = Unreachable(SqlLoadStore(store), fails=lambda loads: True)
    with pytest.raises(LoadStoreError):
        host_for(store, profile, down).load(card.process, token=token, amount=3000,
                                            load_id="D1")
    check_books(store, card, loaded=0)
    assert SqlLoadStore(store).loads() == []


def test_a_repeated_request_is_loaded_once(store: SqlStore) -> None:
    profile = load_profile("sscard3")
    token = issue_card(store, profile)
    card = chip(profile)
    first = host_for(store, profile).load(card.process, token=token, amount=1200, load_id="R1")
    second = host_for(store, profile).load(card.process, token=token, amount=1200, load_id="R1")
    assert first.state is second.state is LoadState.CAPTURED
    assert (first.repeated, second.repeated) == (False, True)
    assert second.record == first.record
    check_books(store, card, loaded=1200)
    with pytest.raises(IssuerError, match="another card or amount"):
        host_for(store, profile).load(card.process, token=token, amount=1300, load_id="R1")


@pytest.mark.parametrize(("state", "balance", "amount", "reason"), [
    ("activate", 100, 5000, "51"),  # insufficient funds
    (None, OPENING, 5000, "78"),  # financial function not activated
    ("lost", OPENING, 5000, "41"),
    ("seal", OPENING, 5000, "62"),
    ("activate", OPENING, 100_000 - CHIP_OPENING + 1, "purse-limit"),  # above the 1000.00 cap
])
def test_refusals_move_nothing(tmp_path: Path, state: str | None, balance: int, amount: int,
                               reason: str) -> None:
    profile = load_profile("sscard3")
    for s, _ in make_store("sqlite", tmp_path):
        token = issue_card(s, profile, balance=balance, state=state)
        card = chip(profile)
        out = host_for(s, profile).load(card.process, token=token, amount=amount, load_id="X")
        assert (out.state, out.record.reason) == (LoadState.REFUSED, reason)
        assert chip_balance(card) == CHIP_OPENING
        issuer = new_issuer(s, profile)
        account = issuer.account(issuer.card(token).account_id)
        assert (account.balance, account.held) == (balance, 0)
        assert moves(s) == []


def test_the_card_refuses_beyond_its_cap_when_the_host_does_not_know_it(tmp_path: Path) -> None:
    profile = load_profile("sscard3")
    for s, _ in make_store("sqlite", tmp_path):
        token = issue_card(s, profile, balance=200_000)  # the bank would pay it
        card = chip(profile)
        out = host_for(s, profile, max_balance=False).load(
            card.process, token=token, amount=100_000 - CHIP_OPENING + 1, load_id="C1")
        assert (out.state, out.record.reason) == (LoadState.REFUSED, "purse-limit")
        assert "6985" in out.message
        assert chip_balance(card) == CHIP_OPENING and moves(s) == []
        issuer = new_issuer(s, profile)
        assert issuer.account(issuer.card(token).account_id).held == 0


# -- the command ----------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout, stderr of one `tapsim` command (argparse's own exit included)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    db = sqlite_url(path)
    pan = load_profile("sscard3").pan
    assert run(capsys, "card", "issue", "--profile", "sscard3", "--balance", str(OPENING),
               "--activate", "--db", db)[0] == 0
    code, out, err = run(capsys, "card", "load", "--card", "sscard3", "--amount", "5000",
                         "--db", db, "--request-id", "branch-1", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert (r["state"], r["balance_before"], r["balance_after"]) == ("captured", 3000, 8000)
    assert (r["account"]["balance"], r["account"]["held"]) == (OPENING - 5000, 0)
    code, out, err = run(capsys, "card", "load", "--card", "sscard3", "--amount", "5000",
                         "--db", db, "--request-id", "branch-1")
    assert code == 0 and "nothing is loaded again" in out
    code, out, err = run(capsys, "card", "load", "--card", "sscard3", "--amount", "20000",
                         "--db", db)
    assert code == 1 and "refused: 51 insufficient funds" in out
    code, out, err = run(capsys, "card", "load", "--card", "sscard3", "--amount", "93000",
                         "--db", db)  # 80.00 on the chip + 930.00 > 1000.00
    assert code == 1 and "at most 92000 can be loaded" in out
    # Bad requests: exit 2, one line, no traceback.
    for argv, message in [
        (("--card", "sscard3", "--amount", "0", "--db", db), "0 is out of range: 1 to"),
        (("--card", "sscard3", "--amount", "4294967296", "--db", db), "out of range"),
        (("--card", "sscard3", "--amount", "1", "--db", str(tmp_path / "none.db")),
         "no database"),
        (("--card", "unionpay-debit", "--amount", "1", "--db", db), "has no T-Union e-purse"),
        (("--card", "sscard3-sm", "--amount", "1", "--db", db), "no card 'sscard3-sm'"),
        (("--card", "sscard3", "--amount", "1", "--db", db, "--reader", "usb:1"),
         "write pcsc:NAME"),
    ]:
        code, out, err = run(capsys, "card", "load", *argv)
        assert code == 2 and message in err and "Traceback" not in err
    state = load_card_state(card_state_path("sscard3"))
    assert state is not None and state.app(T_UNION_EPURSE).balance == 8000
    # No clear PAN or e-purse card number in the bank's database.
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("bank.db*"))
    assert pan.encode() not in raw and pan.zfill(20).encode() not in raw
    assert pan not in out + err
    rows = sqlite3.connect(path).execute(
        "SELECT count(*) FROM iss_journal WHERE entry_id LIKE 'load:%'").fetchone()
    assert rows == (1,)


def pending_load_of_issued_card(capsys: pytest.CaptureFixture[str], tmp_path: Path, *,
                                after_card: bool, load_id: str) -> str:
    """sscard3 issued by the CLI, then a 20.00 load torn at CREDIT (the card credited first
    when ``after_card``) and left pending; the card's state saved where the CLI finds it."""
    db = sqlite_url(tmp_path / "bank.db")
    profile = load_profile("sscard3")
    assert run(capsys, "card", "issue", "--profile", "sscard3", "--balance", str(OPENING),
               "--activate", "--db", db)[0] == 0
    s = open_store(db)
    try:
        token = new_issuer(s, profile).token_of(profile.pan)
        card = chip(profile)
        pending = host_for(s, profile).load(Torn(card, CREDIT, after_card=after_card),
                                            token=token, amount=2000, load_id=load_id)
        assert pending.state is LoadState.PENDING
    finally:
        s.close()
    save_card_state(card.state, card_state_path("sscard3"))
    return db


def test_the_command_settles_an_earlier_lost_answer(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    db = pending_load_of_issued_card(capsys, tmp_path, after_card=True, load_id="lost-1")
    code, out, err = run(capsys, "card", "load", "--card", "sscard3", "--amount", "100",
                         "--db", db)
    assert code == 0, err
    assert "earlier load lost-1 (20.00): captured: the card had been credited" in out
    assert "e-purse     50.00 -> 51.00 CNY" in out
    assert f"balance {(OPENING - 2100) / 100:.2f}" in out


def test_the_command_settles_without_loading(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    db = pending_load_of_issued_card(capsys, tmp_path, after_card=False, load_id="gone-1")
    code, out, err = run(capsys, "card", "load", "--card", "sscard3", "--settle", "--db", db,
                         "--json")
    assert code == 0, err
    [settled] = json.loads(out)["settled"]
    assert (settled["load_id"], settled["state"], settled["reason"]) == (
        "gone-1", "released", "serial-not-moved")
    code, out, err = run(capsys, "card", "load", "--card", "sscard3", "--settle", "--db", db)
    assert code == 0 and "no pending load" in out
    code, out, err = run(capsys, "card", "load", "--card", "sscard3", "--db", db)
    assert code == 2 and "give --amount for a load, or --settle alone" in err
    s = open_store(db)
    try:
        check_books(s, VirtualCard(personalise(load_profile("sscard3")),
                                   load_card_state(card_state_path("sscard3"))), loaded=0)
    finally:
        s.close()


def test_the_command_loads_a_card_in_a_pcsc_reader(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path, pcscd: str,
                                                    served_card: ServeCard) -> None:
    """The same load over PC/SC: the virtual card served to pcscd's vpcd reader."""
    db = sqlite_url(tmp_path / "bank.db")
    assert run(capsys, "card", "issue", "--profile", "sscard3", "--balance", str(OPENING),
               "--activate", "--db", db)[0] == 0
    served_card("sscard3")
    code, out, err = run(capsys, "card", "load", "--card", "sscard3", "--amount", "5000",
                         "--db", db, "--reader", f"pcsc:{pcscd}", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert (r["state"], r["balance_before"], r["balance_after"]) == ("captured", 3000, 8000)
    assert r["account"]["balance"] == OPENING - 5000
    # The local virtual card's state file is not the card in the reader: untouched.
    assert load_card_state(card_state_path("sscard3")) is None
