"""One protocol for application-cryptogram schemes (3DES and SM4).

The card computes ARQC/TC/AAC with it, the issuer verifies ARQCs and produces
ARPCs with it; both find the scheme by the name a card profile states.
"""

from __future__ import annotations

import importlib
from typing import Protocol

_IMPLEMENTATIONS = {"tdes": "emv.crypto.tdes", "sm4": "emv.crypto.sm4ac"}


class CryptogramScheme(Protocol):
    """Key derivation and MACs of one application-cryptogram scheme."""

    name: str

    def derive_card_key(self, issuer_master_key: bytes, pan: str, psn: str) -> bytes:
        """Card (ICC) master key from the issuer master key and PAN + PAN sequence number."""
        ...

    def derive_session_key(self, card_key: bytes, atc: int) -> bytes:
        """Per-transaction session key from the card key and the ATC."""
        ...

    def generate_ac(self, session_key: bytes, data: bytes) -> bytes:
        """The 8-byte application cryptogram over the transaction data."""
        ...

    def generate_arpc(self, session_key: bytes, arqc: bytes, arc: bytes) -> bytes:
        """The 8-byte authorisation response cryptogram for an ARQC and a response code."""
        ...


_SCHEMES: dict[str, CryptogramScheme] = {}


def register(scheme: CryptogramScheme) -> CryptogramScheme:
    """Make a scheme findable by its name (called by the modules that implement one)."""
    _SCHEMES[scheme.name] = scheme
    return scheme


def scheme(name: str) -> CryptogramScheme:
    """The scheme a card profile names (``"tdes"`` or ``"sm4"``)."""
    # Importing the implementations registers them; done here so callers need one import.
    if name not in _SCHEMES and name in _IMPLEMENTATIONS:
        importlib.import_module(_IMPLEMENTATIONS[name])
    try:
        return _SCHEMES[name]
    except KeyError:
        known = ", ".join(sorted(set(_SCHEMES) | set(_IMPLEMENTATIONS)))
        raise ValueError(f"unknown cryptogram scheme {name!r} (known: {known})") from None
