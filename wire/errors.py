"""The one error every wire decode or check raises, with a machine-readable reason.

Whoever receives a message (a validator reading its downlink, the back office reading
taps) must be able to log *why* a payload was refused and route it (dead-letter topic,
counter) without parsing prose, so the reason is a small closed set.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    TOO_LARGE = "too-large"  # payload over the size limit for its kind
    MALFORMED = "malformed"  # not MessagePack, or not the schema (field and why in detail)
    UNKNOWN_KIND = "unknown-kind"  # a tag this decoder does not know (a newer major version?)
    WRONG_KIND = "wrong-kind"  # a valid message, but not the kind this topic carries
    WRONG_TOPIC = "wrong-topic"  # a topic outside the tapsim/v1 layout
    UNSIGNED = "unsigned"  # a downlink message without the signed envelope
    UNKNOWN_KEY = "unknown-key"  # signed with a key id the receiver does not trust
    BAD_SIGNATURE = "bad-signature"  # the signature does not verify
    STALE = "stale"  # a version not newer than what the receiver holds
    GAP = "gap"  # a delta that starts after the receiver's version (needs a snapshot)
    INVALID = "invalid"  # schema-valid but inconsistent (e.g. to_version <= from_version)


class WireError(ValueError):
    """A payload refused at the wire: ``reason`` says which check, ``detail`` says where."""

    def __init__(self, reason: Reason, detail: str, kind: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.kind = kind  # for WRONG_KIND: the kind that did arrive
        super().__init__(f"{reason.value}: {detail}")
