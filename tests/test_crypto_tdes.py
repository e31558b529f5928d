"""The "tdes" cryptogram scheme against published vectors (REFERENCE.md and pyemv's own)."""

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given
from hypothesis import strategies as st
from pyemv import tools

from emv.crypto import cryptogram
from emv.crypto.cryptogram import CryptogramScheme, scheme
from emv.crypto.tdes import TDES, TdesInputError

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def kcv(key: bytes) -> str:
    """Key check value, the way pyemv's HSM-checked vectors state keys."""
    return tools.key_check_digits(key, 2).hex().upper()


# pyemv builds its ciphers the deprecated way; emv.crypto.tdes silences that at run time, but
# pytest resets warning filters per test.
pytestmark = pytest.mark.filterwarnings(
    "ignore::cryptography.utils.CryptographyDeprecationWarning"
)


def test_registered_at_import() -> None:
    assert cryptogram._SCHEMES["tdes"] is TDES


def test_found_by_name() -> None:
    # scheme() imports every implementation, the SM4 one included.
    pytest.importorskip("emv.crypto.sm4ac", reason="the SM4 scheme has not landed yet")
    found: CryptogramScheme = scheme("tdes")
    assert found is TDES
    assert found.name == "tdes"


def test_scheme_is_frozen() -> None:
    with pytest.raises(AttributeError):
        TDES.name = "other"  # type: ignore[misc]


# --- card key (Option A) ----------------------------------------------------------------------


def test_card_key_reference_vector() -> None:
    # REFERENCE.md / pyemv kd docstring.
    card_key = TDES.derive_card_key(IMK, "99012345678901234", "45")
    assert card_key.hex().upper() == "67F8292358083E5EA7AB7FDA58D53B6B"


def test_card_key_pyemv_docstring_vector() -> None:
    card_key = TDES.derive_card_key(IMK, "12345678901234567", "01")
    assert card_key.hex().upper() == "73AD54688CEF2934B0979857E3C719F1"


@pytest.mark.parametrize(
    ("pan", "psn", "expected_kcv"),
    [
        ("9901234567890123", "45", "1DA5"),  # pyemv tests/test_ac_hsm.py
        ("12345678901234567", "45", "FF08"),  # pyemv tests/test_kd_hsm.py
    ],
)
def test_card_key_hsm_check_values(pan: str, psn: str, expected_kcv: str) -> None:
    assert kcv(TDES.derive_card_key(IMK, pan, psn)) == expected_kcv


def test_one_digit_psn_is_zero_filled() -> None:
    assert TDES.derive_card_key(IMK, "9901234567890123", "5") == TDES.derive_card_key(
        IMK, "9901234567890123", "05"
    )


# --- session key (common session key, R = ATC || 00 x 6) ---------------------------------------


def test_session_key_reference_vector() -> None:
    # REFERENCE.md: MK 0123..3210, R = 001C000000000000.
    session_key = TDES.derive_session_key(IMK, 0x001C)
    assert session_key.hex().upper() == "E9FB384AF807B940FEDCEA613461B0C4"


def test_session_key_depends_on_atc() -> None:
    card_key = TDES.derive_card_key(IMK, "99012345678901234", "45")
    assert TDES.derive_session_key(card_key, 1) != TDES.derive_session_key(card_key, 2)


# --- AC and ARPC ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("session_key", "data", "arqc"),
    [
        # pyemv ac module docstring.
        (
            "29B33180E567CE38EA4CBC9D753B0E61",
            "0123456789ABCDEF0123456789ABCDEF",
            "FA624250B008B59A",
        ),
        # pyemv generate_ac docstring: 9F02 9F03 9F1A 95 5F2A 9A 9C 9F37 82 9F36.
        (
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB",
            "000000002000" "000000000000" "0124" "0000008000" "0124" "110309" "00" "3804823E"
            "5800" "0001",
            "3B76CF10FECD8789",
        ),
    ],
)
def test_ac_published_vectors(session_key: str, data: str, arqc: str) -> None:
    assert TDES.generate_ac(bytes.fromhex(session_key), bytes.fromhex(data)).hex().upper() == arqc


@pytest.mark.parametrize(
    ("session_key", "arqc", "arc", "arpc"),
    [
        # pyemv ac module docstring.
        ("29B33180E567CE38EA4CBC9D753B0E61", "FA624250B008B59A", "0000", "45D4255EEF10C920"),
        # pyemv generate_arpc_1 docstring.
        ("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB", "1234567890ABCDEF", "0000", "F5E6F44147E2F1B0"),
    ],
)
def test_arpc_published_vectors(session_key: str, arqc: str, arc: str, arpc: str) -> None:
    result = TDES.generate_arpc(bytes.fromhex(session_key), bytes.fromhex(arqc), bytes.fromhex(arc))
    assert result.hex().upper() == arpc


def test_hsm_chain_card_key_to_arpc() -> None:
    """pyemv tests/test_kd_hsm.py::test_derive_common_sk, driven through the scheme.

    That vector's diversifier R = 1234567890123456 is not of the ATC form, so the session key
    comes from pyemv directly; its check value pins it.
    """
    from pyemv import kd

    card_key = TDES.derive_card_key(IMK, "12345678901234567", "45")
    assert kcv(card_key) == "FF08"
    session_key = kd.derive_common_sk(card_key, bytes.fromhex("1234567890123456"))
    assert kcv(session_key) == "DF82"
    arqc = TDES.generate_ac(session_key, bytes.fromhex("0123456789ABCDEF0123456789ABCDEF"))
    assert arqc.hex().upper() == "19C1FBC83EBDC0D5"
    arpc = TDES.generate_arpc(session_key, arqc, bytes.fromhex("0000"))
    assert arpc.hex().upper() == "C3620580668E5B65"


def test_ac_through_atc_session_key() -> None:
    """pyemv tests/test_kd_hsm.py::test_derive_icc_mk_b_sha_pad: R = 001C000000000000.

    Option B equals what the card key is there; the session key step is ours (ATC 0x001C).
    """
    from pyemv import kd

    card_key = kd.derive_icc_mk_b(IMK, "000000000000000005", "23")
    assert kcv(card_key) == "DD73"
    session_key = TDES.derive_session_key(card_key, 0x001C)
    assert kcv(session_key) == "04F8"
    data = bytes.fromhex(
        "00000000400000000000000001248000048000012" "41911050152BF45851800001C06011203A0B800"
    )
    assert TDES.generate_ac(session_key, data).hex().upper() == "8CAD6F2489C640B1"


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: TDES.derive_card_key(IMK[:8], "9901234567890123", "00"), "issuer master key"),
        (lambda: TDES.derive_card_key(IMK, "99012345", "00"), "PAN"),
        (lambda: TDES.derive_card_key(IMK, "9901234567890123", "123"), "sequence number"),
        (lambda: TDES.derive_card_key(IMK, "9901234567890123", "4x"), "sequence number"),
        (lambda: TDES.derive_session_key(IMK + b"\x00", 1), "card key"),
        (lambda: TDES.derive_session_key(IMK, 0x10000), "ATC"),
        (lambda: TDES.derive_session_key(IMK, -1), "ATC"),
        (lambda: TDES.generate_ac(b"", b"data"), "session key"),
        (lambda: TDES.generate_arpc(IMK, bytes(7), b"00"), "ARQC"),
        (lambda: TDES.generate_arpc(IMK, bytes(8), b"000"), "ARC"),
    ],
)
def test_bad_input_is_named(call: object, needle: str) -> None:
    assert callable(call)
    with pytest.raises(TdesInputError, match=needle):
        call()


def test_bad_pan_is_not_echoed() -> None:
    with pytest.raises(TdesInputError) as info:
        TDES.derive_card_key(IMK, "62170000ABCD1234567", "00")
    assert "6217" not in str(info.value)


def _tdes_decrypt_block(key: bytes, block: bytes) -> bytes:
    cipher = Cipher(TripleDES(key + key[:8]), modes.ECB())  # 2-key 3DES as K1 K2 K1
    decryptor = cipher.decryptor()
    return decryptor.update(block) + decryptor.finalize()


@given(
    card_key=st.binary(min_size=16, max_size=16),
    atc=st.integers(0, 0xFFFF),
    data=st.binary(max_size=64),
    arc=st.binary(min_size=2, max_size=2),
)
def test_shapes_and_arpc_method_1(card_key: bytes, atc: int, data: bytes, arc: bytes) -> None:
    """Session keys are odd-parity 3DES keys; an ARPC decrypts to ARQC xor (ARC || 00 x 6)."""
    session_key = TDES.derive_session_key(card_key, atc)
    assert len(session_key) == 16
    assert all(bin(b).count("1") % 2 == 1 for b in session_key)
    arqc = TDES.generate_ac(session_key, data)
    assert len(arqc) == 8
    arpc = TDES.generate_arpc(session_key, arqc, arc)
    expected = bytes(a ^ b for a, b in zip(arqc, arc + bytes(6), strict=True))
    assert _tdes_decrypt_block(session_key, arpc) == expected
