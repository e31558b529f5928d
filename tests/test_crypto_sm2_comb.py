"""The fixed-base comb path of SM2 verification equals the generic one (speed twins)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from emv.crypto import sm2
from emv.crypto.sm2 import (
    N,
    sm2_generate_keypair,
    sm2_precompute,
    sm2_public_key,
    sm2_sign,
    sm2_verify,
)

# GM/T 0003.5 annex example key (REFERENCE.md): the public key of this private key is known.
ANNEX_D = bytes.fromhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8")
ANNEX_X = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
ANNEX_Y = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
PRIVATE, PUBLIC = sm2_generate_keypair()
sm2_precompute(PUBLIC)
COMB = sm2._KEY_COMBS[PUBLIC]


def test_base_mul_over_gs_comb_gives_the_annex_public_key() -> None:
    assert sm2_public_key(ANNEX_D).hex().upper() == ANNEX_X + ANNEX_Y


@settings(max_examples=60, deadline=None)
@given(st.integers(1, N - 1), st.integers(1, N - 1))
def test_comb_equals_interleaved_wnaf(s: int, t: int) -> None:
    zero = (sm2._ZERO, sm2._ONE, sm2._ZERO)
    combed = sm2._to_affine(*sm2._comb_mul(t, COMB, sm2._comb_mul(s, sm2._g_comb(), zero)))
    assert combed == sm2._mul_add(s, t, sm2._key_table(PUBLIC))


@settings(max_examples=20, deadline=None)
@given(st.binary(max_size=80))
def test_precomputed_and_plain_keys_agree_on_every_signature(message: bytes) -> None:
    other_private, other_public = sm2_generate_keypair()
    signature = sm2_sign(PRIVATE, message)
    assert sm2_verify(PUBLIC, message, signature)  # comb path
    assert not sm2_verify(PUBLIC, message + b"x", signature)
    assert not sm2_verify(PUBLIC, message, signature[:-1] + bytes((signature[-1] ^ 1,)))
    assert sm2_verify(other_public, message, sm2_sign(other_private, message))  # generic path
    assert not sm2_verify(other_public, message, signature)


def test_only_the_last_keys_keep_a_comb() -> None:
    keys = [sm2_generate_keypair()[1] for _ in range(sm2._COMB_KEYS + 1)]
    for key in keys:
        sm2_precompute(key)
    assert keys[0] not in sm2._KEY_COMBS and keys[-1] in sm2._KEY_COMBS
    assert len(sm2._KEY_COMBS) == sm2._COMB_KEYS


# --- the OpenSSL path (keys met once) against this module's own arithmetic --------------------

import pytest  # noqa: E402

from emv.crypto import sm2_openssl  # noqa: E402

needs_openssl = pytest.mark.skipif(not sm2_openssl.available(),
                                   reason="no libcrypto with SM2 on this machine")
ANNEX_R = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
ANNEX_S = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"


@needs_openssl
def test_openssl_verifies_the_annex_signature() -> None:
    key = bytes.fromhex(ANNEX_X + ANNEX_Y)
    sig = bytes.fromhex(ANNEX_R + ANNEX_S)
    assert sm2_openssl.verify(key, b"message digest", sig, b"1234567812345678") is True
    assert sm2_openssl.verify(key, b"message digest!", sig, b"1234567812345678") is False
    assert sm2_openssl.verify(key, b"message digest", sig, b"1234567812345679") is False


@needs_openssl
@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 63), st.booleans())
def test_openssl_and_python_agree(message: bytes, flip: int, tamper: bool) -> None:
    private, public = sm2_generate_keypair()
    sig = bytearray(sm2_sign(private, message))
    if tamper:
        sig[flip] ^= 0x01
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (1 <= r < N and 1 <= s < N and (r + s) % N):
        return
    python = sm2._verify_python(public, message, r, s, (r + s) % N, sm2.DEFAULT_USER_ID)
    assert sm2_openssl.verify(public, message, bytes(sig), sm2.DEFAULT_USER_ID) is python
    assert python is (not tamper)


def test_der_signature_encoding() -> None:
    small = bytes(31) + b"\x01" + b"\x80" + bytes(31)
    assert sm2_openssl._der_signature(small) == bytes.fromhex(
        "3026" "020101" "022100" "80" + "00" * 31)
