"""EMV Book 2 RSA offline data authentication: the certificate chain and signed dynamic data.

Chain: a payment-system CA key (found by RID + index in a ``CaKeyTable``) signs the issuer
public key certificate (tag 90, remainder 92, exponent 9F32); the issuer key signs the ICC
public key certificate (9F46, 9F48, 9F47), which also covers the card's static data; the ICC
key signs the dynamic data of each transaction (SDAD, 9F4B; for fDDA over
9F37 || 9F02 || 5F2A || 9F69).

Every block is RSA *with message recovery* (ISO/IEC 9796-2 as EMV uses it): the verifier
recovers ``6A || fields || SHA-1 || BC`` with the public key and checks it.  ``cryptography``
offers no raw RSA, so the raw operations are done here: the public one (exponent 3 or 65537)
with Python ``pow``, the private one by the CRT with ``gmpy2.powmod`` (GMP: ~0.1 ms for
RSA-1024 against ~1 ms for ``pow``, which matters because the in-process virtual card signs
every fDDA tap).  ``cryptography`` generates and serialises keys.

Layouts (N = length in bytes of the signing key's modulus):

* issuer certificate (format 02), N = N_CA:
  ``6A 02 | issuer id 4 | expiry MMYY 2 | serial 3 | hash algo 01 | pk algo 01 | N_I 1 |
  exp len 1 | issuer modulus or its leftmost N_CA-36 bytes (BB padded) | SHA-1 20 | BC``;
* ICC certificate (format 04), N = N_I:
  ``6A 04 | PAN 10 (F padded) | expiry 2 | serial 3 | 01 | 01 | N_IC 1 | exp len 1 |
  ICC modulus or its leftmost N_I-42 bytes | SHA-1 20 | BC``;
* SDAD (format 05), N = N_IC:
  ``6A 05 | hash algo 01 | L_DD 1 | ICC dynamic data L_DD | BB x (N_IC-L_DD-25) | SHA-1 20 | BC``;
  Visa's fDDA signs the same layout with format byte 95 (kernels of the schemes in a
  terminal's priority list accept both; qPBOC cards sign 05).

The hash covers everything between header and hash, then the remainder and the exponent
(certificates), the static data (ICC certificate) or the DDOL data (SDAD).

Verification failures raise ``CertificateError`` with a short ``reason`` code, never anything
else, so a kernel fed a hostile card turns them into an ODA-failed outcome.  Wrong arguments
on the signing side (a key too long for its signer, a malformed issuer id) raise
``RsaInputError``.  No message ever contains a PAN or key material.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from types import MappingProxyType

import gmpy2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emv.crypto.errors import CertificateError
from emv.crypto.expiry import check_expiry, expiry_month
from emv.pan import PanError, normalize_pan

HEADER = 0x6A
TRAILER = 0xBC
PAD = 0xBB
FORMAT_ISSUER = 0x02
FORMAT_ICC = 0x04
FORMAT_SDAD = 0x05
FORMAT_SDAD_VISA_FDDA = 0x95  # Visa fDDA (VCPS): the 05 layout under its own format byte
SDAD_FORMATS = (FORMAT_SDAD, FORMAT_SDAD_VISA_FDDA)
HASH_SHA1 = 0x01
PK_RSA = 0x01
HASH_BYTES = 20
EXPONENTS = (3, 65537)
EXPONENT_BYTES = (b"\x03", b"\x01\x00\x01")
MAX_BITS = 1984  # EMV Book 2: the largest CA modulus

# Fixed bytes besides the key in each block: header, fields, hash, trailer.
ISSUER_OVERHEAD = 36
ICC_OVERHEAD = 42
SDAD_OVERHEAD = 25

ISSUER_CERT = "issuer public key certificate (90)"
ICC_CERT = "ICC public key certificate (9F46)"
SDAD = "signed dynamic application data (9F4B)"


class RsaInputError(ValueError):
    """An argument given to build keys, certificates or signatures is malformed (says which)."""


def _sha1(*parts: bytes) -> bytes:
    # SHA-1 is what EMV Book 2 mandates for these certificates (hash algorithm indicator 01).
    h = hashlib.sha1()  # noqa: S324
    for part in parts:
        h.update(part)
    return h.digest()


@dataclass(frozen=True)
class RsaPublicKey:
    """An EMV RSA public key: big-endian modulus (top byte non-zero) and exponent 3 or 65537."""

    modulus: bytes
    exponent: bytes

    def __post_init__(self) -> None:
        if not self.modulus or self.modulus[0] == 0:
            raise RsaInputError("RSA modulus must be non-empty with a non-zero first byte")
        if self.exponent not in EXPONENT_BYTES:
            raise RsaInputError("RSA exponent must be 03 or 010001 (EMV Book 2)")

    def __repr__(self) -> str:
        return f"RsaPublicKey(RSA-{self.size * 8}, e={self.e}, modulus={self.modulus[:4].hex()}..)"

    @cached_property
    def n(self) -> int:
        """The modulus as an integer."""
        return int.from_bytes(self.modulus, "big")

    @cached_property
    def e(self) -> int:
        """The exponent as an integer."""
        return int.from_bytes(self.exponent, "big")

    @property
    def size(self) -> int:
        """Modulus length in bytes (N in Book 2): every block this key checks has this length."""
        return len(self.modulus)

    def raw_public(self, block: bytes) -> bytes:
        """Raw RSA public operation (message recovery) on a block of exactly ``size`` bytes."""
        if len(block) != self.size:
            raise RsaInputError(f"RSA block must be {self.size} bytes, got {len(block)}")
        value = int.from_bytes(block, "big")
        if value >= self.n:
            raise RsaInputError("RSA block is not below the modulus")
        return pow(value, self.e, self.n).to_bytes(self.size, "big")


@dataclass(frozen=True, repr=False)
class RsaPrivateKey:
    """An RSA private key kept as CRT numbers for fast raw signing; never printed."""

    public: RsaPublicKey
    _p: int
    _q: int
    _d: int
    _dp: int
    _dq: int
    _qinv: int

    def __repr__(self) -> str:
        return f"RsaPrivateKey(public={self.public!r})"

    @classmethod
    def from_cryptography(cls, key: rsa.RSAPrivateKey) -> RsaPrivateKey:
        """Wrap a key made or loaded by ``cryptography``."""
        numbers = key.private_numbers()
        pub = numbers.public_numbers
        size = (pub.n.bit_length() + 7) // 8
        exponent = pub.e.to_bytes((pub.e.bit_length() + 7) // 8, "big")
        public = RsaPublicKey(pub.n.to_bytes(size, "big"), exponent)
        return cls(
            public,
            numbers.p,
            numbers.q,
            numbers.d,
            numbers.dmp1,
            numbers.dmq1,
            numbers.iqmp,
        )

    @classmethod
    def from_pem(cls, data: bytes, *, check: bool = True) -> RsaPrivateKey:
        """Load an unencrypted PEM private key (PKCS#8 or PKCS#1).

        ``check=False`` skips OpenSSL's key consistency check (~15 ms a key): only for the
        shipped test keys, which the test suite loads checked."""
        try:
            key = serialization.load_pem_private_key(
                data, password=None, unsafe_skip_rsa_key_validation=not check)
        except (ValueError, TypeError) as exc:
            kind = type(exc).__name__
            raise RsaInputError(f"not an unencrypted PEM private key ({kind})") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise RsaInputError(f"PEM holds a {type(key).__name__}, not an RSA private key")
        return cls.from_cryptography(key)

    def to_cryptography(self) -> rsa.RSAPrivateKey:
        """The same key as a ``cryptography`` object."""
        public = rsa.RSAPublicNumbers(self.public.e, self.public.n)
        numbers = rsa.RSAPrivateNumbers(
            self._p, self._q, self._d, self._dp, self._dq, self._qinv, public
        )
        return numbers.private_key()

    def to_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM (only ever used for shipped test keys)."""
        return self.to_cryptography().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def raw_private(self, block: bytes) -> bytes:
        """Raw RSA private operation (signing with message recovery) via the CRT."""
        public = self.public
        if len(block) != public.size:
            raise RsaInputError(f"RSA block must be {public.size} bytes, got {len(block)}")
        value = int.from_bytes(block, "big")
        if value >= public.n:
            raise RsaInputError("RSA block is not below the modulus")
        m1 = int(gmpy2.powmod(value, self._dp, self._p))
        m2 = int(gmpy2.powmod(value, self._dq, self._q))
        h = (self._qinv * (m1 - m2)) % self._p
        return (m2 + h * self._q).to_bytes(public.size, "big")


def generate_rsa_key(bits: int, exponent: int = 3) -> RsaPrivateKey:
    """A fresh RSA key of exactly ``bits`` bits (a multiple of 8) and exponent 3 or 65537."""
    if exponent not in EXPONENTS:
        raise RsaInputError(f"RSA exponent must be 3 or 65537, got {exponent}")
    if bits % 8 or not 1024 <= bits <= MAX_BITS:
        raise RsaInputError(f"RSA key size must be a multiple of 8 in 1024..{MAX_BITS}, got {bits}")
    return RsaPrivateKey.from_cryptography(rsa.generate_private_key(exponent, bits))


# --- CA public keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CaKeyTable:
    """The terminal's CA public keys, by RID (5 bytes, the AID's first five) and index (8F)."""

    keys: Mapping[tuple[bytes, int], RsaPublicKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rid, index in self.keys:
            _check_rid_index(rid, index)
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    @classmethod
    def of(cls, entries: Iterable[tuple[bytes, int, RsaPublicKey]]) -> CaKeyTable:
        """A table from (RID, index, key) triples."""
        return cls({(rid, index): key for rid, index, key in entries})

    def with_key(self, rid: bytes, index: int, key: RsaPublicKey) -> CaKeyTable:
        """A new table with one key added or replaced."""
        return CaKeyTable({**self.keys, (rid, index): key})

    def find(self, rid: bytes, index: int) -> RsaPublicKey | None:
        """The key, or None when the terminal does not hold it."""
        return self.keys.get((bytes(rid), index))

    def lookup(self, rid: bytes, index: int) -> RsaPublicKey:
        """The key; a missing one fails offline data authentication like a bad certificate."""
        key = self.find(rid, index)
        if key is None:
            detail = f"no key for RID {bytes(rid).hex().upper()} index {index:02X}"
            raise CertificateError("unknown-ca", "CA public key", detail)
        return key

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, item: object) -> bool:
        return item in self.keys


def _check_rid_index(rid: bytes, index: int) -> None:
    if not isinstance(rid, bytes) or len(rid) != 5:
        raise RsaInputError("RID must be 5 bytes")
    if not 0 <= index <= 0xFF:
        raise RsaInputError(f"CA public key index must be 0..255, got {index}")


# --- shared helpers ----------------------------------------------------------------------------


def _recover(key: RsaPublicKey, block: bytes, what: str, fmt: int | tuple[int, ...]) -> bytes:
    """Book 2 steps common to every block: length, recovery, trailer, header, format."""
    if len(block) != key.size:
        raise CertificateError(
            "wrong-length", what, f"{len(block)} bytes, the key's modulus is {key.size}"
        )
    try:
        recovered = key.raw_public(block)
    except RsaInputError:
        raise CertificateError("bad-signature", what, "value not below the modulus") from None
    if recovered[-1] != TRAILER:
        raise CertificateError("bad-trailer", what, f"ends {recovered[-1]:02X}, expected BC")
    if recovered[0] != HEADER:
        raise CertificateError("bad-header", what, f"starts {recovered[0]:02X}, expected 6A")
    allowed = fmt if isinstance(fmt, tuple) else (fmt,)
    if recovered[1] not in allowed:
        expected = " or ".join(f"{f:02X}" for f in allowed)
        raise CertificateError(
            "bad-format", what, f"format {recovered[1]:02X}, expected {expected}"
        )
    return recovered


def _check_hash(recovered: bytes, what: str, *extra: bytes) -> None:
    body = recovered[1 : -1 - HASH_BYTES]
    if _sha1(body, *extra) != recovered[-1 - HASH_BYTES : -1]:
        raise CertificateError("bad-hash", what, "SHA-1 of the data does not match")


def _check_algorithms(hash_algo: int, pk_algo: int, what: str) -> None:
    if hash_algo != HASH_SHA1:
        raise CertificateError("bad-algorithm", what, f"hash algorithm {hash_algo:02X}, want 01")
    if pk_algo != PK_RSA:
        raise CertificateError("bad-algorithm", what, f"key algorithm {pk_algo:02X}, want 01")


def _card_pan(pan: str | bytes, what: str) -> str:
    try:
        return normalize_pan(pan)
    except PanError:
        raise CertificateError("pan-mismatch", what, "the card's PAN is not 12-19 digits") from None


def _key_lengths(
    recovered: bytes,
    at: int,
    *,
    room: int,
    remainder: bytes,
    exponent: bytes,
    limit: int,
    what: str,
) -> int:
    """Check the key length / exponent length fields against what the card sent; give N_key."""
    key_len, exp_len = recovered[at], recovered[at + 1]
    if key_len == 0 or key_len > limit:
        raise CertificateError(
            "wrong-length", what, f"key length {key_len}, the signing key allows 1..{limit}"
        )
    if exp_len not in (1, 3) or exp_len != len(exponent):
        raise CertificateError(
            "wrong-length", what, f"exponent length {exp_len}, the card sent {len(exponent)}"
        )
    want = max(0, key_len - room)
    if len(remainder) != want:
        raise CertificateError(
            "wrong-length", what, f"remainder of {len(remainder)} bytes, expected {want}"
        )
    return key_len


def _make_key(modulus: bytes, exponent: bytes, what: str) -> RsaPublicKey:
    try:
        return RsaPublicKey(modulus, exponent)
    except RsaInputError as exc:
        raise CertificateError("bad-key", what, str(exc)) from None


def _check_fields(expiry: bytes, serial: bytes) -> None:
    if expiry_month(expiry) is None:
        raise RsaInputError("certificate expiry must be 2 bytes BCD MMYY with month 01-12")
    if len(serial) != 3:
        raise RsaInputError(f"certificate serial number must be 3 bytes, got {len(serial)}")


def _sign(key: RsaPrivateKey, body: bytes, *extra: bytes) -> bytes:
    block = bytes([HEADER]) + body + _sha1(body, *extra) + bytes([TRAILER])
    return key.raw_private(block)


def _split_key(key: RsaPublicKey, room: int) -> tuple[bytes, bytes]:
    """Leftmost ``room`` bytes (BB padded) for the certificate, and the remainder."""
    inside = key.modulus[:room]
    return inside + bytes([PAD]) * (room - len(inside)), key.modulus[room:]


# --- issuer public key certificate (tag 90) ----------------------------------------------------


@dataclass(frozen=True)
class IssuerCertificate:
    """What a card carries for its issuer key: 90, 92 (empty if the key fits) and 9F32."""

    certificate: bytes
    remainder: bytes
    exponent: bytes


def issuer_id_from_pan(pan: str | bytes, digits: int = 6) -> bytes:
    """Issuer identifier (4 bytes): the leftmost 3-8 PAN digits, right-padded with F."""
    if not 3 <= digits <= 8:
        raise RsaInputError(f"issuer identifier takes 3-8 PAN digits, got {digits}")
    try:
        text = normalize_pan(pan)[:digits]
    except PanError as exc:
        raise RsaInputError(str(exc)) from None
    return bytes.fromhex(text.ljust(8, "F"))


def _issuer_id_digits(issuer_id: bytes) -> str | None:
    text = issuer_id.hex().upper()
    digits = text.rstrip("F")
    if len(issuer_id) != 4 or not digits.isdigit() or not 3 <= len(digits) <= 8:
        return None
    return digits


def issuer_certificate(
    ca_key: RsaPrivateKey,
    issuer_public: RsaPublicKey,
    *,
    issuer_id: bytes,
    expiry: bytes,
    serial: bytes,
) -> IssuerCertificate:
    """Sign an issuer public key with a CA key (format 02, SHA-1, RSA)."""
    n_ca = ca_key.public.size
    if issuer_public.size > n_ca:
        raise RsaInputError(
            f"issuer modulus ({issuer_public.size} bytes) longer than the CA's ({n_ca})"
        )
    if n_ca <= ISSUER_OVERHEAD:
        raise RsaInputError(f"CA modulus of {n_ca} bytes cannot hold a certificate")
    if _issuer_id_digits(issuer_id) is None:
        raise RsaInputError("issuer identifier must be 4 bytes: 3-8 PAN digits padded with F")
    _check_fields(expiry, serial)
    inside, remainder = _split_key(issuer_public, n_ca - ISSUER_OVERHEAD)
    body = (
        bytes([FORMAT_ISSUER])
        + issuer_id
        + expiry
        + serial
        + bytes([HASH_SHA1, PK_RSA, issuer_public.size, len(issuer_public.exponent)])
        + inside
    )
    certificate = _sign(ca_key, body, remainder, issuer_public.exponent)
    return IssuerCertificate(certificate, remainder, issuer_public.exponent)


def recover_issuer_key(
    ca_public: RsaPublicKey,
    certificate: bytes,
    remainder: bytes,
    exponent: bytes,
    *,
    pan: str | bytes,
    today: date,
) -> RsaPublicKey:
    """Check an issuer certificate (Book 2 §5.3) and give the issuer public key."""
    what = ISSUER_CERT
    n_ca = ca_public.size
    if n_ca <= ISSUER_OVERHEAD:
        raise CertificateError("wrong-length", what, f"CA modulus of {n_ca} bytes is too short")
    recovered = _recover(ca_public, certificate, what, FORMAT_ISSUER)
    issuer_id, expiry = recovered[2:6], recovered[6:8]
    _check_algorithms(recovered[11], recovered[12], what)
    room = n_ca - ISSUER_OVERHEAD
    n_i = _key_lengths(
        recovered, 13, room=room, remainder=remainder, exponent=exponent, limit=n_ca, what=what
    )
    _check_hash(recovered, what, remainder, exponent)
    digits = _issuer_id_digits(issuer_id)
    if digits is None or not _card_pan(pan, what).startswith(digits):
        raise CertificateError("pan-mismatch", what, "issuer identifier does not match the PAN")
    check_expiry(expiry, today, what)
    modulus = (recovered[15 : 15 + room] + remainder)[:n_i]
    return _make_key(modulus, exponent, what)


# --- ICC public key certificate (tag 9F46) -----------------------------------------------------


@dataclass(frozen=True)
class IccCertificate:
    """What a card carries for its own key: 9F46, 9F48 (empty if the key fits) and 9F47."""

    certificate: bytes
    remainder: bytes
    exponent: bytes


def _pan_field(pan: str | bytes) -> bytes:
    return bytes.fromhex(normalize_pan(pan).ljust(20, "F"))


def icc_certificate(
    issuer_key: RsaPrivateKey,
    icc_public: RsaPublicKey,
    *,
    pan: str | bytes,
    expiry: bytes,
    serial: bytes,
    static_data: bytes,
) -> IccCertificate:
    """Sign an ICC public key with the issuer key (format 04), covering the static data."""
    n_i = issuer_key.public.size
    if icc_public.size > n_i:
        raise RsaInputError(
            f"ICC modulus ({icc_public.size} bytes) longer than the issuer's ({n_i})"
        )
    if n_i <= ICC_OVERHEAD:
        raise RsaInputError(f"issuer modulus of {n_i} bytes cannot hold a certificate")
    try:
        pan_field = _pan_field(pan)
    except PanError as exc:
        raise RsaInputError(str(exc)) from None
    _check_fields(expiry, serial)
    inside, remainder = _split_key(icc_public, n_i - ICC_OVERHEAD)
    body = (
        bytes([FORMAT_ICC])
        + pan_field
        + expiry
        + serial
        + bytes([HASH_SHA1, PK_RSA, icc_public.size, len(icc_public.exponent)])
        + inside
    )
    certificate = _sign(issuer_key, body, remainder, icc_public.exponent, static_data)
    return IccCertificate(certificate, remainder, icc_public.exponent)


def recover_icc_key(
    issuer_public: RsaPublicKey,
    certificate: bytes,
    remainder: bytes,
    exponent: bytes,
    *,
    pan: str | bytes,
    static_data: bytes,
    today: date,
) -> RsaPublicKey:
    """Check an ICC certificate (Book 2 §6.4) and give the ICC public key."""
    what = ICC_CERT
    n_i = issuer_public.size
    if n_i <= ICC_OVERHEAD:
        raise CertificateError("wrong-length", what, f"issuer modulus of {n_i} bytes is too short")
    recovered = _recover(issuer_public, certificate, what, FORMAT_ICC)
    pan_field, expiry = recovered[2:12], recovered[12:14]
    _check_algorithms(recovered[17], recovered[18], what)
    room = n_i - ICC_OVERHEAD
    n_ic = _key_lengths(
        recovered, 19, room=room, remainder=remainder, exponent=exponent, limit=n_i, what=what
    )
    _check_hash(recovered, what, remainder, exponent, static_data)
    if pan_field.hex().upper().rstrip("F") != _card_pan(pan, what):
        raise CertificateError("pan-mismatch", what, "certificate PAN differs from the card's")
    check_expiry(expiry, today, what)
    modulus = (recovered[21 : 21 + room] + remainder)[:n_ic]
    return _make_key(modulus, exponent, what)


# --- signed dynamic application data (tag 9F4B) ------------------------------------------------


def sign_dynamic_data(icc_key: RsaPrivateKey, icc_dynamic_data: bytes, ddol_data: bytes,
                      *, fmt: int = FORMAT_SDAD) -> bytes:
    """The SDAD (format 05, or Visa fDDA's 95) over the ICC dynamic data and the DDOL data."""
    if fmt not in SDAD_FORMATS:
        raise RsaInputError(f"SDAD format must be 05 or 95, got {fmt:02X}")
    n_ic = icc_key.public.size
    room = n_ic - SDAD_OVERHEAD
    if len(icc_dynamic_data) > room:
        raise RsaInputError(
            f"ICC dynamic data of {len(icc_dynamic_data)} bytes exceeds {room} for this key"
        )
    body = (
        bytes([fmt, HASH_SHA1, len(icc_dynamic_data)])
        + icc_dynamic_data
        + bytes([PAD]) * (room - len(icc_dynamic_data))
    )
    return _sign(icc_key, body, ddol_data)


def verify_dynamic_data(icc_public: RsaPublicKey, sdad: bytes, ddol_data: bytes) -> bytes:
    """Check an SDAD (Book 2 §6.5.2; format 05 or Visa fDDA's 95) and give the ICC dynamic
    data it carries."""
    what = SDAD
    n_ic = icc_public.size
    if n_ic <= SDAD_OVERHEAD:
        raise CertificateError("wrong-length", what, f"ICC modulus of {n_ic} bytes is too short")
    recovered = _recover(icc_public, sdad, what, SDAD_FORMATS)
    if recovered[2] != HASH_SHA1:
        raise CertificateError("bad-algorithm", what, f"hash algorithm {recovered[2]:02X}, want 01")
    l_dd = recovered[3]
    if l_dd > n_ic - SDAD_OVERHEAD:
        raise CertificateError(
            "wrong-length", what, f"dynamic data length {l_dd} exceeds {n_ic - SDAD_OVERHEAD}"
        )
    _check_hash(recovered, what, ddol_data)
    return recovered[4 : 4 + l_dd]
