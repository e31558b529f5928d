"""PBOC SM2 certificates, SSAD and SDAD: round trips, layout, every reason, garbage input."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import date

import pytest
from gmssl import sm2 as gmssl_sm2
from hypothesis import given, settings
from hypothesis import strategies as st

from emv.crypto.errors import CertificateError, CryptoInputError
from emv.crypto.sm2 import sm2_public_key, sm2_sign
from emv.crypto.sm2_certs import (
    ICC_CERTIFICATE_SIZE,
    ISSUER_CERTIFICATE_SIZE,
    SSAD_SIZE,
    recover_sm2_icc_key,
    recover_sm2_issuer_key,
    sm2_icc_certificate,
    sm2_issuer_certificate,
    sm2_sign_dynamic_data,
    sm2_sign_static_data,
    sm2_verify_dynamic_data,
    sm2_verify_static_data,
)
from emv.crypto.testkeys_sm2 import (
    SM2_TEST_CA_INDEX,
    SM2_TEST_CA_RID,
    Sm2TestKey,
    sm2_test_ca,
    sm2_test_icc,
    sm2_test_issuer,
)

CA = sm2_test_ca()
ISSUER = sm2_test_issuer()
ICC = sm2_test_icc()
PAN = "6217000010001234567"
ISSUER_ID = bytes.fromhex("621700FF")
EXPIRY = bytes.fromhex("1230")  # December 2030
TODAY = date(2026, 5, 1)
# Static data to be authenticated: AFL records, then the AIP (82) the SDA tag list names.
STATIC = bytes.fromhex("5A0A6217000010001234567F5F24033012315F280201565F3401019F0702FF00") + (
    bytes.fromhex("7C00")
)
# fDDA: ICC dynamic data (length + ICC dynamic number) and 9F37 || 9F02 || 5F2A || 9F69.
DYNAMIC = bytes.fromhex("0412345678")
DDOL = bytes.fromhex("A1B2C3D4" "000000000150" "0156" "01A1B2C3D40000")

ISSUER_CERT = sm2_issuer_certificate(
    CA.private_key, ISSUER.public_key, issuer_id=ISSUER_ID, expiry=EXPIRY, serial=b"\x00\x00\x01"
)
ICC_CERT = sm2_icc_certificate(
    ISSUER.private_key,
    ICC.public_key,
    pan=PAN,
    expiry=EXPIRY,
    serial=b"\x00\x00\x02",
    static_data=STATIC,
)
SSAD = sm2_sign_static_data(ISSUER.private_key, STATIC, dac=b"\xda\xc1")
SDAD = sm2_sign_dynamic_data(ICC.private_key, DYNAMIC, DDOL)


def _recover_issuer(cert: bytes, *, pan: str = PAN, today: date = TODAY) -> bytes:
    return recover_sm2_issuer_key(CA.public_key, cert, pan=pan, today=today)


def _recover_icc(cert: bytes, *, pan: str = PAN, static: bytes = STATIC) -> bytes:
    return recover_sm2_icc_key(ISSUER.public_key, cert, pan=pan, static_data=static, today=TODAY)


def _resign(signer: bytes, body: bytes, *extra: bytes) -> bytes:
    """A certificate whose fields we altered, signed again so only the altered field is wrong."""
    return body + sm2_sign(signer, body + b"".join(extra))


# --- round trips and layout --------------------------------------------------------------------


def test_test_ca_identity() -> None:
    assert SM2_TEST_CA_RID.hex().upper() == "A000000333" and SM2_TEST_CA_INDEX == 0xF2
    assert "private_key" not in repr(CA) and CA.private_key.hex() not in repr(CA)


@pytest.mark.parametrize("key", [CA, ISSUER, ICC], ids=lambda k: k.role)
def test_shipped_key_pairs_belong_together(key: Sm2TestKey) -> None:
    """Checked here, not at every load: the public half is the private key times G."""
    assert sm2_public_key(key.private_key) == key.public_key
    ours = gmssl_sm2.CryptSM2(private_key=key.private_key.hex(), public_key="")
    assert ours._kg(int(key.private_key.hex(), 16), gmssl_sm2.default_ecc_table["g"]) \
        == key.public_key.hex()


def test_full_chain_round_trip() -> None:
    issuer_key = _recover_issuer(ISSUER_CERT)
    assert issuer_key == ISSUER.public_key
    icc_key = recover_sm2_icc_key(issuer_key, ICC_CERT, pan=PAN, static_data=STATIC, today=TODAY)
    assert icc_key == ICC.public_key
    assert sm2_verify_dynamic_data(icc_key, SDAD, DDOL) == DYNAMIC
    assert sm2_verify_static_data(issuer_key, SSAD, STATIC) == b"\xda\xc1"


def test_layouts() -> None:
    assert len(ISSUER_CERT) == ISSUER_CERTIFICATE_SIZE == 142
    assert ISSUER_CERT[:14].hex().upper() == "12621700FF1230000001" + "04000040"
    assert ISSUER_CERT[14:78] == ISSUER.public_key
    assert len(ICC_CERT) == ICC_CERTIFICATE_SIZE == 148
    assert ICC_CERT[:20].hex().upper() == "146217000010001234567F1230000002" + "04000040"
    assert ICC_CERT[20:84] == ICC.public_key
    assert len(SSAD) == SSAD_SIZE and SSAD[:3].hex().upper() == "13DAC1"
    assert SDAD[:2 + len(DYNAMIC)] == b"\x15\x05" + DYNAMIC and len(SDAD) == 2 + 5 + 64


def _gmssl_verifies(public_key: bytes, signed: bytes, signature: bytes) -> bool:
    """gmssl (independent) checks the signature with the default ID inside verify_with_sm3."""
    return bool(
        gmssl_sm2.CryptSM2(private_key="", public_key=public_key.hex()).verify_with_sm3(
            signature.hex(), signed
        )
    )


def test_signatures_verify_in_gmssl_over_the_stated_data() -> None:
    assert _gmssl_verifies(CA.public_key, ISSUER_CERT[:78], ISSUER_CERT[78:])
    assert _gmssl_verifies(ISSUER.public_key, ICC_CERT[:84] + STATIC, ICC_CERT[84:])
    assert _gmssl_verifies(ISSUER.public_key, SSAD[:3] + STATIC, SSAD[3:])
    assert _gmssl_verifies(ICC.public_key, SDAD[:7] + DDOL, SDAD[7:])


def test_sdad_with_empty_dynamic_data() -> None:
    sdad = sm2_sign_dynamic_data(ICC.private_key, b"", DDOL)
    assert sm2_verify_dynamic_data(ICC.public_key, sdad, DDOL) == b""


# --- every reason --------------------------------------------------------------------------------


def _reason(call: Callable[[], object]) -> str:
    with pytest.raises(CertificateError) as info:
        call()
    assert PAN not in str(info.value) and PAN[:12] not in str(info.value)
    return info.value.reason


def _swap(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


def test_issuer_certificate_reasons() -> None:
    ca = CA.private_key
    body = ISSUER_CERT[:78]
    assert _reason(lambda: _recover_issuer(ISSUER_CERT[:-1])) == "wrong-length"
    assert _reason(lambda: _recover_issuer(_swap(ISSUER_CERT, 0, b"\x02"))) == "bad-format"
    assert _reason(lambda: _recover_issuer(_swap(ISSUER_CERT, 10, b"\x01"))) == "bad-algorithm"
    assert _reason(lambda: _recover_issuer(_swap(ISSUER_CERT, 12, b"\x01"))) == "bad-algorithm"
    assert _reason(lambda: _recover_issuer(_swap(ISSUER_CERT, 13, b"\x41"))) == "wrong-length"
    assert _reason(lambda: _recover_issuer(_swap(ISSUER_CERT, 20, b"\x00"))) == "bad-signature"
    assert _reason(lambda: _recover_issuer(_swap(ISSUER_CERT, 100, b"\x00"))) == "bad-signature"
    assert _reason(lambda: _recover_issuer(ISSUER_CERT, pan="6228480012345678")) == "pan-mismatch"
    assert _reason(lambda: _recover_issuer(ISSUER_CERT, pan="12345")) == "pan-mismatch"
    bad_id = _resign(ca, _swap(body, 1, bytes.fromhex("62A700FF")))
    assert _reason(lambda: _recover_issuer(bad_id)) == "pan-mismatch"
    bad_date = _resign(ca, _swap(body, 5, bytes.fromhex("1330")))
    assert _reason(lambda: _recover_issuer(bad_date)) == "bad-date"
    assert _reason(lambda: _recover_issuer(ISSUER_CERT, today=date(2031, 1, 1))) == "expired"
    off_curve = _resign(ca, _swap(body, 14, bytes(64)))
    assert _reason(lambda: _recover_issuer(off_curve)) == "bad-key"


def test_expiry_is_the_last_day_of_its_month() -> None:
    assert _recover_issuer(ISSUER_CERT, today=date(2030, 12, 31)) == ISSUER.public_key
    century = _resign(CA.private_key, _swap(ISSUER_CERT[:78], 5, bytes.fromhex("1299")))
    assert _reason(lambda: _recover_issuer(century)) == "expired"  # YY >= 50 is 19YY


def test_issuer_id_may_be_three_to_eight_digits() -> None:
    for issuer_id in ("621FFFFF", "62170000"):
        cert = sm2_issuer_certificate(
            CA.private_key,
            ISSUER.public_key,
            issuer_id=bytes.fromhex(issuer_id),
            expiry=EXPIRY,
            serial=b"\x00\x00\x03",
        )
        assert _recover_issuer(cert) == ISSUER.public_key


def test_icc_certificate_reasons() -> None:
    issuer = ISSUER.private_key
    body = ICC_CERT[:84]
    assert _reason(lambda: _recover_icc(ICC_CERT + b"\x00")) == "wrong-length"
    assert _reason(lambda: _recover_icc(_swap(ICC_CERT, 0, b"\x04"))) == "bad-format"
    assert _reason(lambda: _recover_icc(_swap(ICC_CERT, 16, b"\x00"))) == "bad-algorithm"
    assert _reason(lambda: _recover_icc(_swap(ICC_CERT, 19, b"\x20"))) == "wrong-length"
    assert _reason(lambda: _recover_icc(ICC_CERT, static=STATIC + b"\x00")) == "bad-signature"
    assert _reason(lambda: _recover_icc(ICC_CERT, pan="6217000010001234568")) == "pan-mismatch"
    other_pan = _resign(issuer, _swap(body, 1, bytes.fromhex("6217000010001234568F")), STATIC)
    assert _reason(lambda: _recover_icc(other_pan)) == "pan-mismatch"
    expired = _resign(issuer, _swap(body, 11, bytes.fromhex("0426")), STATIC)
    assert _reason(lambda: _recover_icc(expired)) == "expired"
    off_curve = _resign(issuer, _swap(body, 20, b"\x01" * 64), STATIC)
    assert _reason(lambda: _recover_icc(off_curve)) == "bad-key"


def test_static_and_dynamic_data_reasons() -> None:
    issuer, icc = ISSUER.public_key, ICC.public_key
    assert _reason(lambda: sm2_verify_static_data(issuer, SSAD[:-1], STATIC)) == "wrong-length"
    assert _reason(lambda: sm2_verify_static_data(issuer, b"\x93" + SSAD[1:], STATIC)) == (
        "bad-format"
    )
    assert _reason(lambda: sm2_verify_static_data(issuer, SSAD, STATIC[:-1])) == "bad-signature"
    assert _reason(lambda: sm2_verify_static_data(icc, SSAD, STATIC)) == "bad-signature"
    assert _reason(lambda: sm2_verify_dynamic_data(icc, SDAD[:65], DDOL)) == "wrong-length"
    assert _reason(lambda: sm2_verify_dynamic_data(icc, _swap(SDAD, 1, b"\x06"), DDOL)) == (
        "wrong-length"
    )
    assert _reason(lambda: sm2_verify_dynamic_data(icc, _swap(SDAD, 0, b"\x05"), DDOL)) == (
        "bad-format"
    )
    changed_amount = DDOL[:4] + bytes.fromhex("000000000151") + DDOL[10:]
    assert _reason(lambda: sm2_verify_dynamic_data(icc, SDAD, changed_amount)) == "bad-signature"
    assert _reason(lambda: sm2_verify_dynamic_data(icc, _swap(SDAD, 3, b"\x00"), DDOL)) == (
        "bad-signature"
    )


# --- the signing side and configuration errors ------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: sm2_issuer_certificate(
                CA.private_key, ISSUER.public_key, issuer_id=b"\x62", expiry=EXPIRY, serial=b"123"
            ),
            "issuer identifier",
        ),
        (
            lambda: sm2_issuer_certificate(
                CA.private_key, ISSUER.public_key, issuer_id=ISSUER_ID, expiry=b"\x13\x30",
                serial=b"123",
            ),
            "expiry",
        ),
        (
            lambda: sm2_issuer_certificate(
                CA.private_key, ISSUER.public_key, issuer_id=ISSUER_ID, expiry=EXPIRY, serial=b"1"
            ),
            "serial",
        ),
        (
            lambda: sm2_issuer_certificate(
                CA.private_key, bytes(64), issuer_id=ISSUER_ID, expiry=EXPIRY, serial=b"123"
            ),
            "curve",
        ),
        (
            lambda: sm2_icc_certificate(
                ISSUER.private_key, ICC.public_key, pan="12AB", expiry=EXPIRY, serial=b"123",
                static_data=b"",
            ),
            "PAN",
        ),
        (lambda: sm2_sign_static_data(ISSUER.private_key, STATIC, dac=b"\x01"), "2 bytes"),
        (lambda: sm2_sign_dynamic_data(ICC.private_key, bytes(256), DDOL), "255"),
        (lambda: recover_sm2_issuer_key(b"\x04", ISSUER_CERT, pan=PAN, today=TODAY), "64 or 65"),
    ],
)
def test_bad_arguments_raise_crypto_input_error(
    call: Callable[[], object], message: str
) -> None:
    with pytest.raises(CryptoInputError, match=message):
        call()


# --- garbage never raises anything but CertificateError ----------------------------------------


def _only_certificate_error(call: Callable[[], object]) -> None:
    with contextlib.suppress(CertificateError):
        call()


def _fixed(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


# Random bytes fail early; also aim at the deeper checks: right sizes, right format bytes, and
# genuine headers followed by random keys and signatures.
garbage = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([67, 70, 142, 148]).flatmap(_fixed),
    st.tuples(st.sampled_from([0x12, 0x13, 0x14, 0x15]), st.binary(max_size=160)).map(
        lambda t: bytes([t[0]]) + t[1]
    ),
    _fixed(128).map(lambda tail: ISSUER_CERT[:14] + tail),
    _fixed(128).map(lambda tail: ICC_CERT[:20] + tail),
    st.binary(max_size=70).map(lambda tail: b"\x15" + bytes([max(0, len(tail) - 64)]) + tail),
)


@settings(max_examples=200, deadline=None)
@given(garbage, st.dates())
def test_garbage_into_every_verifier(garbage: bytes, today: date) -> None:
    _only_certificate_error(
        lambda: recover_sm2_issuer_key(CA.public_key, garbage, pan=PAN, today=today)
    )
    _only_certificate_error(
        lambda: recover_sm2_icc_key(
            ISSUER.public_key, garbage, pan=PAN, static_data=garbage, today=today
        )
    )
    _only_certificate_error(lambda: sm2_verify_static_data(ISSUER.public_key, garbage, STATIC))
    _only_certificate_error(lambda: sm2_verify_dynamic_data(ICC.public_key, garbage, DDOL))


@st.composite
def _mutated(draw: st.DrawFn, original: bytes) -> bytes:
    at = draw(st.integers(min_value=0, max_value=len(original) - 1))
    flip = draw(st.integers(min_value=1, max_value=255))
    return original[:at] + bytes([original[at] ^ flip]) + original[at + 1 :]


@settings(max_examples=60, deadline=None)
@given(
    _mutated(ISSUER_CERT),
    _mutated(ICC_CERT),
    _mutated(SSAD),
    _mutated(SDAD),
    st.sampled_from([PAN, "6217000099998888", "0000", ""]),
)
def test_any_single_byte_change_is_a_certificate_error(
    issuer_cert: bytes, icc_cert: bytes, ssad: bytes, sdad: bytes, pan: str
) -> None:
    with pytest.raises(CertificateError):
        recover_sm2_issuer_key(CA.public_key, issuer_cert, pan=pan, today=TODAY)
    with pytest.raises(CertificateError):
        recover_sm2_icc_key(ISSUER.public_key, icc_cert, pan=pan, static_data=STATIC, today=TODAY)
    with pytest.raises(CertificateError):
        sm2_verify_static_data(ISSUER.public_key, ssad, STATIC)
    with pytest.raises(CertificateError):
        sm2_verify_dynamic_data(ICC.public_key, sdad, DDOL)
