"""SM3 (GM/T 0004) as a one-call helper over ``cryptography``'s implementation."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

SM3_DIGEST_SIZE = 32


def sm3(data: bytes) -> bytes:
    """The 32-byte SM3 digest of ``data``."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()
