"""Data both ends of a tap must lay out the same way: the card computing its
application cryptogram, the issuer verifying it, and the kernel reading it.

The layouts are tapsim's, modelled on UnionPay/PBOC CVN 01 and Visa CVN 10:

* AC input = 9F02 || 9F03 || 9F1A || 95 || 5F2A || 9A || 9C || 9F37 (the terminal's
  values, as sent in the PDOL or CDOL1) || 82 AIP || 9F36 ATC || CVR (4 bytes of IAD).
* IAD (9F10), 8 bytes = 07 (length of the part below) || DKI || CVN || CVR(4) ||
  algorithm indicator (00 3DES, 04 SM4).  The issuer reads the CVN and algorithm
  from it so a mixed fleet of 3DES and SM4 cards needs no other hint.
"""

from __future__ import annotations

from dataclasses import dataclass

# The terminal data the cryptogram covers, in order (tag, length).
AC_TERMINAL_DATA: tuple[tuple[int, int], ...] = (
    (0x9F02, 6), (0x9F03, 6), (0x9F1A, 2), (0x95, 5), (0x5F2A, 2),
    (0x9A, 3), (0x9C, 1), (0x9F37, 4),
)
AC_TERMINAL_TAGS = tuple(t for t, _ in AC_TERMINAL_DATA)

CID_AAC, CID_TC, CID_ARQC = 0x00, 0x40, 0x80
ALGORITHM_TDES, ALGORITHM_SM4 = 0x00, 0x04
CVN_TDES, CVN_SM4 = 0x01, 0x17


class AppDataError(ValueError):
    """Card data that does not follow the layouts above."""


def ac_terminal_data(values: dict[int, bytes]) -> bytes:
    """The terminal part of the AC input, from values by tag (missing or short -> error)."""
    parts = []
    for tag, length in AC_TERMINAL_DATA:
        value = values.get(tag)
        if value is None or len(value) != length:
            raise AppDataError(f"AC input needs tag {tag:X} of {length} bytes")
        parts.append(value)
    return b"".join(parts)


def ac_input(terminal_data: bytes, aip: bytes, atc: int, cvr: bytes) -> bytes:
    """The full AC input the card MACs and the issuer recomputes."""
    return terminal_data + aip + atc.to_bytes(2, "big") + cvr


@dataclass(frozen=True)
class IssuerApplicationData:
    dki: int
    cvn: int
    cvr: bytes
    algorithm: int

    def to_bytes(self) -> bytes:
        return bytes((0x07, self.dki, self.cvn)) + self.cvr + bytes((self.algorithm,))

    @classmethod
    def parse(cls, raw: bytes) -> IssuerApplicationData:
        if len(raw) < 8 or raw[0] != 0x07:
            raise AppDataError(f"IAD of {len(raw)} bytes is not the 07-led tapsim layout")
        return cls(dki=raw[1], cvn=raw[2], cvr=bytes(raw[3:7]), algorithm=raw[7])


def bcd_amount(value: bytes) -> int:
    """A numeric (n12) amount: BCD digits to int; non-decimal nibbles raise AppDataError."""
    text = value.hex()
    if not text.isdigit():
        raise AppDataError("amount is not BCD")
    return int(text or "0")


def amount_bcd(amount: int, length: int = 6) -> bytes:
    if amount < 0:
        raise AppDataError("amounts are not negative")
    text = f"{amount:0{length * 2}d}"
    if len(text) > length * 2:
        raise AppDataError(f"amount {amount} does not fit {length} BCD bytes")
    return bytes.fromhex(text)
