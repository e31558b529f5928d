"""Application selection with the ASI (partial AID matching) and the virtual card's edge-case
status words: SELECT next occurrence, GPO without its PDOL data, READ RECORD and Le, the ATR."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from emv.apdu import CommandApdu, ResponseApdu, read_record, select
from emv.card.card import ATR, HISTORICAL_BYTES, VirtualCard, contactless_atr
from emv.card.image import personalise
from emv.card.profile import load_profile
from emv.kernel import (
    UNIONPAY_DEBIT,
    Exchange,
    Kernel,
    Outcome,
    TerminalConfig,
    TransactionInput,
    run,
)
from emv.oda import builtin_test_ca_keys

EXTENDED = "A0000003330101010203"  # the UnionPay debit AID with an issuer's suffix
PROFILE = Path(__file__).parent.parent / "emv" / "card" / "profiles" / "unionpay-debit.toml"


def extended_card(tmp_path: Path, aids: tuple[str, ...] = (EXTENDED,)) -> VirtualCard:
    text = PROFILE.read_text()
    head, app = text.split("[[applications]]", 1)
    apps = "".join("[[applications]]" + app.replace('"A000000333010101"', f'"{aid}"')
                   .replace("priority = 1", f"priority = {i + 1}") for i, aid in enumerate(aids))
    path = tmp_path / "extended.toml"
    path.write_text(head + apps)
    return VirtualCard(personalise(load_profile(str(path))))


def tap(card: VirtualCard, cfg: TerminalConfig,
        trace: list[Exchange] | None = None) -> Outcome:
    card.power_on()
    txn = TransactionInput(amount=200, date=dt.date(2026, 11, 23),
                           unpredictable_number=bytes.fromhex("01020304"))
    result = run(Kernel(cfg, txn), card.process, trace)
    return result.outcome


def config(**kw: Any) -> TerminalConfig:
    return TerminalConfig(ca_keys=builtin_test_ca_keys(), token_key=b"k" * 32, **kw)


def test_partial_match_selects_the_cards_extended_aid(tmp_path: Path) -> None:
    trace: list[Exchange] = []
    assert tap(extended_card(tmp_path), config(), trace) is Outcome.APPROVED_OFFLINE
    assert trace[1].command == select(bytes.fromhex(EXTENDED)).to_bytes()  # the full ADF name


def test_exact_match_when_the_asi_says_so(tmp_path: Path) -> None:
    exact = config(partial_aids=frozenset())
    trace: list[Exchange] = []
    assert tap(extended_card(tmp_path), exact, trace) is Outcome.END_APPLICATION
    assert len(trace) == 1  # nothing on the card matches exactly: no SELECT AID
    # Exact still selects the plain AID.
    assert tap(VirtualCard(personalise(load_profile("unionpay-debit"))), exact) \
        is Outcome.APPROVED_OFFLINE


def test_asi_is_per_aid(tmp_path: Path) -> None:
    credit = bytes.fromhex("A000000333010102")
    cfg = config(aid_priority=(credit, UNIONPAY_DEBIT), partial_aids=frozenset({credit}))
    assert cfg.match_aid(bytes.fromhex("A0000003330101020A")) == 0
    assert cfg.match_aid(bytes.fromhex("A0000003330101010A")) is None
    assert cfg.match_aid(UNIONPAY_DEBIT) == 1
    assert cfg.match_aid(bytes.fromhex("A0000003330101")) is None  # shorter never matches


def sw(response: bytes) -> int:
    return ResponseApdu.parse(response).sw


def test_select_next_occurrence_walks_the_matching_applications(tmp_path: Path) -> None:
    card = extended_card(tmp_path, ("A0000003330101010001", "A0000003330101010002"))
    card.power_on()
    partial = bytes.fromhex("A000000333010101")
    first = card.process(select(partial).to_bytes())
    assert sw(first) == 0x9000 and bytes.fromhex("A0000003330101010001") in first
    nxt = CommandApdu(0x00, 0xA4, 0x04, 0x02, partial, 0).to_bytes()
    second = card.process(nxt)
    assert sw(second) == 0x9000 and bytes.fromhex("A0000003330101010002") in second
    assert sw(card.process(nxt)) == 0x6A82  # no further occurrence
    assert sw(card.process(CommandApdu(0x00, 0xA4, 0x04, 0x01, partial, 0).to_bytes())) == 0x6A86


def test_gpo_without_its_pdol_data_is_wrong_length() -> None:
    card = VirtualCard(personalise(load_profile("sscard3")))
    card.power_on()
    assert sw(card.process(select(UNIONPAY_DEBIT).to_bytes())) == 0x9000
    assert card.process(bytes.fromhex("80A800000283" "0000")) == b"\x67\x00"
    assert card.process(bytes.fromhex("80A8000004830226800000")) == b"\x67\x00"


def test_read_record_honours_le() -> None:
    card = VirtualCard(personalise(load_profile("sscard3")))
    card.power_on()
    card.process(select(UNIONPAY_DEBIT).to_bytes())
    full = card.process(read_record(1, 1).to_bytes())  # Le 00: up to 256
    assert sw(full) == 0x9000
    size = len(full) - 2
    short = CommandApdu(0x00, 0xB2, 0x01, 0x0C, b"", 4).to_bytes()
    assert card.process(short) == bytes((0x6C, size))  # ISO 7816-4: here is the exact length
    exact = CommandApdu(0x00, 0xB2, 0x01, 0x0C, b"", size).to_bytes()
    assert card.process(exact) == full
    assert card.process(bytes.fromhex("00B2010C")) == b"\x67\x00"  # no Le at all


def test_atr_is_pcsc_part3_for_an_iso14443_4_card() -> None:
    assert ATR[:4] == bytes.fromhex("3B8B8001") and ATR[4:-1] == HISTORICAL_BYTES
    tck = 0
    for byte in ATR[1:]:
        tck ^= byte
    assert tck == 0  # TCK makes the XOR of T0..TCK zero
    # Two historical bytes: T0 = 82, TD1 = 80, TD2 = 01, the bytes, TCK = 82^80^01^01^02.
    assert contactless_atr(bytes.fromhex("0102")) == bytes.fromhex("3B828001010200")
    with pytest.raises(ValueError):
        contactless_atr(bytes(16))
