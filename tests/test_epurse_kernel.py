"""E-purse purchases through the kernel: priority and fallback, bad MACs, replays, torn
purchases and their recovery, hostile answers, and the CLI."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.card.state import CardState
from emv.epurse import keys
from emv.epurse.psam import TEST_PURCHASE_KEYS, TEST_TERMINAL_ID, Psam
from emv.kernel import (
    EPURSE_FIRST,
    T_UNION_EPURSE,
    UNIONPAY_DEBIT,
    CardRemoved,
    Exchange,
    Finished,
    Kernel,
    Outcome,
    TapResult,
    TerminalConfig,
    TransactionInput,
    run,
)
from emv.oda import builtin_test_ca_keys
from tapsim.cli import main

TOKEN_KEY = b"tapsim-test-token-key-0000000000"
SHANGHAI = ZoneInfo("Asia/Shanghai")
MORNING = dt.datetime(2026, 11, 23, 7, 30, tzinfo=SHANGHAI)
UN = bytes.fromhex("01020304")
PREFER_EPURSE = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=TOKEN_KEY,
                               aid_priority=EPURSE_FIRST)
EPURSE_ONLY = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=TOKEN_KEY,
                             aid_priority=(T_UNION_EPURSE,))
Transport = Callable[[bytes], bytes]


def new_card(name: str = "sscard3") -> VirtualCard:
    return VirtualCard(personalise(load_profile(name)))


def tap(card: VirtualCard, psam: Psam | None, amount: int = 200,
        at: dt.datetime = MORNING, cfg: TerminalConfig = PREFER_EPURSE,
        transceive: Transport | None = None, trace: list[Exchange] | None = None) -> TapResult:
    card.power_on()
    txn = TransactionInput(amount=amount, date=at.date(), unpredictable_number=UN, at=at)
    return run(Kernel(cfg, txn, psam), transceive or card.process, trace)


def balance(card: VirtualCard) -> int:
    return card.state.app(T_UNION_EPURSE).balance


def removed_at(card: VirtualCard, ins: int, *, after: bool) -> Transport:
    """The card leaves the field at the first command ``ins``: before or after it is done."""
    gone = [False]

    def transceive(apdu: bytes) -> bytes:
        if gone[0] or apdu[1] != ins:
            return card.process(apdu)
        gone[0] = True
        if after:
            card.process(apdu)
        raise CardRemoved
    return transceive


@pytest.mark.parametrize("name", ["sscard3", "sscard3-sm"])
def test_epurse_purchase_when_the_terminal_prefers_it(name: str) -> None:
    card, psam = new_card(name), Psam.test()
    trace: list[Exchange] = []
    result = tap(card, psam, trace=trace)
    assert result.outcome is Outcome.APPROVED_OFFLINE and result.reason is None
    assert result.aid == T_UNION_EPURSE.hex().upper() and result.label == "T-Union"
    assert (result.epurse_balance_before, result.epurse_balance_after) == (3000, 2800)
    assert (result.epurse_serial, result.psam_serial, result.psam_id) == (0, 1, "310000000001")
    assert result.epurse_mac2_ok is True and result.epurse_tac is not None
    # The purse's own number (the profile names none: 3100, the PAN less its BIN and check
    # digit, a Luhn digit), never the bank PAN.
    purse_number = {"sscard3": "31000000000000013", "sscard3-sm": "31000000000000021"}[name]
    assert result.pan_masked == purse_number[:6] + "*" * 7 + purse_number[-4:]
    # SELECT PPSE, SELECT e-purse, INITIALIZE, DEBIT: four commands, no GPO, no records.
    assert [e.command[:2].hex() for e in trace] == ["00a4", "00a4", "8050", "8054"]
    assert balance(card) == 2800 and psam.pending_count == 0
    second = tap(card, psam)
    assert (second.epurse_serial, second.psam_serial, balance(card)) == (1, 2, 2600)
    # The TAC is what the clearing house recomputes.
    number = purse_number.zfill(20)  # the key is diversified by the purse's own number
    algorithm = "sm4" if name.endswith("-sm") else "tdes"
    assert second.epurse_tac == keys.purchase_tac(
        keys.TEST_TAC_MASTER_KEY, number, algorithm, 200, TEST_TERMINAL_ID, 2,
        bytes.fromhex("20261123073000")).hex().upper()


def test_priority_decides_and_no_psam_means_no_epurse() -> None:
    card = new_card()
    quickpass_first = TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=TOKEN_KEY)
    assert tap(card, Psam.test(), cfg=quickpass_first).aid == UNIONPAY_DEBIT.hex().upper()
    result = tap(card, None)  # e-purse listed first, but this terminal has no PSAM
    assert result.aid == UNIONPAY_DEBIT.hex().upper() and result.oda == "fdda-rsa"
    assert balance(card) == 3000


def test_short_balance_falls_back_to_quickpass() -> None:
    card, psam = new_card("sscard3-sm"), Psam.test()
    result = tap(card, psam, amount=3500)
    assert result.outcome is Outcome.APPROVED_OFFLINE
    assert result.aid == UNIONPAY_DEBIT.hex().upper() and result.oda == "fdda-sm2"
    assert result.epurse_fallback == "epurse-insufficient-balance"
    assert balance(card) == 3000 and psam.serial == 0  # no terminal serial spent
    only = tap(card, psam, amount=3500, cfg=EPURSE_ONLY)
    assert only.outcome is Outcome.DECLINED and only.reason == "epurse-insufficient-balance"


def test_expired_epurse_falls_back() -> None:
    late = dt.datetime(2031, 1, 5, 9, 0, tzinfo=SHANGHAI)
    result = tap(new_card(), Psam.test(), at=late)
    assert result.epurse_fallback == "epurse-expired"
    assert result.aid == UNIONPAY_DEBIT.hex().upper()
    assert result.outcome is Outcome.DECLINED and result.reason == "card-expired"


def test_bad_mac1_declines_without_debit() -> None:
    card = new_card()
    stranger = Psam(TEST_TERMINAL_ID, {(0x01, 0x00): bytes(16)})  # not the issuer's key
    result = tap(card, stranger)
    assert result.outcome is Outcome.DECLINED and result.reason == "epurse-mac1-rejected"
    assert balance(card) == 3000 and stranger.pending_count == 0


def test_psam_without_the_card_key_falls_back() -> None:
    sm4_only = Psam(TEST_TERMINAL_ID, {(0x01, 0x04): keys.TEST_PURCHASE_MASTER_KEY})
    result = tap(new_card("sscard3"), sm4_only)  # a 3DES e-purse
    assert result.epurse_fallback == "epurse-key-unsupported"
    assert result.aid == UNIONPAY_DEBIT.hex().upper() and sm4_only.serial == 0


def test_bad_mac2_is_flagged() -> None:
    card, psam = new_card(), Psam.test()

    def garble_mac2(apdu: bytes) -> bytes:
        response = card.process(apdu)
        if apdu[1] == 0x54 and response[-2:] == b"\x90\x00":
            response = response[:4] + bytes(4) + response[-2:]
        return response

    result = tap(card, psam, transceive=garble_mac2)
    assert result.outcome is Outcome.DECLINED and result.reason == "epurse-mac2-invalid"
    assert result.epurse_mac2_ok is False and result.epurse_tac is not None
    assert balance(card) == 2800  # the card did debit: the TAC goes to the clearing house
    assert psam.pending_count == 0


def test_card_whose_serial_goes_back_is_refused() -> None:
    card, psam = new_card(), Psam.test()
    before = copy.deepcopy(card.state)
    assert tap(card, psam).outcome is Outcome.APPROVED_OFFLINE
    clone = VirtualCard(card.image, before)  # the card's data restored to before the purchase
    result = tap(clone, psam)
    assert result.outcome is Outcome.DECLINED and result.reason == "epurse-serial-replayed"
    assert balance(clone) == 3000


def test_rolled_back_psam_serial_is_refused_by_the_card() -> None:
    card = new_card()
    assert tap(card, Psam.test(serial=100)).outcome is Outcome.APPROVED_OFFLINE
    result = tap(card, Psam.test(serial=5))
    assert result.outcome is Outcome.DECLINED and result.reason == "epurse-debit-refused-6985"
    assert balance(card) == 2800


def test_removed_before_debit_then_discarded_and_charged_once() -> None:
    card, psam = new_card(), Psam.test()
    torn = tap(card, psam, transceive=removed_at(card, 0x54, after=False))
    assert torn.outcome is Outcome.TRY_AGAIN and torn.reason == "card-removed-during-debit"
    assert psam.pending_count == 1 and balance(card) == 3000
    again = tap(card, psam)
    assert again.outcome is Outcome.APPROVED_OFFLINE
    assert again.epurse_recovered is not None
    assert again.epurse_recovered["status"] == "discarded"
    assert balance(card) == 2800 and psam.pending_count == 0


def test_removed_during_initialize_leaves_nothing_pending() -> None:
    card, psam = new_card(), Psam.test()
    torn = tap(card, psam, transceive=removed_at(card, 0x50, after=True))
    assert torn.outcome is Outcome.TRY_AGAIN and torn.reason == "card-removed"
    assert psam.pending_count == 0 and psam.serial == 0
    assert tap(card, psam).outcome is Outcome.APPROVED_OFFLINE and balance(card) == 2800


def test_removed_after_debit_retry_is_approved_without_a_second_debit() -> None:
    card, psam = new_card("sscard3-sm"), Psam.test()
    torn = tap(card, psam, transceive=removed_at(card, 0x54, after=True))
    assert torn.outcome is Outcome.TRY_AGAIN and balance(card) == 2800
    trace: list[Exchange] = []
    retry = tap(card, psam, at=MORNING + dt.timedelta(seconds=20), trace=trace)
    assert retry.outcome is Outcome.APPROVED_OFFLINE
    assert retry.epurse_recovered is not None
    assert retry.epurse_recovered["status"] == "completed"
    assert retry.epurse_recovered["tac"] == retry.epurse_tac and retry.epurse_mac2_ok is True
    assert (retry.epurse_serial, retry.psam_serial) == (0, 1)  # the torn purchase's numbers
    assert balance(card) == 2800 and card.state.app(T_UNION_EPURSE).purchase_counter == 1
    assert [e.command[:2].hex() for e in trace][2:] == ["805a"]  # the proof, no new debit
    assert psam.pending_count == 0


def test_retry_is_approved_even_when_the_purse_is_now_too_short() -> None:
    card, psam = new_card(), Psam.test()
    card.state.app(T_UNION_EPURSE).balance = 250
    tap(card, psam, transceive=removed_at(card, 0x54, after=True))
    assert balance(card) == 50
    retry = tap(card, psam, at=MORNING + dt.timedelta(seconds=10))
    assert retry.outcome is Outcome.APPROVED_OFFLINE and retry.aid == "A000000632010105"
    assert retry.epurse_balance_after == 50 and retry.epurse_fallback is None


def test_torn_purchase_beyond_the_log_is_left_unresolved() -> None:
    card, ours, other = new_card(), Psam.test(), Psam.test(bytes.fromhex("320000000009"))
    card.state.app(T_UNION_EPURSE).balance = 5000
    tap(card, ours, transceive=removed_at(card, 0x54, after=True))
    for _ in range(10):  # ten purchases elsewhere push serial 0 out of the ten-record log
        assert tap(card, other).outcome is Outcome.APPROVED_OFFLINE
    trace: list[Exchange] = []
    back = tap(card, ours, at=MORNING + dt.timedelta(days=1), trace=trace)
    assert back.epurse_recovered is not None
    assert back.epurse_recovered["status"] == "unresolved"
    assert sum(e.command[:2] == b"\x00\xb2" for e in trace) == 10
    assert back.outcome is Outcome.APPROVED_OFFLINE and ours.pending_count == 0
    assert balance(card) == 5000 - 12 * 200


def test_card_behind_its_pending_purchase_is_refused() -> None:
    card, psam = new_card(), Psam.test()
    assert tap(card, psam).outcome is Outcome.APPROVED_OFFLINE
    before = copy.deepcopy(card.state)  # serial 1
    tap(card, psam, transceive=removed_at(card, 0x54, after=False))  # pending at serial 1
    rolled = VirtualCard(card.image, copy.deepcopy(before))
    rolled.state.app(T_UNION_EPURSE).purchase_counter = 0  # a card image from further back
    result = tap(rolled, psam)
    assert result.outcome is Outcome.DECLINED and result.reason == "epurse-serial-replayed"
    assert psam.pending_count == 1


def test_removed_after_debit_later_trip_pays_for_itself() -> None:
    card, psam = new_card(), Psam.test()
    tap(card, psam, transceive=removed_at(card, 0x54, after=True))
    later = tap(card, psam, at=MORNING + dt.timedelta(hours=9))
    assert later.outcome is Outcome.APPROVED_OFFLINE
    assert later.epurse_recovered is not None
    assert later.epurse_recovered["status"] == "completed"
    assert later.epurse_serial == 1 and balance(card) == 2600


def test_torn_purchase_resolved_from_the_log_after_other_terminals() -> None:
    card, ours, other = new_card(), Psam.test(), Psam.test(bytes.fromhex("320000000009"))
    tap(card, ours, transceive=removed_at(card, 0x54, after=True))
    tap(card, other)
    tap(card, other)  # the card's serial is now 3: no proof for serial 0 any more
    back = tap(card, ours, at=MORNING + dt.timedelta(hours=2))
    assert back.epurse_recovered is not None
    assert back.epurse_recovered["status"] == "completed-by-log"
    assert back.outcome is Outcome.APPROVED_OFFLINE and balance(card) == 2200


def test_torn_purchase_that_never_reached_the_card_then_used_elsewhere() -> None:
    card, ours, other = new_card(), Psam.test(), Psam.test(bytes.fromhex("320000000009"))
    tap(card, ours, transceive=removed_at(card, 0x54, after=False))
    tap(card, other)  # serial 0 now belongs to the other terminal's purchase
    back = tap(card, ours, at=MORNING + dt.timedelta(minutes=1))
    assert back.epurse_recovered is not None
    assert back.epurse_recovered["status"] == "discarded"  # proof's MAC2 not ours; log agrees
    assert back.outcome is Outcome.APPROVED_OFFLINE and balance(card) == 2600


def test_psam_state_survives_a_restart() -> None:
    card, psam = new_card(), Psam.test()
    tap(card, psam, transceive=removed_at(card, 0x54, after=True))
    saved = json.loads(json.dumps(psam.to_dict()))
    assert "6231900000000000014" not in json.dumps(saved)  # no card number kept in clear
    restored = Psam.from_dict(saved, TEST_PURCHASE_KEYS)
    retry = tap(card, restored, at=MORNING + dt.timedelta(seconds=30))
    assert retry.epurse_recovered is not None
    assert retry.epurse_recovered["status"] == "completed" and balance(card) == 2800
    assert tap(card, restored).psam_serial == 2


def test_transaction_time_is_checked() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        TransactionInput(amount=1, date=MORNING.date(), unpredictable_number=UN,
                         at=MORNING.replace(tzinfo=None))
    with pytest.raises(ValueError, match="transaction date"):
        TransactionInput(amount=1, date=dt.date(2026, 1, 1), unpredictable_number=UN, at=MORNING)


# --- hostile and garbled cards ----------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 6), st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 40), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("sw"), st.integers(0, 0xFFFF), st.just(0)),
    st.tuples(st.just("gone"), st.just(0), st.just(0)),
), st.booleans())
def test_garbled_epurse_answers_end_in_a_defined_outcome(
        step: int, mutation: tuple[str, int, int], torn_first: bool) -> None:
    card, psam = new_card(), Psam.test()
    if torn_first:  # a pending purchase to resolve makes the recovery path the target
        tap(card, psam, transceive=removed_at(card, 0x54, after=True))
    start = balance(card)
    seen = [0]

    def transceive(apdu: bytes) -> bytes:
        response = card.process(apdu)
        seen[0] += 1
        if seen[0] - 1 != step:
            return response
        kind, a, b = mutation
        if kind == "gone":
            raise CardRemoved
        if kind == "flip":
            raw = bytearray(response)
            raw[a % len(raw)] ^= b
            return bytes(raw)
        if kind == "cut":
            return response[:a]
        return response[:-2] + a.to_bytes(2, "big")

    kernel = Kernel(PREFER_EPURSE, TransactionInput(amount=200, date=MORNING.date(),
                                                    unpredictable_number=UN, at=MORNING), psam)
    result: Any = kernel.start()
    for _ in range(40):
        if isinstance(result, Finished):
            break
        try:
            result = kernel.receive(transceive(result.apdu))
        except CardRemoved:
            result = kernel.card_removed()
    assert isinstance(result, Finished)
    outcome = result.result
    assert outcome.outcome in set(Outcome)
    # Money moves at most once per tap, and only with a purchase the terminal can stand by.
    assert start - balance(card) in (0, 200)
    if outcome.outcome is Outcome.APPROVED_OFFLINE and outcome.aid == T_UNION_EPURSE.hex().upper():
        assert outcome.epurse_tac is not None or outcome.epurse_recovered is not None


# --- CLI ----------------------------------------------------------------------------------

def test_cli_prefer_epurse(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    state = tmp_path / "card.json"
    base = ["tap", "--card", "sscard3", "--json", "--prefer", "epurse", "--state", str(state)]
    assert main(base) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["aid"] == "A000000632010105" and first["outcome"] == "approved-offline"
    assert (first["epurse_balance_before"], first["epurse_balance_after"]) == (3000, 2800)
    assert first["psam_serial"] == 1 and len(first["epurse_tac"]) == 8
    assert main([*base, "--amount", "300"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["epurse_balance_after"], second["psam_serial"]) == (2500, 2)
    saved = CardState.from_dict(json.loads(state.read_text()))
    assert saved.app(T_UNION_EPURSE).balance == 2500
    assert json.loads((tmp_path / "psam.json").read_text())["serial"] == 2
    assert main([*base, "--amount", "9000"]) == 0  # short: QuickPass pays
    third = json.loads(capsys.readouterr().out)
    assert third["aid"] == "A000000333010101"
    assert third["epurse_fallback"] == "epurse-insufficient-balance"
    assert main(["tap", "--card", "sscard3-sm", "--fresh", "--prefer", "epurse"]) == 0
    assert "epurse_balance_after" in capsys.readouterr().out


def test_a_purse_never_takes_the_bank_pan_as_its_number(tmp_path: Path) -> None:
    """The purse's number is kept for clearing, where no PAN may go: a profile naming the PAN
    as its purse number is refused, and one naming none gets a number of its own."""
    import emv.card.profiles
    from emv.card.profile import ProfileError
    from emv.epurse.application import purse_number_of
    from emv.pan import luhn_ok

    for pan in ("6231900000000000014", "6231900000000000022", "6250940000000000016"):
        assert purse_number_of(pan).lstrip("0") != pan and luhn_ok(purse_number_of(pan))
    profiles = Path(emv.card.profiles.__file__).parent
    text = (profiles / "sscard3.toml").read_text().replace(
        'kind = "epurse"\n', 'kind = "epurse"\ncard_number = "6231900000000000014"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ProfileError, match="card_number: the purse's own number, not"):
        load_profile(str(bad))
