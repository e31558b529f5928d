"""Data Object Lists (PDOL, CDOL1/2, DDOL): parse the card's list, build the terminal's answer.

A DOL is a list of (tag, length) pairs without values; the terminal answers with
the concatenated values, each fitted to its length by the rules of EMV Book 3
§5.4: numeric (``n``) values are padded with leading zeros and truncated on the
left; compressed numeric (``cn``) padded with trailing ``FF``; everything else
padded with trailing ``00`` and truncated on the right.  A tag the terminal does
not know is sent as zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from emv.tags import tag_format
from emv.tlv import TlvError


class DolEntry(NamedTuple):
    tag: int
    length: int


def parse_dol(data: bytes) -> list[DolEntry]:
    """The (tag, length) pairs of a DOL; malformed lists raise TlvError with the offset."""
    out: list[DolEntry] = []
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:
            while True:
                if pos >= end:
                    raise TlvError("DOL tag runs past the end", start, tag)
                b = data[pos]
                pos += 1
                tag = (tag << 8) | b
                if not b & 0x80:
                    break
                if pos - start >= 4:
                    raise TlvError("DOL tag longer than 4 bytes", start, tag)
        if pos >= end:
            raise TlvError("DOL entry has no length", start, tag)
        length = data[pos]
        pos += 1
        if length & 0x80:
            raise TlvError("DOL lengths are one byte below 128", pos - 1, tag)
        out.append(DolEntry(tag, length))
    return out


def fit(tag: int, value: bytes, length: int) -> bytes:
    """A value padded or truncated to the DOL's length by the tag's format."""
    have = len(value)
    if have == length:
        return value
    fmt = tag_format(tag)
    if fmt == "n":
        return value[have - length :] if have > length else bytes(length - have) + value
    if have > length:
        return value[:length]
    pad = b"\xff" if fmt == "cn" else b"\x00"
    return value + pad * (length - have)


def build_dol(dol: list[DolEntry], values: Mapping[int, bytes]) -> bytes:
    """The terminal's answer to a DOL from the values it has."""
    parts = []
    for tag, length in dol:
        value = values.get(tag)
        parts.append(bytes(length) if value is None else fit(tag, value, length))
    return b"".join(parts)


def split_dol_data(dol: list[DolEntry], data: bytes) -> dict[int, bytes]:
    """The card's side: cut the terminal's answer back into values by tag."""
    need = sum(e.length for e in dol)
    if len(data) != need:
        raise TlvError(f"DOL data is {len(data)} bytes, the DOL asks for {need}", 0)
    out: dict[int, bytes] = {}
    pos = 0
    for tag, length in dol:
        out[tag] = data[pos : pos + length]
        pos += length
    return out
