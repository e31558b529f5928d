"""Errors shared by both crypto suites, so the kernel catches one type whatever the card's suite.

``CertificateError`` is what offline data authentication raises for anything wrong in a
certificate, signed static data or signed dynamic data: the card is untrusted, and a kernel
fed a hostile card turns this one type into an ODA-failed outcome.  ``rsa_certs`` and
``sm2_certs`` both raise it.  Messages never contain a PAN or key material.
"""

from __future__ import annotations

from typing import Literal

Reason = Literal[
    "wrong-length",  # a block, field or data length inconsistent with the layout or the keys
    "bad-signature",  # the signature does not verify (SM2) or is not below the modulus (RSA)
    "bad-trailer",  # RSA: recovered data does not end with BC
    "bad-header",  # RSA: recovered data does not start with 6A
    "bad-format",  # the format byte is not the one this object must have
    "bad-algorithm",  # an algorithm or parameter indicator this kernel does not support
    "bad-hash",  # RSA: the hash in the block does not match the data
    "pan-mismatch",  # issuer id or PAN in the certificate does not match the card's PAN
    "bad-date",  # expiry is not a BCD MMYY date
    "expired",  # certificate expired before `today`
    "bad-key",  # the certified public key is not a usable key
    "unknown-ca",  # no CA public key for this RID and index
]


class CertificateError(ValueError):
    """A certificate or signed data object failed a check.

    ``reason`` is a stable code (for outcomes and counters); ``what`` names the data object
    (e.g. "issuer public key certificate (90)"); ``detail`` says what was wrong.
    """

    def __init__(self, reason: Reason, what: str, detail: str = "") -> None:
        super().__init__(f"{what}: {reason}: {detail}" if detail else f"{what}: {reason}")
        self.reason: Reason = reason
        self.what = what
        self.detail = detail


class CryptoInputError(ValueError):
    """A structurally invalid key, length or parameter handed to a crypto function.

    Raised for caller mistakes (a 31-byte private key, a point not on the curve, a 3-byte
    expiry given to a certificate maker), as opposed to card data that fails a check.
    """
