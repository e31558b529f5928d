"""The terminal's and the card's transaction qualifiers (TTQ 9F66, CTQ 9F6C), bit by bit.

One table both sides read, so the kernel that sets a TTQ bit and the virtual card that
honours it cannot drift apart.  Bits as qPBOC (JR/T 0025.12) and Visa's qVSDC define them;
each is a (byte index, mask) pair.
"""

from __future__ import annotations

# TTQ (9F66), set by the reader in the PDOL data.
TTQ_MSD = (0, 0x80)
TTQ_QPBOC = (0, 0x20)
TTQ_CONTACT_CHIP = (0, 0x10)
TTQ_OFFLINE_ONLY = (0, 0x08)
TTQ_ONLINE_PIN = (0, 0x04)
TTQ_SIGNATURE = (0, 0x02)
TTQ_ODA_FOR_ONLINE = (0, 0x01)
TTQ_ONLINE_CRYPTOGRAM_REQUIRED = (1, 0x80)
TTQ_CVM_REQUIRED = (1, 0x40)
TTQ_ISSUER_UPDATE = (2, 0x80)

# CTQ (9F6C) bits the card answers with (byte index, mask).
CTQ_ONLINE_PIN = (0, 0x80)
CTQ_SIGNATURE = (0, 0x40)
CTQ_ISSUER_UPDATE = (1, 0x40)


def has_bit(raw: bytes, bit: tuple[int, int]) -> bool:
    """Whether ``raw`` (a TTQ or CTQ, possibly short) has the bit set."""
    return len(raw) > bit[0] and bool(raw[bit[0]] & bit[1])


def with_bits(raw: bytes, *bits: tuple[int, int]) -> bytes:
    """``raw`` with the bits set."""
    out = bytearray(raw)
    for index, mask in bits:
        out[index] |= mask
    return bytes(out)
