"""PAN handling: the only place a clear PAN is turned into something safe to keep.

A PAN never leaves the card-reading code in clear.  What travels and is stored is
a *token* (a keyed hash: HMAC-SHA-256 under the operator's token key, so the same
card gives the same token at every validator of one operator, and nobody without
the key can test a guessed PAN) and a *mask* (first 6 and last 4 digits at most).
"""

from __future__ import annotations

import hmac

TOKEN_BYTES = 16


class PanError(ValueError):
    """A PAN that is not 12 to 19 decimal digits."""


def normalize_pan(pan: str | bytes) -> str:
    """Digits of a PAN given as text or as BCD bytes from tag 5A (F padding removed)."""
    text = pan.hex().upper() if isinstance(pan, bytes) else pan.strip()
    text = text.rstrip("F")
    if not (12 <= len(text) <= 19 and text.isdigit()):
        # Never echo the value: it may be a real PAN.
        raise PanError(f"PAN must be 12-19 digits (got {len(text)} characters)")
    return text


def mask_pan(pan: str | bytes) -> str:
    """First 6 and last 4 digits, the rest as '*' (PCI DSS display rule)."""
    digits = normalize_pan(pan)
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def pan_token(pan: str | bytes, key: bytes) -> str:
    """Stable keyed token of a PAN (hex of 16 bytes of HMAC-SHA-256)."""
    if len(key) < 16:
        raise ValueError("token key must be at least 16 bytes")
    digits = normalize_pan(pan)
    # hmac.digest is the one-shot C path (about 3x faster than hmac.new per call).
    return hmac.digest(key, digits.encode("ascii"), "sha256")[:TOKEN_BYTES].hex()


def _luhn_sum(digits: str, double_first: bool) -> int:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if (i % 2 == 0) == double_first:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total


def luhn_ok(pan: str) -> bool:
    """True when the Luhn check digit of a PAN is right."""
    return _luhn_sum(pan, double_first=False) % 10 == 0


def with_luhn_digit(body: str) -> str:
    """``body`` followed by its Luhn check digit (for making test PANs)."""
    return body + str((10 - _luhn_sum(body, double_first=True) % 10) % 10)
