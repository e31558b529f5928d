"""wire.signing: only downlink messages signed by a trusted back-office key open."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from wire import (
    DenyListDelta,
    DenyListSnapshot,
    Reason,
    Signed,
    Signer,
    Verifier,
    WireError,
    encode,
    generate_signing_key,
    key_id_of,
)
from wire.signing import (
    SIGNING_CONTEXT,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
)

T0 = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
SNAP = DenyListSnapshot(version=3, issued_at=T0, tokens=["ab" * 16])
KEY = generate_signing_key()
SIGNER = Signer(KEY)
VERIFIER = Verifier(KEY.public_key())


def refused(payload: bytes, expect: type = DenyListSnapshot,
            verifier: Verifier = VERIFIER) -> Reason:
    with pytest.raises(WireError) as info:
        verifier.open(payload, expect)
    return info.value.reason


def test_signed_snapshot_opens() -> None:
    assert VERIFIER.open(SIGNER.sign(SNAP), DenyListSnapshot) == SNAP


def test_unsigned_snapshot_is_refused_as_unsigned() -> None:
    assert refused(encode(SNAP)) is Reason.UNSIGNED


def test_tampered_body_fails_the_signature() -> None:
    env = msgspec.msgpack.decode(SIGNER.sign(SNAP), type=Signed)
    evil = DenyListSnapshot(version=3, issued_at=T0, tokens=[])  # "clear the deny list"
    forged = Signed(key_id=env.key_id, body=encode(evil), signature=env.signature)
    assert refused(encode(forged)) is Reason.BAD_SIGNATURE


def test_signature_without_the_context_prefix_does_not_verify() -> None:
    body = encode(SNAP)
    bare = Signed(key_id=SIGNER.key_id, body=body, signature=KEY.sign(body))
    assert refused(encode(bare)) is Reason.BAD_SIGNATURE
    good = Signed(key_id=SIGNER.key_id, body=body, signature=KEY.sign(SIGNING_CONTEXT + body))
    assert VERIFIER.open(encode(good), DenyListSnapshot) == SNAP


def test_other_key_under_the_trusted_id_fails() -> None:
    impostor = Signer(generate_signing_key(), key_id=SIGNER.key_id)
    assert refused(impostor.sign(SNAP)) is Reason.BAD_SIGNATURE


def test_untrusted_key_id() -> None:
    assert refused(Signer(generate_signing_key()).sign(SNAP)) is Reason.UNKNOWN_KEY


def test_signed_message_of_the_wrong_kind() -> None:
    assert refused(SIGNER.sign(SNAP), DenyListDelta) is Reason.WRONG_KIND


def test_key_rotation_trusts_both_keys() -> None:
    new = generate_signing_key()
    both = Verifier({key_id_of(KEY.public_key()): KEY.public_key(),
                     key_id_of(new.public_key()): new.public_key()})
    assert both.open(Signer(new).sign(SNAP), DenyListSnapshot) == SNAP
    assert both.open(SIGNER.sign(SNAP), DenyListSnapshot) == SNAP


def test_pem_round_trip_and_bad_pem() -> None:
    again = load_private_key(private_key_pem(KEY))
    assert key_id_of(again.public_key()) == SIGNER.key_id
    assert key_id_of(load_public_key(public_key_pem(KEY.public_key()))) == SIGNER.key_id
    with pytest.raises(WireError, match="not a PEM public key"):
        load_public_key(b"-----BEGIN NOTHING-----", "deny.pem")
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(WireError, match="not an Ed25519"):
        load_public_key(ec_pem, "deny.pem")
