"""TEST ONLY SM2 keys shipped with tapsim, so the virtual card, the kernel and the tests share
one SM2 certificate chain: a test CA, a test issuer and a test ICC key.

Their private keys are public (in the source tree): nothing they sign has any security, and
they are not UnionPay's or any scheme's test keys.  Files: emv/crypto/testkeys/sm2_*.json;
regenerate with scripts/make_sm2_test_keys.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Literal

from emv.crypto.errors import CryptoInputError

WARNING = "TEST ONLY - tapsim simulator key, public in the source tree: never use it for real."
SM2_TEST_CA_RID = bytes.fromhex("A000000333")
"""UnionPay's RID: the test SM2 CA answers for QuickPass AIDs (A000000333...)."""
SM2_TEST_CA_INDEX = 0xF2
"""CA public key index (tag 8F) of the SM2 test CA (the RSA test CA is F1)."""

Role = Literal["ca", "issuer", "icc"]


@dataclass(frozen=True)
class Sm2TestKey:
    """One TEST ONLY SM2 key pair (private 32 bytes, public X||Y 64 bytes)."""

    role: Role
    private_key: bytes = field(repr=False)
    public_key: bytes


@cache
def sm2_test_key(role: Role) -> Sm2TestKey:
    """Load a shipped TEST ONLY key.  That its two halves belong together is checked by the
    test suite (tests/test_crypto_sm2_certs.py), not here: deriving the public half costs
    every process ~5 ms a key."""
    name = f"sm2_{role}.json"
    path = resources.files("emv.crypto").joinpath("testkeys").joinpath(name)
    text = path.read_text(encoding="utf-8")
    record = json.loads(text)
    private_key = bytes.fromhex(record["private_key"])
    public_key = bytes.fromhex(record["public_key"])
    if record.get("role") != role or len(private_key) != 32 or len(public_key) != 64:
        raise CryptoInputError(f"testkeys/{name}: not the {role} key pair")
    return Sm2TestKey(role, private_key, public_key)


def sm2_test_ca() -> Sm2TestKey:
    """The TEST ONLY SM2 CA key (RID A000000333, index F2)."""
    return sm2_test_key("ca")


def sm2_test_issuer() -> Sm2TestKey:
    """The TEST ONLY SM2 issuer key."""
    return sm2_test_key("issuer")


def sm2_test_icc() -> Sm2TestKey:
    """The TEST ONLY SM2 ICC key (the virtual card's fDDA key)."""
    return sm2_test_key("icc")
