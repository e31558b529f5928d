"""The card's e-purse application, command by command, and loading at a bank branch."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emv import tlv
from emv.apdu import read_record, select
from emv.card.card import VirtualCard
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.epurse import keys
from emv.epurse.load import LoadError, load_epurse
from emv.epurse.messages import (
    Proof,
    PublicData,
    PurchaseInit,
    TransactionRecord,
    datetime_bcd,
    debit_for_purchase,
    get_transaction_proof,
    initialize_for_purchase,
)
from emv.epurse.psam import Psam
from emv.kernel import T_UNION_EPURSE
from tapsim.cli import main

SHANGHAI = ZoneInfo("Asia/Shanghai")
AT = dt.datetime(2026, 11, 23, 7, 45, 10, tzinfo=SHANGHAI)
WHEN = datetime_bcd(AT.replace(tzinfo=None))
BRANCH = bytes.fromhex("990000000042")
CARDS = ("sscard3", "sscard3-sm")


def epurse_card(name: str) -> tuple[VirtualCard, str]:
    """A fresh card with its e-purse selected, and the e-purse card number."""
    card = VirtualCard(personalise(load_profile(name)))
    card.power_on()
    fci = card.process(select(T_UNION_EPURSE).to_bytes())
    assert fci[-2:] == b"\x90\x00"
    node = tlv.find(tlv.decode(fci[:-2]), 0x9F0C)
    assert node is not None
    return card, PublicData.parse(node.value).card_number


def sw(response: bytes) -> int:
    return int.from_bytes(response[-2:], "big")


def init(card: VirtualCard, psam: Psam, amount: int) -> tuple[int, PurchaseInit | None]:
    r = card.process(initialize_for_purchase(1, amount, psam.terminal_id))
    return sw(r), (PurchaseInit.parse(r[:-2]) if sw(r) == 0x9000 else None)


def purchase(card: VirtualCard, number: str, psam: Psam, amount: int) -> bytes:
    """INITIALIZE + DEBIT with a correct MAC1; the DEBIT answer."""
    status, answer = init(card, psam, amount)
    assert status == 0x9000 and answer is not None
    session = psam.begin_purchase(number, answer, amount, WHEN)
    return card.process(debit_for_purchase(session.terminal_serial, WHEN,
                                           bytes.fromhex(session.mac1)))


@pytest.mark.parametrize("name", CARDS)
def test_purchase_on_the_card(name: str) -> None:
    card, number = epurse_card(name)
    psam = Psam.test()
    status, answer = init(card, psam, 250)
    assert status == 0x9000 and answer is not None
    assert (answer.balance, answer.serial, answer.key_version) == (3000, 0, 1)
    assert answer.algorithm_id == (0x04 if name.endswith("-sm") else 0x00)
    session = psam.begin_purchase(number, answer, 250, WHEN)
    r = card.process(debit_for_purchase(session.terminal_serial, WHEN,
                                         bytes.fromhex(session.mac1)))
    assert sw(r) == 0x9000
    proof = Proof.parse(r[:-2])
    assert psam.verify_mac2(number, session, proof.mac2)
    algorithm = "sm4" if name.endswith("-sm") else "tdes"
    # The clearing house recomputes the TAC from the TAC master key and the card number.
    assert proof.tac == keys.purchase_tac(keys.TEST_TAC_MASTER_KEY, number, algorithm, 250,
                                          psam.terminal_id, session.terminal_serial, WHEN)
    assert card.process(bytes.fromhex("805C000204")) == (2750).to_bytes(4, "big") + b"\x90\x00"
    # The log's newest record is this purchase; the proof can be fetched again.
    record = TransactionRecord.parse(card.process(read_record(0x18, 1).to_bytes())[:-2])
    assert (record.serial, record.amount, record.transaction_type) == (0, 250, 0x06)
    assert (record.terminal_id, record.when) == (psam.terminal_id, WHEN)
    assert card.process(get_transaction_proof(0x06, 0)) == proof.to_bytes() + b"\x90\x00"
    assert sw(card.process(get_transaction_proof(0x06, 1))) == 0x9406
    assert sw(card.process(read_record(0x18, 2).to_bytes())) == 0x6A83
    assert sw(card.process(read_record(0x1E, 1).to_bytes())) == 0x6A82


def test_bad_mac1_is_refused_and_nothing_moves() -> None:
    card, number = epurse_card("sscard3")
    psam = Psam.test()
    _, answer = init(card, psam, 100)
    assert answer is not None
    session = psam.begin_purchase(number, answer, 100, WHEN)
    bad = bytes(b ^ 0x01 for b in bytes.fromhex(session.mac1))
    assert sw(card.process(debit_for_purchase(session.terminal_serial, WHEN, bad))) == 0x9302
    st = card.state.app(T_UNION_EPURSE)
    assert (st.balance, st.purchase_counter, st.log) == (3000, 0, [])


def test_debit_needs_the_initialize_right_before_it() -> None:
    card, number = epurse_card("sscard3")
    psam = Psam.test()
    _, answer = init(card, psam, 100)
    assert answer is not None
    session = psam.begin_purchase(number, answer, 100, WHEN)
    debit = debit_for_purchase(session.terminal_serial, WHEN, bytes.fromhex(session.mac1))
    card.process(bytes.fromhex("805C000204"))  # anything in between cancels the set-up
    assert sw(card.process(debit)) == 0x6985
    assert sw(card.process(initialize_for_purchase(1, 100, psam.terminal_id))) == 0x9000
    # Replaying the recorded DEBIT after a new INITIALIZE: a new random, so MAC1 fails.
    assert sw(card.process(debit)) == 0x9302
    assert card.state.app(T_UNION_EPURSE).balance == 3000


def test_terminal_serial_must_go_up() -> None:
    card, number = epurse_card("sscard3")
    assert sw(purchase(card, number, Psam.test(serial=41), 100)) == 0x9000
    # A PSAM rolled back to an older serial (same terminal number): the card refuses.
    assert sw(purchase(card, number, Psam.test(serial=10), 100)) == 0x6985
    assert sw(purchase(card, number, Psam.test(serial=42), 100)) == 0x9000
    st = card.state.app(T_UNION_EPURSE)
    assert (st.balance, st.purchase_counter) == (2800, 2)


def test_short_balance_unknown_key_index_and_bad_parameters() -> None:
    card, _ = epurse_card("sscard3")
    psam = Psam.test()
    assert init(card, psam, 3001)[0] == 0x9401
    assert init(card, psam, 3000)[0] == 0x9000
    assert sw(card.process(initialize_for_purchase(2, 10, psam.terminal_id))) == 0x9403
    assert sw(card.process(bytes.fromhex("8050010305") + bytes(5))) == 0x6A86
    assert sw(card.process(bytes.fromhex("805401000F") + bytes(15))) == 0x6985
    # An e-purse command while QuickPass is selected is not the e-purse's.
    card.process(select(bytes.fromhex("A000000333010101")).to_bytes())
    assert sw(card.process(initialize_for_purchase(1, 10, psam.terminal_id))) == 0x6D00


@pytest.mark.parametrize("name", CARDS)
def test_load_at_a_bank_branch(name: str) -> None:
    card = VirtualCard(personalise(load_profile(name)))
    card.power_on()
    receipt = load_epurse(card.process, load_master_key=keys.TEST_LOAD_MASTER_KEY, amount=5000,
                          at=AT, terminal_id=BRANCH, tac_master_key=keys.TEST_TAC_MASTER_KEY)
    assert (receipt.balance_before, receipt.balance_after) == (3000, 8000)
    assert receipt.online_serial == 0 and receipt.tac_ok is True
    again = load_epurse(card.process, load_master_key=keys.TEST_LOAD_MASTER_KEY, amount=1,
                        at=AT, terminal_id=BRANCH)
    assert (again.balance_after, again.online_serial, again.tac_ok) == (8001, 1, None)
    st = card.state.app(T_UNION_EPURSE)
    assert (st.balance, st.load_counter, st.purchase_counter) == (8001, 2, 0)
    record = TransactionRecord.parse(card.process(read_record(0x18, 2).to_bytes())[:-2])
    assert (record.transaction_type, record.amount, record.terminal_id) == (0x02, 5000, BRANCH)


def test_load_refusals() -> None:
    card = VirtualCard(personalise(load_profile("sscard3")))
    card.power_on()
    with pytest.raises(LoadError) as wrong_key:  # not the issuer's load key: MAC1 fails
        load_epurse(card.process, load_master_key=keys.TEST_PURCHASE_MASTER_KEY, amount=100,
                    at=AT, terminal_id=BRANCH)
    assert wrong_key.value.reason == "card-mac1-invalid"
    with pytest.raises(LoadError) as too_much:  # beyond the card's 1000.00 maximum
        load_epurse(card.process, load_master_key=keys.TEST_LOAD_MASTER_KEY, amount=97_001,
                    at=AT, terminal_id=BRANCH)
    assert too_much.value.reason == "card-refused" and "6985" in str(too_much.value)
    with pytest.raises(LoadError) as naive:
        load_epurse(card.process, load_master_key=keys.TEST_LOAD_MASTER_KEY, amount=1,
                    at=AT.replace(tzinfo=None), terminal_id=BRANCH)
    assert naive.value.reason == "bad-time"
    with pytest.raises(LoadError) as no_epurse:
        load_epurse(VirtualCard(personalise(load_profile("unionpay-debit"))).process,
                    load_master_key=keys.TEST_LOAD_MASTER_KEY, amount=1, at=AT,
                    terminal_id=BRANCH)
    assert no_epurse.value.reason == "card-refused"
    assert card.state.app(T_UNION_EPURSE).balance == 3000


def test_credit_with_a_bad_mac2_is_refused() -> None:
    card, _ = epurse_card("sscard3")
    r = card.process(bytes.fromhex("805000020B01000003E8") + BRANCH + b"\x10")
    assert sw(r) == 0x9000 and len(r) == 18
    assert sw(card.process(bytes.fromhex("805200000B") + WHEN + bytes(4) + b"\x04")) == 0x9302
    st = card.state.app(T_UNION_EPURSE)
    assert (st.balance, st.load_counter) == (3000, 0)


def test_state_round_trips_through_its_dict() -> None:
    card, number = epurse_card("sscard3-sm")
    assert sw(purchase(card, number, Psam.test(), 300)) == 0x9000
    again = VirtualCard(card.image, type(card.state).from_dict(card.state.to_dict()))
    again.power_on()
    again.process(select(T_UNION_EPURSE).to_bytes())
    assert again.process(bytes.fromhex("805C000204")) == (2700).to_bytes(4, "big") + b"\x90\x00"
    assert sw(again.process(get_transaction_proof(0x06, 0))) == 0x9000


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.tuples(st.sampled_from([0x50, 0x54, 0x52, 0x5A, 0x5C, 0xB2]), st.integers(0, 255),
              st.integers(0, 255), st.binary(max_size=20)).map(
        lambda c: bytes((0x80, c[0], c[1], c[2], len(c[3]))) + c[3] if c[3]
        else bytes((0x80, c[0], c[1], c[2], 0)))), max_size=6))
def test_selected_epurse_answers_anything_with_a_status_word(commands: list[bytes]) -> None:
    card, _ = epurse_card("sscard3-sm")
    for command in commands:
        response = card.process(command)
        assert len(response) >= 2
    st_ = card.state.app(T_UNION_EPURSE)
    assert (st_.balance, st_.purchase_counter) == (3000, 0)  # no valid MAC, no money moves


def test_trace_masks_the_epurse_card_number(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tap", "--card", "sscard3", "--prefer", "epurse", "--fresh", "--trace",
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert "6231900000000000014" not in out and '"aid": "A000000632010105"' in out
