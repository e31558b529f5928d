"""The issuer's key store: issuer master keys and the key-encryption key, in memory only.

Card keys are derived from an issuer master key (IMK) at issuance, the one moment the
issuer sees the clear PAN, and leave this object only wrapped (RFC 3394 AES key wrap)
under the KEK: the wrapped blob may sit in a database, the clear key never does.  This is
the shape of an HSM with key blocks under its local master key, minus the hardware.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_wrap,
)

from emv.crypto.cryptogram import scheme as cryptogram_scheme
from issuer.errors import KeyStoreError
from issuer.models import WrappedKey


class KeyStore:
    """Holds IMKs by id and one KEK; derives, wraps and unwraps card keys."""

    __slots__ = ("_cache", "_imks", "_kek", "kek_id")

    def __init__(self, kek: bytes, imks: Mapping[str, bytes], kek_id: str = "kek1") -> None:
        if len(kek) not in (16, 24, 32):
            raise KeyStoreError(f"KEK must be 16, 24 or 32 bytes (AES), got {len(kek)}")
        for imk_id, imk in imks.items():
            if len(imk) != 16:
                raise KeyStoreError(f"issuer master key {imk_id!r} must be 16 bytes")
        self._kek = bytes(kek)
        self._imks = dict(imks)
        self.kek_id = kek_id
        self._cache: dict[bytes, bytes] = {}

    def __repr__(self) -> str:  # never show key material
        return f"KeyStore(kek_id={self.kek_id!r}, imks={sorted(self._imks)!r})"

    def provision(self, scheme: str, imk_id: str, pan: str, psn: str) -> WrappedKey:
        """Derive a card's key from the IMK and hand it back wrapped."""
        try:
            imk = self._imks[imk_id]
        except KeyError:
            raise KeyStoreError(f"no issuer master key {imk_id!r} in the key store") from None
        card_key = cryptogram_scheme(scheme).derive_card_key(imk, pan, psn)
        return self.wrap(card_key)

    def wrap(self, card_key: bytes) -> WrappedKey:
        if len(card_key) < 16 or len(card_key) % 8:
            raise KeyStoreError(f"card key must be 16+ bytes in 8-byte steps, got {len(card_key)}")
        blob = aes_key_wrap(self._kek, card_key)
        self._cache[blob] = card_key
        return WrappedKey(self.kek_id, blob)

    def card_key(self, wrapped: WrappedKey) -> bytes:
        """The clear card key for cryptogram checks (cached: unwrapped once per card)."""
        key = self._cache.get(wrapped.blob)
        if key is not None:
            return key
        if wrapped.kek_id != self.kek_id:
            raise KeyStoreError(
                f"card key is wrapped under {wrapped.kek_id!r}, this store holds {self.kek_id!r}"
            )
        try:
            key = aes_key_unwrap(self._kek, wrapped.blob)
        except InvalidUnwrap:
            raise KeyStoreError("card key does not unwrap under this KEK") from None
        self._cache[wrapped.blob] = key
        return key
