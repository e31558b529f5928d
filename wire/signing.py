"""Ed25519 signatures on downlink messages (deny list, fare table version).

The back office holds the private key and signs; every validator holds the public key
and opens what arrives.  A validator must never act on a deny-list change it cannot
attribute to the back office: anyone with broker access (a stolen validator's
credentials, a misconfigured ACL) could otherwise deny-list every card in the city or
clear the list.  Keys are named by a ``key_id`` so a rotation can overlap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from wire.codec import decode, encode, kind_of
from wire.errors import Reason, WireError
from wire.messages import DenyListDelta, DenyListSnapshot, Downlink, FareTableVersion, Signed

SIGNING_CONTEXT = b"tapsim/v1 downlink\x00"

_DOWNLINK_KINDS = frozenset(kind_of(t) for t in (DenyListSnapshot, DenyListDelta, FareTableVersion))

D = TypeVar("D", DenyListSnapshot, DenyListDelta, FareTableVersion)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A short stable name for a public key (first 8 bytes of SHA-256 of its raw form)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(pem: bytes, source: str = "key") -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise WireError(Reason.INVALID, f"{source}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise WireError(Reason.INVALID, f"{source}: not an Ed25519 private key")
    return key


def load_public_key(pem: bytes, source: str = "key") -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise WireError(Reason.INVALID, f"{source}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise WireError(Reason.INVALID, f"{source}: not an Ed25519 public key")
    return key


class Signer:
    """The back office's side: wrap a downlink message in a signed envelope."""

    def __init__(self, key: Ed25519PrivateKey, key_id: str | None = None) -> None:
        self._key = key
        self.key_id = key_id or key_id_of(key.public_key())

    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, msg: Downlink) -> bytes:
        body = encode(msg)
        signature = self._key.sign(SIGNING_CONTEXT + body)
        return encode(Signed(key_id=self.key_id, body=body, signature=signature))


class Verifier:
    """A validator's side: open a signed envelope with one of the trusted public keys."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | Ed25519PublicKey) -> None:
        if isinstance(keys, Ed25519PublicKey):
            keys = {key_id_of(keys): keys}
        if not keys:
            raise ValueError("a verifier needs at least one trusted key")
        self._keys = dict(keys)

    def open(self, payload: bytes, expect: type[D]) -> D:
        """The message inside ``payload`` if it is signed by a trusted key and of ``expect``."""
        try:
            envelope = decode(payload, Signed)
        except WireError as exc:
            if exc.reason is Reason.WRONG_KIND and exc.kind in _DOWNLINK_KINDS:
                raise WireError(Reason.UNSIGNED, f"a bare {exc.kind}: downlink must be signed") \
                    from None
            raise
        key = self._keys.get(envelope.key_id)
        if key is None:
            raise WireError(Reason.UNKNOWN_KEY, f"key id {envelope.key_id!r} is not trusted")
        try:
            key.verify(envelope.signature, SIGNING_CONTEXT + envelope.body)
        except InvalidSignature:
            raise WireError(Reason.BAD_SIGNATURE,
                            f"signature by {envelope.key_id} does not verify") from None
        msg = decode(envelope.body, expect)
        if not isinstance(msg, expect):  # decode already checks; keeps mypy exact
            raise WireError(Reason.WRONG_KIND, f"expected {kind_of(expect)}")
        return msg
