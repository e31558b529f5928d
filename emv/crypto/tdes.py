"""The ``"tdes"`` application-cryptogram scheme: EMV Book 2 Annex A with double-length 3DES.

Layout (what a card with this scheme computes, and an issuer checks):

* card key: ICC master key, EMV Option A (Book 2 A1.4.1): ``X`` = rightmost 16 digits of
  PAN || PSN (left-padded with 0), key = 3DES-ECB(IMK, X || X xor FF..FF), odd parity;
* session key: EMV common session key derivation (Book 2 A1.3.1) with
  ``R = ATC || 00 00 00 00 00 00``, i.e. 3DES-ECB(card key, ATC || F0 00 00 00 00 00 ||
  ATC || 0F 00 00 00 00 00), odd parity;
* AC (ARQC / TC / AAC): ISO/IEC 9797-1 MAC algorithm 3 (single-DES CBC, 3DES last block)
  over the transaction data with padding method 2 (``80 00..``), 8 bytes, as EMV CVN 18 does;
* ARPC: method 1 (Book 2 8.2.1): 3DES(session key, ARQC xor (ARC || 00 x 6)), ARC 2 bytes.

The card key is ``pyemv``'s arithmetic; this module fixes the choices above and checks inputs
so a bad one fails with a typed error saying which argument is wrong (never echoing key or PAN).

The three per-transaction steps (session key, AC, ARPC) run for every cryptogram an issuer
checks or a card makes, and pyemv spends most of their time in Python around the cipher
(parity by a loop over bits, its key checks and padding on every call): about 34 us for a
session key and a 29-byte AC with pyemv, 15 us for the same arithmetic written straight onto
``cryptography``'s 3DES here (one cipher per step, parity by a 256-byte table; timeit on this
project's 2-core machine, 2026-12-08).  pyemv
stays the reference: ``tests/test_crypto_tdes_pyemv.py`` holds these to its results for random
keys, counters and data, besides the published vectors in ``tests/test_crypto_tdes.py``.
"""

from __future__ import annotations

import warnings

from cryptography.hazmat.backends import default_backend
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES as _TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers import algorithms as _deprecated_location
from cryptography.utils import CryptographyDeprecationWarning
from pyemv import kd as _kd
from pyemv import mac as _mac
from pyemv import tools as _tools

from emv.crypto.cryptogram import register
from emv.pan import PanError, normalize_pan

# pyemv builds its ciphers with cryptography's TripleDES from the old location, and EMV keys are
# two-key 3DES by definition: both draw a deprecation warning on every call that we cannot act
# on here.  Silence exactly those, from pyemv only.
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"pyemv\.")


class _PyemvAlgorithms:
    """The one name pyemv reads from ``cryptography``'s cipher algorithms, without the warnings.

    pyemv asks for ``algorithms.TripleDES(key)`` with 8- or 16-byte keys.  Through the old
    module path every such call raises two deprecation warnings (the moved class, the short
    key) and runs them through the warning filters: about a third of a MAC's time, twice per
    cryptogram.  This hands pyemv the same cipher, the relocated class with the key written
    out to its 24-byte form (K1 K2 K1 for two keys, K K K for one: what ``cryptography``
    does itself), so nothing is warned.  pyemv's own arithmetic is untouched.  Likewise
    pyemv asks ``default_backend()`` (an import statement per call) for the one backend
    object on each cipher: it is handed that object.
    """

    __slots__ = ()

    @staticmethod
    def TripleDES(key: bytes) -> _TripleDES:  # noqa: N802 - the name pyemv looks up
        n = len(key)
        if n == 16:
            key = key + key[:8]
        elif n == 8:
            key = key * 3
        return _TripleDES(key)


_BACKEND = default_backend()


def _the_backend() -> object:
    """``default_backend()`` without its import statement on every call (one object)."""
    return _BACKEND


for _module in (_tools, _mac):  # only where pyemv reads ciphers the way we expect
    if getattr(_module, "_algorithms", None) is _deprecated_location:
        _module._algorithms = _PyemvAlgorithms()  # type: ignore[attr-defined]
    if getattr(_module, "_default_backend", None) is default_backend:
        _module._default_backend = _the_backend  # type: ignore[attr-defined]

KEY_BYTES = 16
AC_BYTES = 8
ARC_BYTES = 2
MAX_ATC = 0xFFFF

_ECB = modes.ECB()  # noqa: S305 - single independent blocks, as the EMV steps define them
_ZERO_IV_CBC = modes.CBC(bytes(8))  # modes are immutable: one object serves every MAC
# Each byte with its lowest bit set so that the byte has an odd number of 1 bits (DES key
# parity, what pyemv's adjust_key_parity does bit by bit).
_ODD_PARITY = bytes((b & 0xFE) | ((bin(b & 0xFE).count("1") + 1) & 1) for b in range(256))


def _tdes_ecb(key24: bytes, block: bytes) -> bytes:
    """3DES-ECB of whole blocks under a 24-byte key (K1 K2 K3)."""
    return Cipher(_TripleDES(key24), _ECB).encryptor().update(block)


def _mac_algorithm_3(key: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3, padding method 2, K1 = key[:8], K2 = key[8:]: single-DES
    CBC under K1 over all blocks but the last, then 3DES (K1 K2 K1) of the last block xor that
    chain (the same as DES_K1(DES^-1_K2(H_q)) after the single-DES CBC over every block)."""
    padded = data + b"\x80" + bytes(-(len(data) + 1) % 8)
    k1 = key[:8]
    last = padded[-8:]
    if len(padded) > 8:
        chain = Cipher(_TripleDES(k1 * 3), _ZERO_IV_CBC).encryptor()
        h = chain.update(padded[:-8])[-8:]
        last = (int.from_bytes(h, "big") ^ int.from_bytes(last, "big")).to_bytes(8, "big")
    return _tdes_ecb(key + k1, last)


class TdesInputError(ValueError):
    """An argument of the 3DES scheme with the wrong length or range (message names it)."""


def _check_key(what: str, key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise TdesInputError(
            f"{what} must be {KEY_BYTES} bytes (double-length 3DES), got {len(key)}"
        )


class TdesScheme:
    """EMV Option A card keys, common session keys, MAC algorithm 3 ACs, ARPC method 1.

    Stateless and frozen: ``__slots__ = ()`` leaves no instance attribute to set, and
    ``name`` is a read-only class default (a frozen dataclass field would not satisfy the
    protocol's plain ``name: str`` under mypy).
    """

    __slots__ = ()
    name: str = "tdes"

    def derive_card_key(self, issuer_master_key: bytes, pan: str, psn: str) -> bytes:
        """ICC master key (Option A) from the issuer master key, the PAN and the PSN (5F34)."""
        _check_key("issuer master key", issuer_master_key)
        try:
            digits = normalize_pan(pan)
        except PanError as exc:
            raise TdesInputError(f"PAN for card key derivation: {exc}") from None
        if not (1 <= len(psn) <= 2 and psn.isdigit() and psn.isascii()):
            raise TdesInputError(
                f"PAN sequence number must be 1-2 digits, got {len(psn)} characters"
            )
        return _kd.derive_icc_mk_a(issuer_master_key, digits, psn.zfill(2))

    def derive_session_key(self, card_key: bytes, atc: int) -> bytes:
        """Common session key for one ATC (R = ATC || 00 x 6)."""
        _check_key("card key", card_key)
        if not 0 <= atc <= MAX_ATC:
            raise TdesInputError(f"ATC must be 0..{MAX_ATC}, got {atc}")
        r = atc.to_bytes(2, "big")
        blocks = r + b"\xf0\x00\x00\x00\x00\x00" + r + b"\x0f\x00\x00\x00\x00\x00"
        return _tdes_ecb(card_key + card_key[:8], blocks).translate(_ODD_PARITY)

    def generate_ac(self, session_key: bytes, data: bytes) -> bytes:
        """8-byte AC: ISO 9797-1 MAC algorithm 3, padding method 2."""
        _check_key("session key", session_key)
        return _mac_algorithm_3(session_key, data)

    def generate_arpc(self, session_key: bytes, arqc: bytes, arc: bytes) -> bytes:
        """8-byte ARPC, method 1, over the ARQC and the 2-byte authorisation response code."""
        _check_key("session key", session_key)
        if len(arqc) != AC_BYTES:
            raise TdesInputError(f"ARQC must be {AC_BYTES} bytes, got {len(arqc)}")
        if len(arc) != ARC_BYTES:
            raise TdesInputError(f"ARC must be {ARC_BYTES} bytes, got {len(arc)}")
        mixed = int.from_bytes(arqc, "big") ^ (int.from_bytes(arc, "big") << 48)
        return _tdes_ecb(session_key + session_key[:8], mixed.to_bytes(8, "big"))


TDES = register(TdesScheme())
"""The registered instance; ``cryptogram.scheme("tdes")`` returns it."""
