"""The "sm4" cryptogram scheme, step by step against gmssl's independent SM4.

Each intermediate block is written out by hand from the layout in emv/crypto/sm4ac.py; gmssl
(pure Python, its own SM4) does the encryption, so a fault in our wrapper or in the layout
code shows as a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gmssl import sm4 as gmssl_sm4
from hypothesis import given, settings
from hypothesis import strategies as st

from emv.crypto.cryptogram import CryptogramScheme, scheme
from emv.crypto.errors import CryptoInputError
from emv.crypto.sm4ac import SM4, Sm4Scheme, card_key_input, session_key_input

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
PAN = "6217000010001234567"
PSN = "01"
_NO_PADDING = 2  # gmssl pads (PKCS#7 or zero) only for its modes 0 and 1


def gm_ecb(key: bytes, block: bytes) -> bytes:
    cipher = gmssl_sm4.CryptSM4(padding_mode=_NO_PADDING)
    cipher.set_key(key, gmssl_sm4.SM4_ENCRYPT)
    out = cipher.crypt_ecb(block)
    assert len(out) == len(block)
    return bytes(out)


def gm_cbc_mac(key: bytes, padded: bytes) -> bytes:
    chain = bytes(16)
    for i in range(0, len(padded), 16):
        chain = gm_ecb(key, bytes(a ^ b for a, b in zip(chain, padded[i : i + 16], strict=True)))
    return chain


def test_card_key_input_by_hand() -> None:
    # PAN||PSN = 621700001000123456701 (21 digits) -> rightmost 16 = 0001000123456701.
    assert card_key_input(PAN, PSN).hex().upper() == "0001000123456701FFFEFFFEDCBA98FE"
    # Short PAN: 12 + 2 digits, left-padded with 00 to 16; one-digit PSN padded to 2.
    assert card_key_input("621700123456", "5").hex().upper() == (
        "0062170012345605FF9DE8FFEDCBA9FA"
    )


def test_card_key_is_sm4_of_that_block() -> None:
    block = bytes.fromhex("0001000123456701FFFEFFFEDCBA98FE")
    card_key = SM4.derive_card_key(IMK, PAN, PSN)
    assert card_key == gm_ecb(IMK, block)
    assert len(card_key) == 16


def test_session_key_block_and_key_by_hand() -> None:
    assert session_key_input(0x001C).hex().upper() == "000000000000001C000000000000FFE3"
    card_key = SM4.derive_card_key(IMK, PAN, PSN)
    expected = gm_ecb(card_key, bytes.fromhex("000000000000001C000000000000FFE3"))
    assert SM4.derive_session_key(card_key, 0x001C) == expected
    assert SM4.derive_session_key(card_key, 0x001D) != expected


def test_ac_is_left_half_of_cbc_mac_with_method_2_padding() -> None:
    session_key = SM4.derive_session_key(SM4.derive_card_key(IMK, PAN, PSN), 0x001C)
    # A qPBOC-like PDOL/CDOL payload: amount, other amount, country, TVR, currency, date, type, UN.
    data = bytes.fromhex("000000000150" "000000000000" "0156" "0000000000" "0156" "260501" "00")
    data += bytes.fromhex("A1B2C3D4")
    assert len(data) == 29
    padded = data + b"\x80" + bytes(2)  # 29 + 1 + 2 = 32 bytes, two blocks
    assert SM4.generate_ac(session_key, data) == gm_cbc_mac(session_key, padded)[:8]
    # Whole-block data still gets a full padding block.
    sixteen = bytes(range(16))
    assert SM4.generate_ac(session_key, sixteen) == gm_cbc_mac(
        session_key, sixteen + b"\x80" + bytes(15)
    )[:8]


def test_arpc_by_hand() -> None:
    session_key = SM4.derive_session_key(SM4.derive_card_key(IMK, PAN, PSN), 7)
    arqc = bytes.fromhex("1122334455667788")
    arc = b"00"  # ASCII "00" = 3030: approved
    block = bytes.fromhex("2112334455667788" + "00" * 8)
    assert SM4.generate_arpc(session_key, arqc, arc) == gm_ecb(session_key, block)[:8]


@settings(max_examples=25, deadline=None)
@given(
    st.binary(min_size=16, max_size=16),
    st.integers(min_value=0, max_value=0xFFFF),
    st.binary(max_size=80),
)
def test_scheme_matches_gmssl_on_random_inputs(imk: bytes, atc: int, data: bytes) -> None:
    card_key = SM4.derive_card_key(imk, PAN, PSN)
    session_key = SM4.derive_session_key(card_key, atc)
    block = atc.to_bytes(2, "big")
    complement = (atc ^ 0xFFFF).to_bytes(2, "big")
    assert session_key == gm_ecb(card_key, bytes(6) + block + bytes(6) + complement)
    padded = data + b"\x80" + bytes(-(len(data) + 1) % 16)
    ac = SM4.generate_ac(session_key, data)
    assert ac == gm_cbc_mac(session_key, padded)[:8]
    arpc = SM4.generate_arpc(session_key, ac, b"\x30\x30")
    assert len(arpc) == 8 and arpc != ac


def test_registered_under_its_name_and_frozen() -> None:
    holder: CryptogramScheme = SM4  # satisfies the protocol (mypy checks this line)
    assert holder.name == "sm4" and isinstance(SM4, Sm4Scheme)
    with pytest.raises(AttributeError):
        SM4.name = "other"  # type: ignore[misc]
    try:
        found = scheme("sm4")
    except ModuleNotFoundError as exc:  # the 3DES scheme lands from a parallel branch
        pytest.skip(f"{exc.name} not on this branch yet")
    assert found is SM4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: SM4.derive_card_key(IMK[:8], PAN, PSN), "issuer master key must be 16"),
        (lambda: SM4.derive_card_key(IMK, "12345", PSN), "PAN"),
        (lambda: SM4.derive_card_key(IMK, PAN, "123"), "sequence number"),
        (lambda: SM4.derive_card_key(IMK, PAN, "a"), "sequence number"),
        (lambda: SM4.derive_session_key(IMK, -1), "ATC"),
        (lambda: SM4.derive_session_key(IMK, 0x10000), "ATC"),
        (lambda: SM4.derive_session_key(b"", 1), "card key"),
        (lambda: SM4.generate_ac(IMK + b"\x00", b"x"), "session key"),
        (lambda: SM4.generate_arpc(IMK, bytes(7), b"00"), "ARQC"),
        (lambda: SM4.generate_arpc(IMK, bytes(8), b"000"), "ARC"),
    ],
)
def test_bad_inputs_raise_typed_errors_naming_the_argument(
    call: Callable[[], object], message: str
) -> None:
    with pytest.raises(CryptoInputError, match=message) as info:
        call()
    assert PAN not in str(info.value)
