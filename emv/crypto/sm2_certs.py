"""PBOC 3.0 SM2 offline data authentication: certificates, signed static and dynamic data.

Same chain as the RSA suite (``rsa_certs``), with SM2 signatures instead of RSA recovery:
a CA SM2 key signs the issuer public key certificate (tag 90), the issuer key signs the ICC
public key certificate (9F46) over the card's static data and, for SDA, the signed static
application data (93); the ICC key signs the dynamic data of each transaction (SDAD, 9F4B;
for fDDA over 9F37 || 9F02 || 5F2A || 9F69).

Layouts followed.  REFERENCE.md marks the PBOC SM2 layout unsure; these are the field tables
of PBOC card-test tool code (JR/T 0025.17 style), which agree with it on every byte it gives:

* issuer certificate, 142 bytes: ``12 | issuer id 4 (leftmost 3-8 PAN digits, F padded) |
  expiry MMYY 2 | serial 3 | signature algorithm 04 (SM2) | key encryption algorithm 1
  (reserved, written 00, not checked) | key parameter indicator 00 | key length 40 |
  issuer public key X||Y 64 | SM2 signature r||s 64`` over the 78 bytes before it;
* ICC certificate, 148 bytes: ``14 | PAN 10 (F padded) | expiry 2 | serial 3 | 04 | 00 | 00 |
  40 | ICC public key 64 | signature 64`` over the 84 bytes before it || static data;
* signed static application data (93), 67 bytes: ``13 | data authentication code 2 |
  signature 64`` over ``13 | DAC`` || static data;
* SDAD (9F4B): ``15 | L_DD 1 | ICC dynamic data L_DD | signature 64`` over
  ``15 | L_DD | ICC dynamic data`` || DDOL data.

No header/trailer, hash or remainder fields: SM2 signs with SM3 inside (Z_A with the default
ID 1234567812345678 and the signer's key).  ``static_data`` is EMV's "static data to be
authenticated" as the caller builds it: the AFL records marked for ODA, then the AIP when the
SDA Tag List (9F4A) names it.  Public keys are 64-byte X||Y.

Verification checks the layout, the indicators, the signature, then the PAN and the expiry
(the certificate is valid through the last day of its month; YY < 50 is 20YY), and raises
``CertificateError`` (``emv.crypto.errors``) with a reason code for anything wrong in card
data, never anything else.  Bad arguments on the signing side raise ``CryptoInputError``.
"""

from __future__ import annotations

from datetime import date

from emv.crypto.errors import CertificateError, CryptoInputError
from emv.crypto.expiry import check_expiry, expiry_month
from emv.crypto.sm2 import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    normalize_public_key,
    sm2_sign,
    sm2_verify,
)
from emv.pan import PanError, normalize_pan

FORMAT_ISSUER = 0x12
FORMAT_SSAD = 0x13
FORMAT_ICC = 0x14
FORMAT_SDAD = 0x15
ALGORITHM_SM2 = 0x04
KEY_ENCRYPTION_UNUSED = 0x00
KEY_PARAMETERS = 0x00  # the GM/T 0003.5 recommended curve, the only one defined
KEY_LENGTH = PUBLIC_KEY_SIZE

ISSUER_BODY = 14 + KEY_LENGTH  # 78
ICC_BODY = 20 + KEY_LENGTH  # 84
ISSUER_CERTIFICATE_SIZE = ISSUER_BODY + SIGNATURE_SIZE  # 142
ICC_CERTIFICATE_SIZE = ICC_BODY + SIGNATURE_SIZE  # 148
SSAD_SIZE = 3 + SIGNATURE_SIZE  # 67
MAX_DYNAMIC_DATA = 0xFF

ISSUER_CERT = "SM2 issuer public key certificate (90)"
ICC_CERT = "SM2 ICC public key certificate (9F46)"
SSAD = "SM2 signed static application data (93)"
SDAD = "SM2 signed dynamic application data (9F4B)"


# --- shared checks -------------------------------------------------------------------------


def _card_pan(pan: str | bytes, what: str) -> str:
    try:
        return normalize_pan(pan)
    except PanError:
        raise CertificateError("pan-mismatch", what, "the card's PAN is not 12-19 digits") from None


def _issuer_id_digits(issuer_id: bytes) -> str | None:
    digits = issuer_id.hex().upper().rstrip("F")
    if len(issuer_id) != 4 or not digits.isdigit() or not 3 <= len(digits) <= 8:
        return None
    return digits


def _check_key_fields(block: bytes, at: int, what: str) -> None:
    """Signature algorithm, (reserved) key algorithm, parameter indicator and key length."""
    if block[at] != ALGORITHM_SM2:
        raise CertificateError(
            "bad-algorithm", what, f"signature algorithm {block[at]:02X}, want 04"
        )
    if block[at + 2] != KEY_PARAMETERS:
        raise CertificateError(
            "bad-algorithm", what, f"key parameter indicator {block[at + 2]:02X}, want 00"
        )
    if block[at + 3] != KEY_LENGTH:
        raise CertificateError("wrong-length", what, f"key length {block[at + 3]}, want 64")


def _verify(signer_public: bytes, signed: bytes, signature: bytes, what: str) -> None:
    if not sm2_verify(signer_public, signed, signature):
        raise CertificateError("bad-signature", what, "SM2 signature does not verify")


def _certified_key(key: bytes, what: str) -> bytes:
    try:
        return normalize_public_key(key)
    except CryptoInputError:
        raise CertificateError(
            "bad-key", what, "certified key is not a point on the curve"
        ) from None


def _check_maker_fields(expiry: bytes, serial: bytes) -> None:
    if expiry_month(expiry) is None:
        raise CryptoInputError("certificate expiry must be 2 bytes BCD MMYY with month 01-12")
    if len(serial) != 3:
        raise CryptoInputError(f"certificate serial number must be 3 bytes, got {len(serial)}")


def _key_fields(public_key: bytes) -> bytes:
    key = normalize_public_key(public_key)
    return bytes([ALGORITHM_SM2, KEY_ENCRYPTION_UNUSED, KEY_PARAMETERS, KEY_LENGTH]) + key


# --- issuer public key certificate (tag 90) ----------------------------------------------------


def sm2_issuer_certificate(
    ca_private: bytes,
    issuer_public: bytes,
    *,
    issuer_id: bytes,
    expiry: bytes,
    serial: bytes,
) -> bytes:
    """Certify an issuer SM2 public key with a CA SM2 private key (format 12)."""
    if _issuer_id_digits(issuer_id) is None:
        raise CryptoInputError("issuer identifier must be 4 bytes: 3-8 PAN digits padded with F")
    _check_maker_fields(expiry, serial)
    body = bytes([FORMAT_ISSUER]) + issuer_id + expiry + serial + _key_fields(issuer_public)
    return body + sm2_sign(ca_private, body)


def recover_sm2_issuer_key(
    ca_public: bytes, certificate: bytes, *, pan: str | bytes, today: date
) -> bytes:
    """Check an issuer certificate against the CA key and the card's PAN; the issuer key."""
    what = ISSUER_CERT
    if len(certificate) != ISSUER_CERTIFICATE_SIZE:
        raise CertificateError(
            "wrong-length", what, f"{len(certificate)} bytes, want {ISSUER_CERTIFICATE_SIZE}"
        )
    if certificate[0] != FORMAT_ISSUER:
        raise CertificateError("bad-format", what, f"format {certificate[0]:02X}, want 12")
    _check_key_fields(certificate, 10, what)
    _verify(ca_public, certificate[:ISSUER_BODY], certificate[ISSUER_BODY:], what)
    digits = _issuer_id_digits(certificate[1:5])
    if digits is None or not _card_pan(pan, what).startswith(digits):
        raise CertificateError("pan-mismatch", what, "issuer identifier does not match the PAN")
    check_expiry(certificate[5:7], today, what)
    return _certified_key(certificate[14:ISSUER_BODY], what)


# --- ICC public key certificate (tag 9F46) -----------------------------------------------------


def sm2_icc_certificate(
    issuer_private: bytes,
    icc_public: bytes,
    *,
    pan: str | bytes,
    expiry: bytes,
    serial: bytes,
    static_data: bytes,
) -> bytes:
    """Certify an ICC SM2 public key with the issuer key (format 14), covering the static data."""
    try:
        pan_field = bytes.fromhex(normalize_pan(pan).ljust(20, "F"))
    except PanError as exc:
        raise CryptoInputError(str(exc)) from None
    _check_maker_fields(expiry, serial)
    body = bytes([FORMAT_ICC]) + pan_field + expiry + serial + _key_fields(icc_public)
    return body + sm2_sign(issuer_private, body + static_data)


def recover_sm2_icc_key(
    issuer_public: bytes,
    certificate: bytes,
    *,
    pan: str | bytes,
    static_data: bytes,
    today: date,
) -> bytes:
    """Check an ICC certificate (and with it the static data); the ICC public key."""
    what = ICC_CERT
    if len(certificate) != ICC_CERTIFICATE_SIZE:
        raise CertificateError(
            "wrong-length", what, f"{len(certificate)} bytes, want {ICC_CERTIFICATE_SIZE}"
        )
    if certificate[0] != FORMAT_ICC:
        raise CertificateError("bad-format", what, f"format {certificate[0]:02X}, want 14")
    _check_key_fields(certificate, 16, what)
    body = certificate[:ICC_BODY]
    _verify(issuer_public, body + static_data, certificate[ICC_BODY:], what)
    if certificate[1:11].hex().upper().rstrip("F") != _card_pan(pan, what):
        raise CertificateError("pan-mismatch", what, "certificate PAN differs from the card's")
    check_expiry(certificate[11:13], today, what)
    return _certified_key(certificate[20:ICC_BODY], what)


# --- signed static application data (tag 93) ---------------------------------------------------


def sm2_sign_static_data(issuer_private: bytes, static_data: bytes, *, dac: bytes) -> bytes:
    """The SSAD (format 13) for SDA: the issuer's signature over DAC || static data."""
    if len(dac) != 2:
        raise CryptoInputError(f"data authentication code must be 2 bytes, got {len(dac)}")
    head = bytes([FORMAT_SSAD]) + dac
    return head + sm2_sign(issuer_private, head + static_data)


def sm2_verify_static_data(issuer_public: bytes, ssad: bytes, static_data: bytes) -> bytes:
    """Check an SSAD against the static data; the data authentication code (9F45) it carries."""
    what = SSAD
    if len(ssad) != SSAD_SIZE:
        raise CertificateError("wrong-length", what, f"{len(ssad)} bytes, want {SSAD_SIZE}")
    if ssad[0] != FORMAT_SSAD:
        raise CertificateError("bad-format", what, f"format {ssad[0]:02X}, want 13")
    _verify(issuer_public, ssad[:3] + static_data, ssad[3:], what)
    return ssad[1:3]


# --- signed dynamic application data (tag 9F4B) ------------------------------------------------


def sm2_sign_dynamic_data(icc_private: bytes, icc_dynamic_data: bytes, ddol_data: bytes) -> bytes:
    """The SDAD (format 15) over the ICC dynamic data and the terminal's DDOL data."""
    if len(icc_dynamic_data) > MAX_DYNAMIC_DATA:
        raise CryptoInputError(
            f"ICC dynamic data must be at most 255 bytes, got {len(icc_dynamic_data)}"
        )
    head = bytes([FORMAT_SDAD, len(icc_dynamic_data)]) + icc_dynamic_data
    return head + sm2_sign(icc_private, head + ddol_data)


def sm2_verify_dynamic_data(icc_public: bytes, sdad: bytes, ddol_data: bytes) -> bytes:
    """Check an SDAD against the DDOL data; the ICC dynamic data it carries."""
    what = SDAD
    if len(sdad) < 2 + SIGNATURE_SIZE:
        raise CertificateError("wrong-length", what, f"{len(sdad)} bytes is too short")
    if sdad[0] != FORMAT_SDAD:
        raise CertificateError("bad-format", what, f"format {sdad[0]:02X}, want 15")
    l_dd = sdad[1]
    if len(sdad) != 2 + l_dd + SIGNATURE_SIZE:
        raise CertificateError(
            "wrong-length",
            what,
            f"{len(sdad)} bytes, L_DD {l_dd} wants {2 + l_dd + SIGNATURE_SIZE}",
        )
    head = sdad[: 2 + l_dd]
    _verify(icc_public, head + ddol_data, sdad[2 + l_dd :], what)
    return sdad[2 : 2 + l_dd]
