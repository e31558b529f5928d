"""Certificate expiry dates (MMYY, BCD), read the same way by both suites' certificates."""

from __future__ import annotations

import calendar
from datetime import date

from emv.crypto.errors import CertificateError


def expiry_month(expiry: bytes) -> tuple[int, int] | None:
    """(year, month) of a BCD MMYY date, YY < 50 read as 20YY (EMV Book 3 rule), else None."""
    text = expiry.hex()
    if len(expiry) != 2 or not text.isdigit():
        return None
    month, yy = int(text[:2]), int(text[2:])
    if not 1 <= month <= 12:
        return None
    return (2000 + yy if yy < 50 else 1900 + yy), month


def check_expiry(expiry: bytes, today: date, what: str) -> None:
    """A certificate is valid through the last day of its expiry month."""
    parsed = expiry_month(expiry)
    if parsed is None:
        raise CertificateError("bad-date", what, f"expiry {expiry.hex().upper()} is not MMYY")
    year, month = parsed
    if today > date(year, month, calendar.monthrange(year, month)[1]):
        raise CertificateError("expired", what, f"expired at the end of {month:02d}/{year}")
