"""BER-TLV as EMV uses it (Book 3 Annex B), decoded into an ordered tree.

Why not ``pyemv.tlv``: it returns a dict, so a PPSE ``BF0C`` holding several
``61`` entries loses all but one, and element order (which DOL-built data and
records depend on) is gone.  Here a decoded blob is a list of :class:`Tlv`
nodes in wire order; duplicates are kept; constructed tags (bit 6 of the first
tag byte) have their children decoded.

Tags are ``int`` (``0x9F26``), which are cheap to compare and hash; ``tag_hex``
gives the usual spelling.  Malformed input raises :class:`TlvError`, which names
the byte offset (from the start of the outermost blob) and the tag being read.
Single ``00`` bytes between objects are padding and skipped (Annex B).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple


class TlvError(ValueError):
    """Malformed BER-TLV: where it went wrong (offset) and in which tag."""

    def __init__(self, message: str, offset: int, tag: int | None = None) -> None:
        self.offset = offset
        self.tag = tag
        where = f"offset {offset}" + (f", tag {tag_hex(tag)}" if tag is not None else "")
        super().__init__(f"{where}: {message}")


class Tlv(NamedTuple):
    """One data object: its tag, raw value, and (for constructed tags) the decoded children."""

    tag: int
    value: bytes
    children: tuple[Tlv, ...] | None = None

    @property
    def constructed(self) -> bool:
        return self.children is not None

    def find(self, tag: int) -> Tlv | None:
        """First descendant with this tag, depth first, in wire order."""
        return find(self.children or (), tag)

    def find_all(self, tag: int) -> list[Tlv]:
        """Every descendant with this tag, in wire order."""
        return find_all(self.children or (), tag)


def tag_hex(tag: int) -> str:
    """``0x9F26`` -> ``"9F26"``."""
    return f"{tag:X}" if tag > 0xFF or tag == 0 else f"{tag:02X}"


def is_constructed(tag: int) -> bool:
    """Bit 6 of a tag's first byte marks a constructed (template) data object."""
    first = tag
    while first > 0xFF:
        first >>= 8
    return bool(first & 0x20)


def decode(data: bytes, *, offset: int = 0) -> list[Tlv]:
    """Decode a concatenation of data objects; ``offset`` only shifts offsets in errors."""
    data = bytes(data)
    try:
        return list(_decode_fast(data, 0, len(data)))
    except (_MalformedError, IndexError):
        # Something is wrong: decode again, carefully, to say exactly what and where.
        return list(_decode_checked(data, 0, len(data), offset))


class _MalformedError(Exception):
    """Raised by the fast path; the checked path then finds and names the problem."""


_new = tuple.__new__  # builds a Tlv without the Python-level NamedTuple __new__ (hot path)


def _decode_fast(data: bytes, pos: int, end: int) -> tuple[Tlv, ...]:
    """The optimistic decoder: bounds are left to IndexError and one overrun check per object.

    Any header byte read past ``end`` makes ``pos > end``, so the single
    ``stop > end`` test also catches headers running out of a template.
    """
    out: list[Tlv] = []
    append = out.append
    new = _new
    while pos < end:
        first = tag = data[pos]
        if first & 0x1F == 0x1F:
            b = data[pos + 1]
            tag = (first << 8) | b
            pos += 2
            while b & 0x80:
                b = data[pos]
                tag = (tag << 8) | b
                pos += 1
                if tag > 0xFFFFFFFF:
                    raise _MalformedError
        elif first == 0:  # padding between objects
            pos += 1
            continue
        else:
            pos += 1
        length = data[pos]
        pos += 1
        if length > 0x7F:
            if length == 0x81:
                length = data[pos]
                pos += 1
            elif length == 0x82:
                length = (data[pos] << 8) | data[pos + 1]
                pos += 2
            else:
                raise _MalformedError
        stop = pos + length
        if stop > end:
            raise _MalformedError
        if first & 0x20:
            append(new(Tlv, (tag, data[pos:stop], _decode_fast(data, pos, stop))))
        else:
            append(new(Tlv, (tag, data[pos:stop], None)))
        pos = stop
    return tuple(out)


def _decode_checked(data: bytes, pos: int, end: int, base: int) -> tuple[Tlv, ...]:
    """The careful decoder: every read is checked and a problem raises TlvError."""
    out: list[Tlv] = []
    while pos < end:
        start = pos
        tag = data[pos]
        if tag == 0x00:  # padding between objects
            pos += 1
            continue
        pos += 1
        constructed = tag & 0x20
        if tag & 0x1F == 0x1F:  # multi-byte tag: continue while bit 8 is set
            while True:
                if pos >= end:
                    raise TlvError("tag runs past the end of the data", base + start, tag)
                b = data[pos]
                pos += 1
                tag = (tag << 8) | b
                if not b & 0x80:
                    break
                if pos - start >= 4:
                    raise TlvError("tag longer than 4 bytes", base + start, tag)
        if pos >= end:
            raise TlvError("length missing", base + start, tag)
        length = data[pos]
        pos += 1
        if length & 0x80:
            n = length & 0x7F
            if n == 0:
                raise TlvError("indefinite length is not allowed in EMV", base + pos - 1, tag)
            if n > 4:
                raise TlvError(f"length of {n} bytes is not supported", base + pos - 1, tag)
            if pos + n > end:
                raise TlvError("length field runs past the end of the data", base + pos - 1, tag)
            length = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        stop = pos + length
        if stop > end:
            raise TlvError(
                f"value of {length} bytes runs past the end of the data ({end - pos} left)",
                base + start,
                tag,
            )
        children = _decode_checked(data, pos, stop, base) if constructed else None
        out.append(Tlv(tag, data[pos:stop], children))
        pos = stop
    return tuple(out)


def encode_tag(tag: int) -> bytes:
    """The wire bytes of a tag number."""
    if tag < 0:
        raise ValueError(f"negative tag {tag}")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def encode_length(length: int) -> bytes:
    """Short form below 128, else 81..84 long form."""
    if length < 0x80:
        return bytes((length,))
    size = (length.bit_length() + 7) // 8
    if size > 4:
        raise ValueError(f"length {length} too large for BER-TLV")
    return bytes((0x80 | size,)) + length.to_bytes(size, "big")


def encode_one(tag: int, value: bytes) -> bytes:
    """One primitive (or pre-encoded constructed) data object."""
    return encode_tag(tag) + encode_length(len(value)) + value


# What ``encode`` takes: nodes, or (tag, value) pairs whose value is bytes or more of the same.
TlvSpec = Tlv | tuple[int, "bytes | Iterable[TlvSpec]"]


def encode(items: Iterable[TlvSpec]) -> bytes:
    """Encode nodes in order; a node with children re-encodes them, so edits in a tree stick."""
    parts: list[bytes] = []
    for item in items:
        if isinstance(item, Tlv):
            value: bytes = encode(item.children) if item.children is not None else item.value
            parts.append(encode_one(item.tag, value))
        else:
            tag, content = item
            if isinstance(content, bytes | bytearray):
                parts.append(encode_one(tag, bytes(content)))
            else:
                parts.append(encode_one(tag, encode(content)))
    return b"".join(parts)


def walk(nodes: Iterable[Tlv]) -> Iterator[Tlv]:
    """Every node, depth first, in wire order."""
    for node in nodes:
        yield node
        if node.children is not None:
            yield from walk(node.children)


def find(nodes: Iterable[Tlv], tag: int) -> Tlv | None:
    """First node with this tag anywhere in the tree."""
    for node in walk(nodes):
        if node.tag == tag:
            return node
    return None


def find_all(nodes: Iterable[Tlv], tag: int) -> list[Tlv]:
    """Every node with this tag anywhere in the tree."""
    return [node for node in walk(nodes) if node.tag == tag]


def flatten(nodes: Iterable[Tlv]) -> dict[int, bytes]:
    """Primitive values by tag, first occurrence wins (the kernel's view of card data)."""
    out: dict[int, bytes] = {}
    for node in walk(nodes):
        if node.children is None and node.tag not in out:
            out[node.tag] = node.value
    return out
