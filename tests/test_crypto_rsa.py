"""EMV Book 2 RSA chain: round trips, every CertificateError reason, and hostile input."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from emv.crypto import testkeys
from emv.crypto.errors import CertificateError, Reason
from emv.crypto.rsa_certs import (
    CaKeyTable,
    IccCertificate,
    IssuerCertificate,
    RsaInputError,
    RsaPrivateKey,
    RsaPublicKey,
    generate_rsa_key,
    icc_certificate,
    issuer_certificate,
    issuer_id_from_pan,
    recover_icc_key,
    recover_issuer_key,
    sign_dynamic_data,
    verify_dynamic_data,
)

PAN = "6217000010001234567"
OTHER_PAN = "6217000010001234575"  # same issuer prefix, other card
TODAY = date(2026, 11, 23)
EXPIRY = bytes.fromhex("1230")  # December 2030
SERIAL = bytes.fromhex("000001")
STATIC = bytes.fromhex("5A0A6217000010001234567F5F24033012315F25032011017C00")
# fDDA DDOL data: 9F37 unpredictable number, 9F02 amount, 5F2A currency, 9F69 card auth data.
DDOL = bytes.fromhex("1A2B3C4D" "000000000200" "0156" "01AABBCCDD00008000")
DYNAMIC = bytes.fromhex("02" "1234")  # ICC dynamic number length + value

CA = testkeys.ca_key()
ISSUER = testkeys.issuer_key()
ICC = testkeys.icc_key()


@pytest.fixture(scope="module")
def issuer_cert() -> IssuerCertificate:
    return issuer_certificate(
        CA, ISSUER.public, issuer_id=issuer_id_from_pan(PAN), expiry=EXPIRY, serial=SERIAL
    )


@pytest.fixture(scope="module")
def icc_cert() -> IccCertificate:
    return icc_certificate(
        ISSUER, ICC.public, pan=PAN, expiry=EXPIRY, serial=SERIAL, static_data=STATIC
    )


@pytest.fixture(scope="module")
def big_key() -> RsaPrivateKey:
    """RSA-1408: as CA it certifies a 1024-bit issuer key with no remainder (128 <= 176-36)."""
    return generate_rsa_key(1408)


def recover_issuer(cert: IssuerCertificate, *, pan: str = PAN, today: date = TODAY) -> RsaPublicKey:
    return recover_issuer_key(
        CA.public, cert.certificate, cert.remainder, cert.exponent, pan=pan, today=today
    )


def recover_icc(
    cert: IccCertificate, *, pan: str = PAN, static: bytes = STATIC, today: date = TODAY
) -> RsaPublicKey:
    return recover_icc_key(
        ISSUER.public,
        cert.certificate,
        cert.remainder,
        cert.exponent,
        pan=pan,
        static_data=static,
        today=today,
    )


# --- round trips -------------------------------------------------------------------------------


def test_test_keys_nest_as_book_2_requires() -> None:
    assert CA.public.size * 8 == 1152
    assert ICC.public.size <= ISSUER.public.size <= CA.public.size
    assert ICC.public.size * 8 == 1024
    assert testkeys.ca_table().lookup(testkeys.TEST_CA_RID, testkeys.TEST_CA_INDEX) == CA.public


def test_issuer_round_trip(issuer_cert: IssuerCertificate) -> None:
    assert len(issuer_cert.certificate) == CA.public.size
    assert len(issuer_cert.remainder) == ISSUER.public.size - (CA.public.size - 36)
    assert issuer_cert.exponent == b"\x03"
    assert recover_issuer(issuer_cert) == ISSUER.public


def test_icc_round_trip(icc_cert: IccCertificate) -> None:
    assert len(icc_cert.certificate) == ISSUER.public.size
    assert len(icc_cert.remainder) == ICC.public.size - (ISSUER.public.size - 42)
    assert recover_icc(icc_cert) == ICC.public


def test_pan_may_come_as_bcd_from_tag_5a(
    issuer_cert: IssuerCertificate, icc_cert: IccCertificate
) -> None:
    bcd = bytes.fromhex(PAN + "F")
    assert recover_issuer_key(
        CA.public, issuer_cert.certificate, issuer_cert.remainder, b"\x03", pan=bcd, today=TODAY
    ) == ISSUER.public
    assert recover_icc_key(
        ISSUER.public,
        icc_cert.certificate,
        icc_cert.remainder,
        b"\x03",
        pan=bcd,
        static_data=STATIC,
        today=TODAY,
    ) == ICC.public


def test_sdad_round_trip() -> None:
    sdad = sign_dynamic_data(ICC, DYNAMIC, DDOL)
    assert len(sdad) == ICC.public.size
    assert verify_dynamic_data(ICC.public, sdad, DDOL) == DYNAMIC


def test_whole_chain_from_the_ca_table(
    issuer_cert: IssuerCertificate, icc_cert: IccCertificate
) -> None:
    """What the kernel does in fDDA: CA table -> 90 -> 9F46 -> 9F4B."""
    ca_public = testkeys.ca_table().lookup(bytes.fromhex("A000000333010101")[:5], 0xF1)
    issuer_public = recover_issuer_key(
        ca_public,
        issuer_cert.certificate,
        issuer_cert.remainder,
        issuer_cert.exponent,
        pan=PAN,
        today=TODAY,
    )
    icc_public = recover_icc_key(
        issuer_public,
        icc_cert.certificate,
        icc_cert.remainder,
        icc_cert.exponent,
        pan=PAN,
        static_data=STATIC,
        today=TODAY,
    )
    sdad = sign_dynamic_data(ICC, DYNAMIC, DDOL)
    assert verify_dynamic_data(icc_public, sdad, DDOL) == DYNAMIC


def test_keys_that_fit_have_no_remainder(big_key: RsaPrivateKey) -> None:
    cert = issuer_certificate(
        big_key, ISSUER.public, issuer_id=bytes.fromhex("621700FF"), expiry=EXPIRY, serial=SERIAL
    )
    assert cert.remainder == b""
    recovered = recover_issuer_key(
        big_key.public, cert.certificate, b"", cert.exponent, pan=PAN, today=TODAY
    )
    assert recovered == ISSUER.public
    icc = icc_certificate(
        big_key, ICC.public, pan=PAN, expiry=EXPIRY, serial=SERIAL, static_data=STATIC
    )
    assert icc.remainder == b""
    assert recover_icc_key(
        big_key.public, icc.certificate, b"", icc.exponent, pan=PAN, static_data=STATIC, today=TODAY
    ) == ICC.public


def test_exponent_65537_round_trip() -> None:
    icc = generate_rsa_key(1024, exponent=65537)
    assert icc.public.exponent == bytes.fromhex("010001")
    cert = icc_certificate(
        ISSUER, icc.public, pan=PAN, expiry=EXPIRY, serial=SERIAL, static_data=STATIC
    )
    assert cert.exponent == bytes.fromhex("010001")
    icc_public = recover_icc(cert)
    assert icc_public == icc.public
    assert verify_dynamic_data(icc_public, sign_dynamic_data(icc, DYNAMIC, DDOL), DDOL) == DYNAMIC


def test_expiry_is_valid_through_the_last_day_of_its_month(issuer_cert: IssuerCertificate) -> None:
    assert recover_issuer(issuer_cert, today=date(2030, 12, 31)) == ISSUER.public
    with pytest.raises(CertificateError) as info:
        recover_issuer(issuer_cert, today=date(2031, 1, 1))
    assert info.value.reason == "expired"


@settings(max_examples=40, deadline=None)
@given(
    dynamic=st.binary(max_size=ICC.public.size - 25),
    ddol=st.binary(max_size=64),
)
def test_sdad_round_trips_any_data(dynamic: bytes, ddol: bytes) -> None:
    assert verify_dynamic_data(ICC.public, sign_dynamic_data(ICC, dynamic, ddol), ddol) == dynamic


@settings(max_examples=25, deadline=None)
@given(
    digits=st.integers(3, 8),
    month=st.integers(1, 12),
    year=st.integers(27, 49),
    serial=st.binary(min_size=3, max_size=3),
    static=st.binary(max_size=200),
)
def test_certificates_round_trip_any_fields(
    digits: int, month: int, year: int, serial: bytes, static: bytes
) -> None:
    expiry = bytes.fromhex(f"{month:02d}{year:02d}")
    issuer_id = issuer_id_from_pan(PAN, digits)
    assert issuer_id.hex().upper().rstrip("F") == PAN[:digits]
    cert = issuer_certificate(CA, ISSUER.public, issuer_id=issuer_id, expiry=expiry, serial=serial)
    assert recover_issuer(cert) == ISSUER.public
    icc = icc_certificate(
        ISSUER, ICC.public, pan=PAN, expiry=expiry, serial=serial, static_data=static
    )
    assert recover_icc(icc, static=static) == ICC.public


# --- every CertificateError reason ---------------------------------------------------------------


def forge(
    key: RsaPrivateKey,
    body: bytes,
    *hashed: bytes,
    header: int = 0x6A,
    trailer: int = 0xBC,
    digest: bytes | None = None,
) -> bytes:
    """Sign any block: lets a test reach each check past the ones before it."""
    if digest is None:
        digest = hashlib.sha1(body + b"".join(hashed)).digest()
    return key.raw_private(bytes([header]) + body + digest + bytes([trailer]))


def issuer_body(
    *,
    fmt: int = 0x02,
    issuer_id: bytes = bytes.fromhex("621700FF"),
    expiry: bytes = EXPIRY,
    algos: bytes = b"\x01\x01",
    key_len: int | None = None,
    exponent: bytes = b"\x03",
    modulus: bytes | None = None,
) -> tuple[bytes, bytes]:
    """(body, remainder) of an issuer certificate for ISSUER under CA, any field overridden."""
    modulus = ISSUER.public.modulus if modulus is None else modulus
    room = CA.public.size - 36
    inside = modulus[:room].ljust(room, b"\xbb")
    length = len(modulus) if key_len is None else key_len
    body = (
        bytes([fmt]) + issuer_id + expiry + SERIAL + algos + bytes([length, len(exponent)]) + inside
    )
    return body, modulus[room:]


def forged_issuer(**fields: object) -> IssuerCertificate:
    exponent = fields.get("exponent", b"\x03")
    assert isinstance(exponent, bytes)
    body, remainder = issuer_body(**fields)  # type: ignore[arg-type]
    return IssuerCertificate(forge(CA, body, remainder, exponent), remainder, exponent)


def icc_body(*, pan: str = PAN, algos: bytes = b"\x01\x01", expiry: bytes = EXPIRY) -> bytes:
    room = ISSUER.public.size - 42
    pan_field = bytes.fromhex(pan.ljust(20, "F"))
    sizes = bytes([ICC.public.size, 1])
    return b"\x04" + pan_field + expiry + SERIAL + algos + sizes + ICC.public.modulus[:room]


def forged_icc(**fields: str | bytes) -> IccCertificate:
    remainder = ICC.public.modulus[ISSUER.public.size - 42 :]
    body = icc_body(**fields)  # type: ignore[arg-type]
    cert = forge(ISSUER, body, remainder, b"\x03", STATIC)
    return IccCertificate(cert, remainder, b"\x03")


def sdad_body(*, fmt: int = 0x05, algo: int = 0x01, l_dd: int | None = None) -> bytes:
    room = ICC.public.size - 25
    length = len(DYNAMIC) if l_dd is None else l_dd
    return bytes([fmt, algo, length]) + DYNAMIC + b"\xbb" * (room - len(DYNAMIC))


def reason_of(call: Callable[[], object]) -> str:
    with pytest.raises(CertificateError) as info:
        call()
    message = str(info.value)
    assert PAN not in message and PAN[-10:] not in message  # never a PAN in an error
    assert info.value.what in message
    return info.value.reason


GOOD_ISSUER = forged_issuer()


def test_forged_baseline_is_valid() -> None:
    """The forging helpers build genuine blocks, so each case below fails for one reason only."""
    assert recover_issuer(GOOD_ISSUER) == ISSUER.public
    assert recover_icc(forged_icc()) == ICC.public
    assert verify_dynamic_data(ICC.public, forge(ICC, sdad_body(), DDOL), DDOL) == DYNAMIC


CASES: list[tuple[str, str, Callable[[], object]]] = [
    # wrong-length
    ("short certificate", "wrong-length", lambda: recover_issuer_key(
        CA.public, GOOD_ISSUER.certificate[1:], GOOD_ISSUER.remainder, b"\x03", pan=PAN,
        today=TODAY)),
    ("truncated remainder", "wrong-length", lambda: recover_issuer_key(
        CA.public, GOOD_ISSUER.certificate, GOOD_ISSUER.remainder[:-1], b"\x03", pan=PAN,
        today=TODAY)),
    ("exponent length differs", "wrong-length", lambda: recover_issuer_key(
        CA.public, GOOD_ISSUER.certificate, GOOD_ISSUER.remainder, b"\x01\x00\x01", pan=PAN,
        today=TODAY)),
    ("key length zero", "wrong-length", lambda: recover_issuer(forged_issuer(key_len=0))),
    ("key longer than signer", "wrong-length",
     lambda: recover_issuer(forged_issuer(key_len=CA.public.size + 1))),
    ("exponent length 2", "wrong-length",
     lambda: recover_issuer(forged_issuer(exponent=b"\x00\x03"))),
    ("SDAD of other length", "wrong-length",
     lambda: verify_dynamic_data(ICC.public, bytes(ICC.public.size + 1), DDOL)),
    ("dynamic data length too big", "wrong-length", lambda: verify_dynamic_data(
        ICC.public, forge(ICC, sdad_body(l_dd=ICC.public.size - 24), DDOL), DDOL)),
    ("CA key too short", "wrong-length", lambda: recover_issuer_key(
        RsaPublicKey(b"\xc3" * 36, b"\x03"), bytes(36), b"", b"\x03", pan=PAN, today=TODAY)),
    ("issuer key too short", "wrong-length", lambda: recover_icc_key(
        RsaPublicKey(b"\xc3" * 42, b"\x03"), bytes(42), b"", b"\x03", pan=PAN, static_data=b"",
        today=TODAY)),
    ("ICC key too short", "wrong-length",
     lambda: verify_dynamic_data(RsaPublicKey(b"\xc3" * 25, b"\x03"), bytes(25), DDOL)),
    ("ICC certificate given as issuer's", "wrong-length", lambda: recover_issuer_key(
        CA.public, forged_icc().certificate, b"", b"\x03", pan=PAN, today=TODAY)),
    # bad-signature
    ("block equal to modulus", "bad-signature",
     lambda: verify_dynamic_data(ICC.public, ICC.public.modulus, DDOL)),
    # bad-trailer / bad-header / bad-format
    ("trailer BD", "bad-trailer",
     lambda: verify_dynamic_data(ICC.public, forge(ICC, sdad_body(), DDOL, trailer=0xBD), DDOL)),
    ("header 6B", "bad-header",
     lambda: verify_dynamic_data(ICC.public, forge(ICC, sdad_body(), DDOL, header=0x6B), DDOL)),
    ("issuer format 04", "bad-format", lambda: recover_issuer(forged_issuer(fmt=0x04))),
    ("SDAD format 03", "bad-format", lambda: verify_dynamic_data(
        ICC.public, forge(ICC, sdad_body(fmt=0x03), DDOL), DDOL)),
    # bad-algorithm
    ("hash algorithm 02", "bad-algorithm",
     lambda: recover_issuer(forged_issuer(algos=b"\x02\x01"))),
    ("key algorithm 02", "bad-algorithm", lambda: recover_issuer(forged_issuer(algos=b"\x01\x02"))),
    ("ICC hash algorithm 02", "bad-algorithm", lambda: recover_icc(forged_icc(algos=b"\x02\x01"))),
    ("SDAD hash algorithm 02", "bad-algorithm", lambda: verify_dynamic_data(
        ICC.public, forge(ICC, sdad_body(algo=0x02), DDOL), DDOL)),
    # bad-hash
    ("remainder altered", "bad-hash", lambda: recover_issuer_key(
        CA.public, GOOD_ISSUER.certificate, bytes(len(GOOD_ISSUER.remainder)), b"\x03", pan=PAN,
        today=TODAY)),
    ("static data altered", "bad-hash",
     lambda: recover_icc(forged_icc(), static=STATIC[:-1] + b"\x01")),
    ("DDOL data altered", "bad-hash", lambda: verify_dynamic_data(
        ICC.public, sign_dynamic_data(ICC, DYNAMIC, DDOL), DDOL[:-1] + b"\x01")),
    ("hash field wrong", "bad-hash", lambda: verify_dynamic_data(
        ICC.public, forge(ICC, sdad_body(), DDOL, digest=bytes(20)), DDOL)),
    # pan-mismatch
    ("issuer id of another issuer", "pan-mismatch",
     lambda: recover_issuer(GOOD_ISSUER, pan="6228480000000000001")),
    ("issuer id not digits", "pan-mismatch",
     lambda: recover_issuer(forged_issuer(issuer_id=bytes.fromhex("62F700FF")))),
    ("issuer id of two digits", "pan-mismatch",
     lambda: recover_issuer(forged_issuer(issuer_id=bytes.fromhex("62FFFFFF")))),
    ("ICC PAN of another card", "pan-mismatch", lambda: recover_icc(forged_icc(), pan=OTHER_PAN)),
    ("card PAN malformed", "pan-mismatch", lambda: recover_issuer(GOOD_ISSUER, pan="62170A")),
    # bad-date / expired
    ("month 13", "bad-date", lambda: recover_issuer(forged_issuer(expiry=bytes.fromhex("1330")))),
    ("month 00", "bad-date", lambda: recover_icc(forged_icc(expiry=bytes.fromhex("0030")))),
    ("not BCD", "bad-date", lambda: recover_issuer(forged_issuer(expiry=bytes.fromhex("1A30")))),
    ("issuer expired", "expired",
     lambda: recover_issuer(forged_issuer(expiry=bytes.fromhex("1025")))),
    ("ICC expired", "expired", lambda: recover_icc(forged_icc(expiry=bytes.fromhex("0126")))),
    # bad-key
    ("exponent 05", "bad-key", lambda: recover_issuer(forged_issuer(exponent=b"\x05"))),
    ("modulus with leading zero", "bad-key",
     lambda: recover_issuer(forged_issuer(modulus=b"\x00" + ISSUER.public.modulus[1:]))),
    # unknown-ca
    ("CA index not held", "unknown-ca",
     lambda: testkeys.ca_table().lookup(testkeys.TEST_CA_RID, 0x01)),
]


@pytest.mark.parametrize(("reason", "call"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_check_fails_with_its_reason(reason: str, call: Callable[[], object]) -> None:
    assert reason_of(call) == reason


def test_every_reason_is_covered() -> None:
    from typing import get_args

    assert {c[1] for c in CASES} == set(get_args(Reason))


# --- hostile input never raises anything but CertificateError ----------------------------------

PANS = st.sampled_from([PAN, OTHER_PAN, "6228480000000000001", "62170A", ""])
DATES = st.dates(date(2000, 1, 1), date(2060, 12, 31))


def _only_certificate_errors(call: Callable[[], object]) -> None:
    """Accepted (a key or data) or a CertificateError; anything else propagates and fails."""
    try:
        result = call()
    except CertificateError as exc:
        event(exc.reason)  # --hypothesis-show-statistics shows how deep the garbage got
    else:
        assert isinstance(result, RsaPublicKey | bytes)
        event("accepted")


def _sized(size: int) -> st.SearchStrategy[bytes]:
    """Mostly exactly ``size`` bytes (to pass the length check), sometimes any length."""
    return st.one_of(st.binary(min_size=size, max_size=size), st.binary(max_size=size + 8))


def _signed(key: RsaPrivateKey) -> st.SearchStrategy[bytes]:
    """Any block below the modulus, signed: recovery gives the attacker's exact bytes."""
    size = key.public.size
    inner = st.binary(min_size=size - 1, max_size=size - 1)
    framed = st.tuples(st.binary(min_size=size - 2, max_size=size - 2), st.booleans()).map(
        lambda t: b"\x6a" + t[0] + (b"\xbc" if t[1] else t[0][-1:])
    )
    return st.one_of(inner.map(lambda b: b"\x00" + b), framed).map(key.raw_private)


SMALL = st.binary(max_size=64)
EXPONENT_FIELDS = st.one_of(
    st.sampled_from([b"\x03", b"\x01\x00\x01", b"\x05"]), st.binary(max_size=4)
)
VALID_EXPIRY = st.tuples(st.integers(1, 12), st.integers(0, 99)).map(
    lambda t: bytes.fromhex(f"{t[0]:02d}{t[1]:02d}")
)


@st.composite
def _hashed_certificate(
    draw: st.DrawFn, signer: RsaPrivateKey, fmt: int, ident: bytes, with_static: bool
) -> tuple[bytes, bytes, bytes, bytes]:
    """A genuinely signed, correctly hashed certificate whose fields are the attacker's.

    Fields are random, but each of format, identity, algorithms, expiry and the length fields
    is sometimes made right, so the checks after the hash see hostile values too.
    Gives (certificate, remainder, exponent, static data).
    """
    size = signer.public.size
    room = size - (36 if fmt == FORMAT_ISSUER else 42)
    body = bytearray(draw(st.binary(min_size=size - 22, max_size=size - 22)))
    body[0] = draw(st.sampled_from([fmt, fmt, draw(st.integers(0, 255))]))
    expiry_at = 1 + len(ident)
    algo_at = expiry_at + 5
    if draw(st.booleans()):
        body[1:expiry_at] = ident
    if draw(st.booleans()):
        body[expiry_at : expiry_at + 2] = draw(VALID_EXPIRY)
    if draw(st.booleans()):
        body[algo_at : algo_at + 2] = b"\x01\x01"
    exponent = draw(EXPONENT_FIELDS)
    key_len = draw(st.integers(0, 255))
    extra = max(0, key_len - room)
    remainder = draw(st.binary(min_size=extra, max_size=extra))
    if draw(st.booleans()):
        body[algo_at + 2] = key_len
        body[algo_at + 3] = len(exponent) & 0xFF
    static = draw(SMALL) if with_static else b""
    hashed = (remainder, exponent, static) if with_static else (remainder, exponent)
    return forge(signer, bytes(body), *hashed), remainder, exponent, static


def _certificates(
    signer: RsaPrivateKey, fmt: int, ident: bytes, with_static: bool
) -> st.SearchStrategy[tuple[bytes, bytes, bytes, bytes]]:
    loose = st.tuples(
        st.one_of(_sized(signer.public.size), _signed(signer)),
        SMALL,
        EXPONENT_FIELDS,
        SMALL if with_static else st.just(b""),
    )
    return st.one_of(loose, _hashed_certificate(signer, fmt, ident, with_static))


FORMAT_ISSUER = 0x02
FORMAT_ICC = 0x04
GARBAGE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@GARBAGE
@given(
    parts=_certificates(CA, FORMAT_ISSUER, bytes.fromhex("621700FF"), with_static=False),
    pan=PANS,
    today=DATES,
)
def test_garbage_issuer_certificates(
    parts: tuple[bytes, bytes, bytes, bytes], pan: str, today: date
) -> None:
    cert, remainder, exponent, _ = parts
    _only_certificate_errors(
        lambda: recover_issuer_key(CA.public, cert, remainder, exponent, pan=pan, today=today)
    )


@GARBAGE
@given(
    parts=_certificates(ISSUER, FORMAT_ICC, bytes.fromhex(PAN + "F"), with_static=True),
    pan=PANS,
    today=DATES,
)
def test_garbage_icc_certificates(
    parts: tuple[bytes, bytes, bytes, bytes], pan: str, today: date
) -> None:
    cert, remainder, exponent, static = parts
    _only_certificate_errors(
        lambda: recover_icc_key(
            ISSUER.public, cert, remainder, exponent, pan=pan, static_data=static, today=today
        )
    )


@st.composite
def _hashed_sdad(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A signed, correctly hashed SDAD with the attacker's format, algorithm and length bytes."""
    size = ICC.public.size
    body = bytearray(draw(st.binary(min_size=size - 22, max_size=size - 22)))
    if draw(st.booleans()):
        body[0:2] = b"\x05\x01"
    ddol = draw(SMALL)
    return forge(ICC, bytes(body), ddol), ddol


@GARBAGE
@given(
    parts=st.one_of(
        st.tuples(st.one_of(_sized(ICC.public.size), _signed(ICC)), SMALL), _hashed_sdad()
    )
)
def test_garbage_sdad(parts: tuple[bytes, bytes]) -> None:
    sdad, ddol = parts
    _only_certificate_errors(lambda: verify_dynamic_data(ICC.public, sdad, ddol))


# --- keys, table and signing-side input -----------------------------------------------------------


def test_raw_operations_invert_each_other() -> None:
    block = b"\x01" + bytes(ICC.public.size - 1)
    signed = ICC.raw_private(block)
    assert ICC.public.raw_public(signed) == block
    # CRT gives the textbook result.
    d = ICC._d
    assert int.from_bytes(signed, "big") == pow(int.from_bytes(block, "big"), d, ICC.public.n)


def test_pem_round_trip_and_no_secrets_in_repr() -> None:
    again = RsaPrivateKey.from_pem(ICC.to_pem())
    assert again == ICC
    text = repr(ICC)
    assert str(ICC._d) not in text and str(ICC._p) not in text
    assert "RSA-1024" in text


def test_from_pem_rejects_other_things() -> None:
    with pytest.raises(RsaInputError, match="PEM"):
        RsaPrivateKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(RsaInputError, match="not an RSA"):
        RsaPrivateKey.from_pem(ec_pem)


@pytest.mark.parametrize("role", sorted(testkeys.KEY_FILES))
def test_shipped_test_keys_pass_the_key_check_they_skip_at_load(role: str) -> None:
    """The test keys are loaded unchecked at run time (start-up cost); here, checked."""
    from importlib import resources

    data = resources.files(testkeys).joinpath(testkeys.KEY_FILES[role]).read_bytes()
    checked = RsaPrivateKey.from_pem(data)  # OpenSSL's consistency check
    assert checked == testkeys._load(role)
    assert checked.public.n.bit_length() == testkeys.KEY_SIZES[role]


def test_from_pem_checks_the_key_unless_told_not_to() -> None:
    """An inconsistent key (d of another key) is refused by the check, loaded without it."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    good = ICC.to_cryptography().private_numbers()
    bad = rsa.RSAPrivateNumbers(good.p, good.q, good.d + 2, good.dmp1, good.dmq1, good.iqmp,
                                good.public_numbers)
    pem = bad.private_key(unsafe_skip_rsa_key_validation=True).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(RsaInputError, match="PEM"):
        RsaPrivateKey.from_pem(pem)
    assert RsaPrivateKey.from_pem(pem, check=False).public == ICC.public


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: generate_rsa_key(1024, exponent=5), "exponent"),
        (lambda: generate_rsa_key(1020), "multiple of 8"),
        (lambda: generate_rsa_key(2048), "key size"),
        (lambda: RsaPublicKey(b"\x00\x80", b"\x03"), "modulus"),
        (lambda: RsaPublicKey(b"", b"\x03"), "modulus"),
        (lambda: RsaPublicKey(b"\x80", b"\x00\x03"), "exponent"),
        (lambda: ICC.public.raw_public(bytes(3)), "128 bytes"),
        (lambda: ICC.public.raw_public(ICC.public.modulus), "below the modulus"),
        (lambda: ICC.raw_private(b"\xff" * 128), "below the modulus"),
        (lambda: ICC.raw_private(bytes(5)), "128 bytes"),
        (lambda: CaKeyTable({(b"\xa0\x00", 1): ICC.public}), "RID"),
        (lambda: CaKeyTable.of([(testkeys.TEST_CA_RID, 256, ICC.public)]), "index"),
        (lambda: issuer_certificate(
            ISSUER, CA.public, issuer_id=bytes.fromhex("621700FF"), expiry=EXPIRY, serial=SERIAL
        ), "longer than the CA"),
        (lambda: issuer_certificate(
            CA, ISSUER.public, issuer_id=bytes.fromhex("62FFFFFF"), expiry=EXPIRY, serial=SERIAL
        ), "issuer identifier"),
        (lambda: issuer_certificate(
            CA, ISSUER.public, issuer_id=bytes.fromhex("621700FF"), expiry=b"\x13\x30",
            serial=SERIAL), "MMYY"),
        (lambda: issuer_certificate(
            CA, ISSUER.public, issuer_id=bytes.fromhex("621700FF"), expiry=EXPIRY, serial=b"\x01"
        ), "serial"),
        (lambda: issuer_certificate(
            RsaPrivateKey(RsaPublicKey(b"\xc3" * 36, b"\x03"), 1, 1, 1, 1, 1, 1),
            RsaPublicKey(b"\xc3" * 30, b"\x03"), issuer_id=bytes.fromhex("621700FF"),
            expiry=EXPIRY, serial=SERIAL), "cannot hold"),
        (lambda: icc_certificate(
            ICC, CA.public, pan=PAN, expiry=EXPIRY, serial=SERIAL, static_data=b""
        ), "longer than the issuer"),
        (lambda: icc_certificate(
            RsaPrivateKey(RsaPublicKey(b"\xc3" * 42, b"\x03"), 1, 1, 1, 1, 1, 1),
            RsaPublicKey(b"\xc3" * 30, b"\x03"), pan=PAN, expiry=EXPIRY, serial=SERIAL,
            static_data=b""), "cannot hold"),
        (lambda: icc_certificate(
            ISSUER, ICC.public, pan="12AB", expiry=EXPIRY, serial=SERIAL, static_data=b""
        ), "PAN"),
        (lambda: sign_dynamic_data(ICC, bytes(ICC.public.size - 24), b""), "exceeds"),
        (lambda: issuer_id_from_pan(PAN, 2), "3-8"),
        (lambda: issuer_id_from_pan("1234", 6), "PAN"),
    ],
)
def test_signing_side_input_errors(call: Callable[[], object], needle: str) -> None:
    with pytest.raises(RsaInputError, match=needle):
        call()


def test_ca_table() -> None:
    table = CaKeyTable()
    assert len(table) == 0
    assert table.find(testkeys.TEST_CA_RID, 0xF1) is None
    grown = table.with_key(testkeys.TEST_CA_RID, 0xF1, CA.public)
    assert len(table) == 0 and len(grown) == 1
    assert (testkeys.TEST_CA_RID, 0xF1) in grown
    assert grown.lookup(testkeys.TEST_CA_RID, 0xF1) is CA.public
    with pytest.raises(TypeError):
        grown.keys[(testkeys.TEST_CA_RID, 0x01)] = CA.public  # type: ignore[index]
