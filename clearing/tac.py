"""Purchase TACs recomputed fast: one cipher context per card's TAC key, reused.

The TAC of a purchase (JR/T 0025.2 ED/EP, JT/T 978; ``emv.epurse.keys.purchase_tac`` is the
clear reference and the tests hold this module equal to it) is a CBC-MAC, zero IV,
ISO 9797-1 method 2 padding, left 4 bytes, over

    amount 4 || 06 || PSAM terminal id 6 || PSAM serial 4 || date 4 || time 3   (22 bytes)

under the card's TAC key DTK (diversified from the issuer's TAC master key by the card
number); 3DES cards MAC with single DES under DTK's left half xor right half, SM4 cards with
SM4 under DTK.  What makes it fast: diversifying a card's key once (a card rides many times
a day) and keeping one ECB encryptor per card key, doing CBC by hand (an xor per block), so
a verification is three DES block calls or two SM4 block calls, no context set-up.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.utils import CryptographyDeprecationWarning

from emv.epurse import keys

with warnings.catch_warnings():
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    try:  # cryptography >= 43 keeps TripleDES in the decrepit module
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - older cryptography
        TripleDES = algorithms.TripleDES  # type: ignore[misc,assignment]

_TDES, _SM4 = keys.ALGORITHM_IDS["tdes"], keys.ALGORITHM_IDS["sm4"]


def _ecb(algorithm_id: int, key: bytes) -> CipherContext:
    if algorithm_id == _SM4:
        return Cipher(algorithms.SM4(key), modes.ECB()).encryptor()  # noqa: S305 - CBC by hand
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # noqa: S305 - single DES


class TacVerifier:
    """Recomputes purchase TACs; remembers up to ``cards`` cards' cipher contexts."""

    def __init__(self, cards: int = 1 << 20) -> None:
        self._cards = cards
        self._ctx: OrderedDict[tuple[bytes, str, int, int, str], CipherContext] = OrderedDict()

    def _context(self, master: bytes, issuer_id: str, key_version: int, algorithm_id: int,
                 card_number: str) -> CipherContext:
        slot = (master, issuer_id, key_version, algorithm_id, card_number)
        ctx = self._ctx.get(slot)
        if ctx is None:
            algorithm = keys.algorithm_from_id(algorithm_id)
            if algorithm is None:
                raise keys.EpurseKeyError(f"unknown e-purse algorithm {algorithm_id:02X}")
            dtk = keys.diversify(master, card_number, algorithm)
            ctx = self._ctx[slot] = _ecb(algorithm_id, keys.tac_mac_key(dtk, algorithm))
            if len(self._ctx) > self._cards:
                self._ctx.popitem(last=False)
        return ctx

    def tac(self, master: bytes, issuer_id: str, key_version: int, algorithm_id: int,
            card_number: str, amount: int, psam_id: bytes, psam_serial: int,
            when: bytes) -> bytes:
        """The 4-byte TAC the genuine card gives for this purchase."""
        ctx = self._context(master, issuer_id, key_version, algorithm_id, card_number)
        data = (amount.to_bytes(4, "big") + b"\x06" + psam_id + psam_serial.to_bytes(4, "big")
                + when + b"\x80")
        block = 16 if algorithm_id == _SM4 else 8
        data += bytes(-len(data) % block)
        update = ctx.update
        c = 0
        for i in range(0, len(data), block):
            c = int.from_bytes(update((int.from_bytes(data[i:i + block], "big") ^ c)
                                      .to_bytes(block, "big")), "big")
        return c.to_bytes(block, "big")[:keys.MAC_SIZE]
