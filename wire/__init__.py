"""Versioned messages between validators and the back office (see wire/README.md).

Imports nothing of tapsim's: the validator and the back office share only this.
"""

from wire.codec import SIZE_LIMITS, decode, encode, kind_of
from wire.errors import Reason, WireError
from wire.messages import (
    Action,
    CommitAck,
    DenyListDelta,
    DenyListSnapshot,
    Downlink,
    FareTableVersion,
    Message,
    Method,
    Signed,
    TapOutcome,
    TapRecord,
)
from wire.signing import Signer, Verifier, generate_signing_key, key_id_of
from wire.versioning import check_delta, check_fare_version, check_snapshot

__all__ = [
    "SIZE_LIMITS", "Action", "CommitAck", "DenyListDelta", "DenyListSnapshot", "Downlink",
    "FareTableVersion",
    "Message", "Method", "Reason", "Signed", "Signer", "TapOutcome", "TapRecord", "Verifier",
    "WireError",
    "check_delta", "check_fare_version", "check_snapshot", "decode", "encode",
    "generate_signing_key", "key_id_of", "kind_of",
]
