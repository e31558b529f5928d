"""Purchase TACs recomputed fast: one cipher context per card's TAC key, reused.

The TAC of a purchase (JR/T 0025.2 ED/EP, JT/T 978; ``emv.epurse.keys.purchase_tac`` is the
clear reference and the tests hold this module equal to it) is a CBC-MAC, zero IV,
ISO 9797-1 method 2 padding, left 4 bytes, over

    amount 4 || 06 || PSAM terminal id 6 || PSAM serial 4 || date 4 || time 3   (22 bytes)

under the card's TAC key DTK (diversified from the issuer's TAC master key by the card
number); 3DES cards MAC with single DES under DTK's left half xor right half, SM4 cards with
SM4 under DTK.  What makes it fast: one ECB context per issuer master key diversifies every
card's key (one call); a card's key is diversified once and kept as a live CBC context (a
card rides several times a day), and a verification is one call on it (``TacVerifier``).
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.utils import CryptographyDeprecationWarning

from emv.epurse import keys
from emv.epurse.issuers import IssuerRegistry

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    try:  # cryptography >= 43 keeps TripleDES in the decrepit module
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - older cryptography
        TripleDES = algorithms.TripleDES  # type: ignore[misc]

_TDES, _SM4 = keys.ALGORITHM_IDS["tdes"], keys.ALGORITHM_IDS["sm4"]


try:  # what Cipher(...).encryptor() calls once its checks pass (they cost a third of a card)
    from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

    _create: Callable[[Any, Any], CipherContext] = _rust_openssl.ciphers.create_encryption_ctx
except (ImportError, AttributeError):  # pragma: no cover - another cryptography layout
    def _create(algorithm: Any, mode: Any) -> CipherContext:
        return Cipher(algorithm, mode).encryptor()

_ONES = 2**64 - 1
_CBC = {8: modes.CBC(bytes(8)), 16: modes.CBC(bytes(16))}  # zero IV, shared (immutable)


def _encryptor(algorithm_id: int, key: bytes, mode: modes.Mode) -> CipherContext:
    """SM4 under a 16-byte key; 3DES under 16 bytes (K1 K2 K1) or single DES under 8 (as
    3DES K K K).  Modes are the checked ones above (ECB, CBC with a whole-block IV)."""
    if algorithm_id == _SM4:
        return _create(algorithms.SM4(key), mode)
    return _create(TripleDES(key + key[:8] if len(key) == 16 else key * 3), mode)


class TacVerifier:
    """Recomputes purchase TACs; remembers up to ``cards`` cards' cipher contexts.
    ``issuers``: where ``verify`` finds the TAC master keys."""

    def __init__(self, issuers: IssuerRegistry | None = None, cards: int = 1 << 20) -> None:
        self._issuers = issuers
        self._cards = cards
        # A card's TAC key as a live CBC context, and the last block it produced: CBC chains
        # across update calls, and XOR-ing the next message's first block with that block
        # makes the chaining value zero again, so one update call MACs a whole message.
        # Keyed by "issuer:version:algorithm:card number" (strings: the garbage collector
        # has fewer objects to walk than with tuples or a small class per card).
        self._ctx: dict[str, CipherContext] = {}
        self._last: dict[str, int] = {}
        self._masters: dict[tuple[bytes, int], CipherContext] = {}

    def _card(self, slot: str, master: bytes, algorithm_id: int,
              card_number: str) -> CipherContext:
        """Diversify a card's TAC key (``keys.diversify`` + ``keys.tac_mac_key``, written
        out) and keep it as a live CBC context."""
        diversifier = self._masters.get((master, algorithm_id))
        if diversifier is None:
            if algorithm_id not in (_TDES, _SM4):
                raise keys.EpurseKeyError(f"unknown e-purse algorithm {algorithm_id:02X}")
            if len(master) != keys.KEY_SIZE:
                raise keys.EpurseKeyError(f"master key must be {keys.KEY_SIZE} bytes")
            # ECB on purpose: key diversification encrypts independent blocks.
            diversifier = self._masters[(master, algorithm_id)] = _encryptor(
                algorithm_id, master, modes.ECB())  # noqa: S305
        if not (len(card_number) >= 16 and card_number.isascii() and card_number.isdigit()):
            raise keys.EpurseKeyError("card number for key diversification must be at least "
                                      "16 digits")
        d = int(card_number[-16:], 16)  # its rightmost 16 digits, as 8 bytes BCD
        # DTK = E(MK, D) || E(MK, not D) (3DES), SM4(MK, D || not D): one ECB call either way.
        dtk = diversifier.update((d << 64 | d ^ _ONES).to_bytes(16, "big"))
        if len(self._ctx) >= self._cards:
            oldest = next(iter(self._ctx))
            del self._ctx[oldest], self._last[oldest]
        if algorithm_id == _SM4:
            ctx = _create(algorithms.SM4(dtk), _CBC[16])
        else:  # single DES under DTK's left half xor right half (as 3DES K K K)
            folded = (int.from_bytes(dtk[:8], "big") ^ int.from_bytes(dtk[8:], "big"))
            ctx = _create(TripleDES(folded.to_bytes(8, "big") * 3), _CBC[8])
        self._ctx[slot] = ctx
        self._last[slot] = 0
        return ctx

    def tac(self, master: bytes, issuer_id: str, key_version: int, algorithm_id: int,
            card_number: str, amount: int, psam_id: bytes, psam_serial: int,
            when: bytes) -> bytes:
        """The 4-byte TAC the genuine card gives for this purchase.  (Cards are filed by
        issuer, key slot and number: one issuer id, one master key per slot.)"""
        slot = f"{issuer_id}:{key_version}:{algorithm_id}:{card_number}"
        ctx = self._ctx.get(slot)
        if ctx is None:
            ctx = self._card(slot, master, algorithm_id, card_number)
        # amount 4 || 06 || PSAM 6 || serial 4 || date-time 7 || 80 || zeros to the block
        return self._mac(slot, ctx, algorithm_id, amount,
                         psam_id + psam_serial.to_bytes(4, "big") + when + b"\x80")

    def verify(self, issuer_id: str, key_version: int, algorithm_id: int, card_number: str,
               amount: int, psam_id: str, psam_serial: int, when: str, tac: str) -> str | None:
        """None when ``tac`` (hex) is the genuine card's for this purchase (PSAM id and
        date-time digits in hex/BCD text, as records keep them); else why not:
        ``unknown-issuer``, ``unknown-key`` or ``tac-invalid``."""
        slot = f"{issuer_id}:{key_version}:{algorithm_id}:{card_number}"
        ctx = self._ctx.get(slot)
        if ctx is None:
            issuer = None if self._issuers is None else self._issuers.get(issuer_id)
            if issuer is None:
                return "unknown-issuer"
            master = issuer.tac_keys.get((key_version, algorithm_id))
            if master is None:
                return "unknown-key"
            ctx = self._card(slot, master, algorithm_id, card_number)
        tail = bytes.fromhex(f"{psam_id}{psam_serial:08X}{when}80")
        ok = hmac.compare_digest(self._mac(slot, ctx, algorithm_id, amount, tail),
                                 bytes.fromhex(tac))
        return None if ok else "tac-invalid"


    def _mac(self, slot: str, ctx: CipherContext, algorithm_id: int, amount: int,
             tail: bytes) -> bytes:
        """The TAC: ``tail`` is the message after amount || 06, with the 80 pad byte."""
        if len(tail) != 18:
            raise keys.EpurseKeyError("PSAM id 6 bytes, serial 4, date-time 7")
        last = self._last[slot]
        if algorithm_id == _SM4:
            head = (amount << 96 | 0x06 << 88 | int.from_bytes(tail[:11], "big")) ^ last
            out = ctx.update(head.to_bytes(16, "big") + tail[11:] + bytes(9))
        else:
            first = (amount << 32 | 0x06 << 24 | int.from_bytes(tail[:3], "big")) ^ last
            out = ctx.update(first.to_bytes(8, "big") + tail[3:] + b"\x00")
        self._last[slot] = int.from_bytes(out[16:], "big")
        return out[16:20]
