"""SM4 (GM/T 0002) block helpers over ``cryptography``: raw ECB and the CBC-MAC EMV-style MACs use.

Only what the card's key derivation and MACs need: no general-purpose encryption modes.
ECB is used on purpose (key derivation encrypts single, independent blocks).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from emv.crypto.errors import CryptoInputError

SM4_BLOCK = 16
SM4_KEY_SIZE = 16
_ZERO_IV = bytes(SM4_BLOCK)


def _check(key: bytes, data: bytes, what: str) -> None:
    if len(key) != SM4_KEY_SIZE:
        raise CryptoInputError(f"{what}: SM4 key must be 16 bytes (got {len(key)})")
    if len(data) % SM4_BLOCK:
        raise CryptoInputError(
            f"{what}: data must be a multiple of 16 bytes (got {len(data)}); pad it first"
        )


def sm4_ecb_encrypt(key: bytes, data: bytes) -> bytes:
    """Encrypt whole 16-byte blocks independently (no padding)."""
    _check(key, data, "sm4_ecb_encrypt")
    encryptor = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()  # noqa: S305
    return encryptor.update(data) + encryptor.finalize()


def sm4_ecb_decrypt(key: bytes, data: bytes) -> bytes:
    """Decrypt whole 16-byte blocks independently (no padding)."""
    _check(key, data, "sm4_ecb_decrypt")
    decryptor = Cipher(algorithms.SM4(key), modes.ECB()).decryptor()  # noqa: S305
    return decryptor.update(data) + decryptor.finalize()


def pad_iso9797_m2(data: bytes, block: int = SM4_BLOCK) -> bytes:
    """ISO/IEC 9797-1 padding method 2: append 80, then 00 up to a whole block (always pads)."""
    padded = data + b"\x80"
    return padded + bytes(-len(padded) % block)


def sm4_cbc_mac(key: bytes, data: bytes, iv: bytes = _ZERO_IV) -> bytes:
    """The last 16-byte block of SM4-CBC over already padded ``data`` (ISO 9797-1 MAC alg. 1)."""
    _check(key, data, "sm4_cbc_mac")
    if not data:
        raise CryptoInputError("sm4_cbc_mac: data is empty")
    if len(iv) != SM4_BLOCK:
        raise CryptoInputError(f"sm4_cbc_mac: IV must be 16 bytes (got {len(iv)})")
    encryptor = Cipher(algorithms.SM4(key), modes.CBC(iv)).encryptor()
    return (encryptor.update(data) + encryptor.finalize())[-SM4_BLOCK:]
