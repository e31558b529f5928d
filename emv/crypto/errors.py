"""Errors shared by every crypto suite, so the kernel catches one type whatever the card's suite.

``CertificateError`` is what offline data authentication raises for anything wrong in a
certificate, signed static data or signed dynamic data; its ``reason`` is a short code the
kernel can log and count (never a key or a PAN).  ``rsa_certs`` and ``sm2_certs`` both raise it.

Reasons in use: ``wrong-length``, ``bad-format``, ``bad-header``, ``bad-trailer``,
``bad-hash``, ``bad-signature``, ``bad-algorithm``, ``bad-key``, ``bad-date``, ``expired``,
``pan-mismatch``, ``bad-field`` (a value handed to a certificate *maker*).
"""

from __future__ import annotations


class CertificateError(ValueError):
    """A certificate or signed data object that fails a check; ``reason`` says which."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class CryptoInputError(ValueError):
    """A structurally invalid key, length or parameter handed to a crypto function.

    Raised for caller mistakes (a 31-byte private key, a point not on the curve), as
    opposed to a signature that merely does not verify.
    """
