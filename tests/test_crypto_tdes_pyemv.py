"""emv.crypto.tdes hands pyemv its 3DES cipher without the per-call deprecation warnings.

The vectors in test_crypto_tdes.py run with those warnings ignored; these run with every
warning an error, so a warning raised inside a cryptogram computation fails the test.
"""

import warnings

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from pyemv import ac, kd, mac, tools

from emv.crypto.tdes import TDES

IMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def test_the_whole_chain_raises_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        card_key = TDES.derive_card_key(IMK, "99012345678901234", "45")
        session_key = TDES.derive_session_key(card_key, 0x1C)
        arqc = TDES.generate_ac(session_key, bytes(range(29)))
        arpc = TDES.generate_arpc(session_key, arqc, b"00")
    assert card_key.hex().upper() == "67F8292358083E5EA7AB7FDA58D53B6B"
    assert len(arqc) == len(arpc) == 8


@settings(deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=64))
def test_pyemv_ciphers_are_the_two_key_3des_they_were(key: bytes, data: bytes) -> None:
    """Two-key 3DES is K1 K2 K1: what pyemv computes now equals that cipher, built apart."""
    data = data[: len(data) // 8 * 8]
    reference = Cipher(TripleDES(key + key[:8]), modes.ECB()).encryptor()
    assert tools.encrypt_tdes_ecb(key, data) == reference.update(data) + reference.finalize()


@settings(deadline=None)
@given(st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8),
       st.binary(max_size=40))
def test_mac_algorithm_3_with_single_des_keys(k1: bytes, k2: bytes, data: bytes) -> None:
    """pyemv's MAC uses 8-byte (single DES) keys: K K K, worked out by hand here."""
    padded = data + b"\x80" + bytes((7 - len(data)) % 8)
    chain = Cipher(TripleDES(k1 * 3), modes.CBC(bytes(8))).encryptor()
    last = (chain.update(padded) + chain.finalize())[-8:]
    dec = Cipher(TripleDES(k2 * 3), modes.ECB()).decryptor()
    enc = Cipher(TripleDES(k1 * 3), modes.ECB()).encryptor()
    expected = enc.update(dec.update(last) + dec.finalize()) + enc.finalize()
    assert mac.mac_iso9797_3(k1, k2, data, 2) == expected


def test_a_bad_key_length_is_still_refused() -> None:
    with pytest.raises(ValueError, match="key size"):
        tools.encrypt_tdes_ecb(bytes(12), bytes(8))


# The per-transaction steps are written straight onto cryptography's 3DES (emv.crypto.tdes's
# docstring says why); pyemv, computing them its own way, is the reference they must equal.


@settings(deadline=None, max_examples=300)
@given(st.binary(min_size=16, max_size=16), st.integers(0, 0xFFFF))
def test_session_key_equals_pyemvs(card_key: bytes, atc: int) -> None:
    expected = kd.derive_common_sk(card_key, atc.to_bytes(2, "big") + bytes(6))
    assert TDES.derive_session_key(card_key, atc) == expected


@settings(deadline=None, max_examples=300)
@given(st.binary(min_size=16, max_size=16), st.binary(max_size=80))
def test_ac_equals_pyemvs(session_key: bytes, data: bytes) -> None:
    """Every data length: empty (one padding block), whole blocks (a full padding block
    added), and the lengths between."""
    expected = ac.generate_ac(session_key, data, ac.PaddingType.EMV)
    assert TDES.generate_ac(session_key, data) == expected


@settings(deadline=None, max_examples=300)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8),
       st.binary(min_size=2, max_size=2))
def test_arpc_equals_pyemvs(session_key: bytes, arqc: bytes, arc: bytes) -> None:
    assert TDES.generate_arpc(session_key, arqc, arc) == ac.generate_arpc_1(session_key, arqc, arc)


def test_session_key_has_odd_parity_in_every_byte() -> None:
    key = TDES.derive_session_key(bytes(range(16)), 0x1C)
    assert all(bin(b).count("1") % 2 == 1 for b in key)
