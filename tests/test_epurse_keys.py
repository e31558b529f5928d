"""E-purse crypto and message layouts: the published PBOC example, independent SM4 and 3DES,
and codecs that either round-trip or raise their one typed error."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from gmssl import sm4 as gmssl_sm4
from hypothesis import given
from hypothesis import strategies as st

from emv.epurse import keys
from emv.epurse.messages import (
    EpurseDataError,
    LoadInit,
    Proof,
    PublicData,
    PurchaseInit,
    TransactionRecord,
    datetime_bcd,
    debit_for_purchase,
    initialize_for_load,
    initialize_for_purchase,
    parse_datetime_bcd,
)

# The worked example of a PBOC e-purse purchase published with the ED/EP walkthroughs
# ("基于PBOC的电子钱包消费交易过程"): purchase key, card random 11223344, card serial 0000,
# terminal serial ...0001, amount 00001000, terminal 001122334455, 2012-02-29 13:51:00.
EXAMPLE_KEY = bytes.fromhex("11223344556677888877665544332211")


def test_published_purchase_example_3des() -> None:
    session = keys.purchase_session_key(EXAMPLE_KEY, bytes.fromhex("11223344"), 0, 1, "tdes")
    assert session.hex().upper() == "003238ABC57659DD"
    mac1_input = keys.purchase_mac1_input(0x1000, bytes.fromhex("001122334455"),
                                          bytes.fromhex("20120229135100"))
    assert mac1_input.hex() == "00001000" "06" "001122334455" "20120229135100"
    assert keys.mac(session, mac1_input, "tdes").hex().upper() == "F15CAB75"
    assert keys.mac(session, (0x1000).to_bytes(4, "big"), "tdes").hex().upper() == "56988A13"


def _tdes_ecb(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.TripleDES(key), modes.ECB()).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def _gmssl_sm4_ecb(key: bytes, data: bytes) -> bytes:
    crypt = gmssl_sm4.CryptSM4()
    crypt.set_key(key, gmssl_sm4.SM4_ENCRYPT)
    return b"".join(bytes(crypt.one_round(crypt.sk, list(data[i:i + 16])))
                    for i in range(0, len(data), 16))


def _gmssl_sm4_cbc_mac(key: bytes, data: bytes) -> bytes:
    padded = data + b"\x80" + bytes(-(len(data) + 1) % 16)
    block = bytes(16)
    for i in range(0, len(padded), 16):
        block = _gmssl_sm4_ecb(key, bytes(a ^ b for a, b in zip(block, padded[i:i + 16],
                                                                strict=True)))
    return block


digits20 = st.text("0123456789", min_size=20, max_size=20)
key16 = st.binary(min_size=16, max_size=16)


@given(key16, digits20)
def test_diversification_against_plain_block_ciphers(master: bytes, number: str) -> None:
    d = bytes.fromhex(number[-16:])
    not_d = bytes(b ^ 0xFF for b in d)
    assert keys.diversify(master, number, "tdes") == _tdes_ecb(master, d + not_d)
    assert keys.diversify(master, number, "sm4") == _gmssl_sm4_ecb(master, d + not_d)


@given(key16, st.binary(min_size=4, max_size=4), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFFFFFF), st.binary(max_size=40))
def test_sm4_session_key_and_mac_against_gmssl(card_key: bytes, random: bytes, serial: int,
                                               terminal_serial: int, data: bytes) -> None:
    session = keys.purchase_session_key(card_key, random, serial, terminal_serial, "sm4")
    block = random + serial.to_bytes(2, "big") + (terminal_serial & 0xFFFF).to_bytes(2, "big")
    assert session == _gmssl_sm4_ecb(card_key, block + b"\x80" + bytes(7))
    assert keys.mac(session, data, "sm4") == _gmssl_sm4_cbc_mac(session, data)[:4]


def test_tac_key_folds_for_3des_only() -> None:
    dtk = bytes(range(16))
    assert keys.tac_mac_key(dtk, "tdes") == bytes(a ^ b for a, b in zip(dtk[:8], dtk[8:],
                                                                       strict=True))
    assert keys.tac_mac_key(dtk, "sm4") == dtk


def test_key_errors_name_the_problem_not_the_key() -> None:
    secret = bytes.fromhex("DEADBEEF" * 4)
    with pytest.raises(keys.EpurseKeyError) as err:
        keys.diversify(secret[:15], "0" * 20, "tdes")
    assert "16 bytes" in str(err.value) and "DEADBEEF" not in str(err.value).upper()
    with pytest.raises(keys.EpurseKeyError):
        keys.diversify(secret, "1234", "sm4")
    with pytest.raises(keys.EpurseKeyError):
        keys.mac(secret, b"x", "tdes")  # 3DES-suite MACs take the 8-byte session key
    assert keys.algorithm_from_id(0x04) == "sm4" and keys.algorithm_from_id(0x07) is None


def test_commands_are_the_documented_bytes() -> None:
    terminal = bytes.fromhex("310000000001")
    assert initialize_for_purchase(1, 200, terminal).hex().upper() == (
        "805001020B" "01" "000000C8" "310000000001" "0F")
    assert initialize_for_load(1, 5000, terminal).hex().upper() == (
        "805000020B" "01" "00001388" "310000000001" "10")
    when = datetime_bcd(dt.datetime(2026, 11, 23, 8, 5, 9))
    assert debit_for_purchase(7, when, bytes(4)).hex().upper() == (
        "805401000F" "00000007" "20261123080509" "00000000" "08")
    with pytest.raises(EpurseDataError):
        initialize_for_purchase(1, 2**32, terminal)
    with pytest.raises(EpurseDataError):
        initialize_for_purchase(1, 1, terminal[:5])


@given(st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF), st.integers(0, 2**24 - 1),
       st.integers(0, 255), st.integers(0, 255), st.binary(min_size=4, max_size=4))
def test_purchase_init_round_trip(balance: int, serial: int, overdraft: int, version: int,
                                  algorithm: int, random: bytes) -> None:
    init = PurchaseInit(balance, serial, overdraft, version, algorithm, random)
    assert PurchaseInit.parse(init.to_bytes()) == init
    load = LoadInit(balance, serial, version, algorithm, random, random[::-1])
    assert LoadInit.parse(load.to_bytes()) == load


moments = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31))


@given(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.sampled_from([2, 6, 9]),
       st.binary(min_size=6, max_size=6), moments)
def test_transaction_record_round_trip(serial: int, amount: int, kind: int, terminal: bytes,
                                       moment: dt.datetime) -> None:
    when = datetime_bcd(moment)
    record = TransactionRecord(serial, 0, amount, kind, terminal, when)
    raw = record.to_bytes()
    assert len(raw) == 23 and TransactionRecord.parse(raw) == record
    assert parse_datetime_bcd(when) == moment.replace(microsecond=0)


@given(digits20, st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31)))
def test_public_data_round_trip(number: str, day: dt.date) -> None:
    data = PublicData(card_number=number, start=day, expiry=day)
    raw = data.to_bytes()
    assert len(raw) == 30 and raw[10:20].hex() == number
    assert PublicData.parse(raw) == data


@given(st.binary(max_size=40))
def test_garbage_parses_or_raises_the_typed_error(raw: bytes) -> None:
    for parse in (PurchaseInit.parse, LoadInit.parse, Proof.parse, TransactionRecord.parse,
                  PublicData.parse, parse_datetime_bcd):
        try:
            parse(raw)
        except EpurseDataError as exc:
            assert str(exc)
