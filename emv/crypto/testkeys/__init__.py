"""TEST ONLY RSA keys for the international suite: a test CA, an issuer and an ICC key.

They are public (shipped in the source tree, see README.txt) and exist so the virtual card,
the kernel and the tests share one certificate chain.  Regenerate with
``scripts/make_test_keys.py``.  Loaded through importlib.resources, once per process.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from emv.crypto.rsa_certs import CaKeyTable, RsaPrivateKey

TEST_CA_RID = bytes.fromhex("A000000333")
"""UnionPay's RID: the test CA answers for QuickPass AIDs (A000000333...)."""
TEST_CA_INDEX = 0xF1
"""CA public key index (tag 8F) the test cards name."""

KEY_SIZES = {"ca": 1152, "issuer": 1024, "icc": 1024}
"""Modulus bits per role; ICC <= issuer <= CA as EMV Book 2 requires."""
KEY_FILES = {"ca": "test_ca_a000000333_f1.pem", "issuer": "test_issuer.pem", "icc": "test_icc.pem"}


@cache
def _load(role: str) -> RsaPrivateKey:
    # Unchecked: OpenSSL's key check would cost every process ~15 ms a key; the test suite
    # loads these files checked (tests/test_crypto_rsa.py).
    data = resources.files(__name__).joinpath(KEY_FILES[role]).read_bytes()
    return RsaPrivateKey.from_pem(data, check=False)


def ca_key() -> RsaPrivateKey:
    """The TEST ONLY CA private key (RID A000000333, index F1), RSA-1152, exponent 3."""
    return _load("ca")


def issuer_key() -> RsaPrivateKey:
    """The TEST ONLY issuer private key, RSA-1024, exponent 3."""
    return _load("issuer")


def icc_key() -> RsaPrivateKey:
    """The TEST ONLY ICC private key, RSA-1024, exponent 3 (the fDDA signer of test cards)."""
    return _load("icc")


def ca_table() -> CaKeyTable:
    """A terminal CA key table holding only the test CA's public key."""
    return CaKeyTable.of([(TEST_CA_RID, TEST_CA_INDEX, ca_key().public)])
